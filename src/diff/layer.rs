//! Owns: classifying one layer pair, innermost cause first:
//! identical (same digest); same uncompressed tar but different
//! compression (same diff_id: the gzip header fields and sizes that
//! differ); same files but different tar encoding (entry order, header
//! format, uname/gname, raw header bytes, end padding); different content
//! (handed to `files`). Reading the gzip header is the only I/O here
//! besides the scans (`scan`).
use std::io::Read;

use serde_json::{json, Value};

use super::files::{by_key, diff_files};
use super::scan::{compression_of, scan_layer, ScannedEntry, ScannedLayer};
use super::{Cause, ChangedFile, DiffError, Findings, Level};
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::media_type::LayerCompression;
use crate::store::Store;

/// One side of a layer pair: its descriptor and its config's diff_id.
pub struct LayerSide<'a> {
    pub descriptor: &'a Descriptor,
    pub diff_id: &'a Digest,
}

/// The fixed and optional fields of a gzip member header (RFC 1952).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GzipHeader {
    pub flags: u8,
    pub mtime: u32,
    pub xfl: u8,
    pub os: u8,
    pub extra_len: Option<usize>,
    pub name: Option<String>,
    pub comment: Option<String>,
}

/// Parses the header at the start of `bytes` (`None`: not gzip).
pub fn parse_gzip_header(bytes: &[u8]) -> Option<GzipHeader> {
    if bytes.len() < 10 || bytes[0..3] != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = bytes[3];
    let mut header = GzipHeader {
        flags,
        mtime: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        xfl: bytes[8],
        os: bytes[9],
        ..GzipHeader::default()
    };
    let mut at = 10;
    if flags & 4 != 0 {
        let len = u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]) as usize;
        header.extra_len = Some(len);
        at += 2 + len;
    }
    let text = |at: &mut usize| -> Option<String> {
        let rest = bytes.get(*at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        *at += end + 1;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    if flags & 8 != 0 {
        header.name = Some(text(&mut at)?);
    }
    if flags & 16 != 0 {
        header.comment = Some(text(&mut at)?);
    }
    Some(header)
}

/// The gzip header fields that differ, as (field, A, B).
pub fn gzip_header_changes(a: &GzipHeader, b: &GzipHeader) -> Vec<(&'static str, Value, Value)> {
    let mut changes = Vec::new();
    let mut field = |name, va: Value, vb: Value| {
        if va != vb {
            changes.push((name, va, vb));
        }
    };
    field("FLG", json!(a.flags), json!(b.flags));
    field("MTIME", json!(a.mtime), json!(b.mtime));
    field("XFL", json!(a.xfl), json!(b.xfl));
    field("OS", json!(a.os), json!(b.os));
    field("FEXTRA", json!(a.extra_len), json!(b.extra_len));
    field("FNAME", json!(a.name), json!(b.name));
    field("FCOMMENT", json!(a.comment), json!(b.comment));
    changes
}

/// The first bytes of a blob (its gzip header, if any).
fn blob_head(store: &Store, layer: &Descriptor) -> Result<Vec<u8>, DiffError> {
    let mut head = Vec::new();
    let read = store
        .layout()
        .open_blob(&layer.digest, None)
        .and_then(|blob| Ok(blob.take(4096).read_to_end(&mut head)?));
    read.map_err(|source| DiffError::Layer {
        digest: layer.digest.clone(),
        source,
    })?;
    Ok(head)
}

/// Same diff_id, different blob: what differs in the compression.
fn compression_cause(
    store: &Store,
    scope: &str,
    a: &Descriptor,
    b: &Descriptor,
) -> Result<Cause, DiffError> {
    let mut detail = format!(
        "same uncompressed tar, different compression: {} bytes -> {} bytes",
        a.size, b.size
    );
    let mut values = (
        json!({"size": a.size, "media_type": a.media_type}),
        json!({"size": b.size, "media_type": b.media_type}),
    );
    let kinds = (compression_of(a).ok(), compression_of(b).ok());
    if a.media_type != b.media_type {
        detail.push_str(&format!(
            "; media type {} -> {}",
            a.media_type, b.media_type
        ));
    }
    if kinds == (Some(LayerCompression::Gzip), Some(LayerCompression::Gzip)) {
        let (head_a, head_b) = (blob_head(store, a)?, blob_head(store, b)?);
        if let (Some(ga), Some(gb)) = (parse_gzip_header(&head_a), parse_gzip_header(&head_b)) {
            let changes = gzip_header_changes(&ga, &gb);
            if changes.is_empty() {
                detail.push_str("; same gzip header: the deflate streams differ (compression level or implementation)");
            }
            for (field, va, vb) in &changes {
                detail.push_str(&format!("; gzip {field} {va} -> {vb}"));
                values.0[*field] = va.clone();
                values.1[*field] = vb.clone();
            }
        }
    }
    Ok(Cause::new(Level::Compression, scope, "compression", detail)
        .values(Some(values.0), Some(values.1)))
}

/// A count of entries (by path) for which `differs` holds, with the
/// first one's path and both values.
fn count_entries(
    a: &ScannedLayer,
    b: &ScannedLayer,
    value: impl Fn(&ScannedEntry) -> Value,
) -> Option<(usize, String, Value, Value)> {
    let b_map = by_key(b);
    let mut found: Option<(usize, String, Value, Value)> = None;
    for (key, entry_a) in by_key(a) {
        let Some(entry_b) = b_map.get(&key) else {
            continue;
        };
        let (va, vb) = (value(entry_a), value(entry_b));
        if va != vb {
            match &mut found {
                Some(f) => f.0 += 1,
                None => found = Some((1, format!("/{}", entry_a.path), va, vb)),
            }
        }
    }
    found
}

/// One encoding field of an entry, as JSON.
type EntryField = fn(&ScannedEntry) -> Value;

/// Same files, different tar bytes: how the encodings differ.
pub fn encoding_causes(scope: &str, a: &ScannedLayer, b: &ScannedLayer) -> Vec<Cause> {
    let mut causes = Vec::new();
    let order = |l: &ScannedLayer| l.entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
    let (order_a, order_b) = (order(a), order(b));
    if order_a != order_b {
        let at = order_a
            .iter()
            .zip(&order_b)
            .position(|(x, y)| x != y)
            .unwrap_or(order_a.len().min(order_b.len()));
        let detail = format!(
            "entry order differs (first at entry {at}: A has /{}, B has /{})",
            order_a.get(at).map_or("-", String::as_str),
            order_b.get(at).map_or("-", String::as_str)
        );
        causes.push(
            Cause::new(Level::Encoding, scope, "entry_order", detail)
                .values(Some(json!(order_a.get(at))), Some(json!(order_b.get(at)))),
        );
    }
    let checks: [(&str, &str, EntryField); 2] = [
        ("tar_format", "tar header format", |e| json!(e.format)),
        ("uname_gname", "uname/gname", |e| {
            json!(format!("{}/{}", e.uname, e.gname))
        }),
    ];
    for (kind, what, value) in checks {
        if let Some((count, path, va, vb)) = count_entries(a, b, value) {
            let detail = format!("{what} differs for {count} entries (e.g. {path}: {va} -> {vb})");
            causes.push(
                Cause::new(Level::Encoding, scope, kind, detail)
                    .path(path)
                    .values(Some(va), Some(vb)),
            );
        }
    }
    let (pad_a, pad_b) = (
        a.tar_size - a.entries_end.min(a.tar_size),
        b.tar_size - b.entries_end.min(b.tar_size),
    );
    if pad_a != pad_b {
        let detail = format!("end-of-archive padding differs: {pad_a} bytes -> {pad_b} bytes");
        causes.push(
            Cause::new(Level::Encoding, scope, "padding", detail)
                .values(Some(json!(pad_a)), Some(json!(pad_b))),
        );
    }
    if causes.is_empty() {
        if let Some((count, path, va, vb)) = count_entries(a, b, |e| json!(e.header)) {
            let detail = format!(
                "raw tar headers differ for {count} entries with equal fields (e.g. {path}: number encoding, checksum or unused fields)"
            );
            causes.push(
                Cause::new(Level::Encoding, scope, "tar_header", detail)
                    .path(path)
                    .values(Some(va), Some(vb)),
            );
        }
    }
    if causes.is_empty() {
        let detail = format!(
            "the tars differ in bytes no entry shows ({} -> {} bytes; e.g. pax global or extended header records)",
            a.tar_size, b.tar_size
        );
        causes.push(Cause::new(Level::Encoding, scope, "tar_bytes", detail));
    }
    causes
}

/// Compares layer `index` of both sides and records what differs.
pub fn compare_layer(
    store: &Store,
    scope: &str,
    a: LayerSide<'_>,
    b: LayerSide<'_>,
    all: bool,
    findings: &mut Findings,
) -> Result<(), DiffError> {
    if a.descriptor.digest == b.descriptor.digest {
        if a.diff_id != b.diff_id {
            // One config lies about the same blob: the scan names which.
            scan_layer(store, a.descriptor, a.diff_id)?;
            scan_layer(store, b.descriptor, b.diff_id)?;
        }
        return Ok(());
    }
    let digests = Cause::new(
        Level::Manifest,
        scope,
        "digest",
        format!(
            "layer digest {} -> {}",
            a.descriptor.digest, b.descriptor.digest
        ),
    )
    .values(
        Some(json!(a.descriptor.digest)),
        Some(json!(b.descriptor.digest)),
    )
    .consequence();
    findings.causes.push(digests);
    if a.diff_id == b.diff_id {
        findings
            .causes
            .push(compression_cause(store, scope, a.descriptor, b.descriptor)?);
        return Ok(());
    }
    // Both scans at once (cold, each is a full inflate of its layer).
    let (scanned_a, scanned_b) = rayon::join(
        || scan_layer(store, a.descriptor, a.diff_id),
        || scan_layer(store, b.descriptor, b.diff_id),
    );
    let (scanned_a, scanned_b) = (scanned_a?, scanned_b?);
    let files = diff_files(scope, &scanned_a, &scanned_b, all);
    if files.causes.is_empty() {
        findings
            .causes
            .extend(encoding_causes(scope, &scanned_a, &scanned_b));
    }
    findings.causes.extend(files.causes);
    findings
        .changed_files
        .extend(files.changed_content.into_iter().map(|path| ChangedFile {
            scope: scope.to_string(),
            path,
            a_layer: a.descriptor.clone(),
            b_layer: b.descriptor.clone(),
        }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_headers_parse_and_compare() {
        let plain = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        let mut named = vec![0x1f, 0x8b, 8, 8, 1, 0, 0, 0, 2, 3];
        named.extend(b"layer.tar\0");
        let (a, b) = (
            parse_gzip_header(&plain).unwrap(),
            parse_gzip_header(&named).unwrap(),
        );
        assert_eq!(b.name.as_deref(), Some("layer.tar"));
        let fields: Vec<&str> = gzip_header_changes(&a, &b).iter().map(|c| c.0).collect();
        assert_eq!(fields, ["FLG", "MTIME", "XFL", "OS", "FNAME"]);
        assert!(parse_gzip_header(b"not gzip at all").is_none());
    }

    #[test]
    fn tar_encoding_differences_are_named() {
        use crate::diff::files::tests::{entry, layer};
        use crate::layer::entries::EntryType;
        let kinds = |a: &ScannedLayer, b: &ScannedLayer| -> Vec<String> {
            encoding_causes("layer 0", a, b)
                .into_iter()
                .map(|c| c.kind)
                .collect()
        };
        let mut a = layer(vec![
            entry("x", EntryType::File),
            entry("y", EntryType::File),
        ]);
        let mut b = a.clone();
        b.entries[1].format = "gnu".into();
        b.entries[0].uname = "root".into();
        (a.tar_size, a.entries_end, b.tar_size, b.entries_end) = (3072, 2048, 10240, 2048);
        assert_eq!(kinds(&a, &b), ["tar_format", "uname_gname", "padding"]);
        b = a.clone();
        b.entries[0].header = "ffff".into();
        assert_eq!(kinds(&a, &b), ["tar_header"]);
        assert_eq!(kinds(&a, &a.clone()), ["tar_bytes"]);
        a.entries.reverse();
        assert_eq!(kinds(&a, &b)[0], "entry_order");
    }
}
