//! Owns: the file-level diff of two scanned layers (pure). Entries are
//! matched by path (a whiteout by the path it deletes, kept apart from a
//! file of that path); per path: added, removed, or the fields that
//! differ (type, content, link target, hard-link grouping, mode, owner,
//! xattrs, device, mtime). Entries that differ only in mtime become ONE
//! summarized cause (every path listed only with `--all`).
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::scan::{ScannedEntry, ScannedLayer};
use super::{Cause, Level};
use crate::layer::entries::EntryType;

/// What the file-level diff found for one layer pair.
#[derive(Debug, Default)]
pub struct FileDiff {
    pub causes: Vec<Cause>,
    /// Regular files present on both sides whose content differs.
    pub changed_content: Vec<String>,
}

/// The key an entry is matched by.
fn key(entry: &ScannedEntry) -> (String, bool) {
    let whiteout = matches!(entry.kind, EntryType::Whiteout | EntryType::OpaqueWhiteout);
    (entry.path.clone(), whiteout)
}

/// Path -> entry (the last one wins, as when a tar is extracted).
pub fn by_key(layer: &ScannedLayer) -> BTreeMap<(String, bool), &ScannedEntry> {
    layer.entries.iter().map(|e| (key(e), e)).collect()
}

fn kind_name(kind: EntryType) -> Value {
    serde_json::to_value(kind).unwrap_or(Value::Null)
}

fn display_path(entry: &ScannedEntry) -> String {
    match entry.kind {
        EntryType::Whiteout => format!("/{} (whiteout)", entry.path),
        EntryType::OpaqueWhiteout => format!("/{} (opaque whiteout)", entry.path),
        _ => format!("/{}", entry.path),
    }
}

/// The fields of `a` and `b` that differ, most telling first, each with
/// both values.
fn differing_fields(a: &ScannedEntry, b: &ScannedEntry) -> Vec<(&'static str, Value, Value)> {
    let mut fields = Vec::new();
    let hard = |e: &ScannedEntry| e.kind == EntryType::HardLink;
    if a.kind != b.kind {
        let name = if hard(a) || hard(b) {
            "hardlink"
        } else {
            "type"
        };
        fields.push((name, kind_name(a.kind), kind_name(b.kind)));
    } else if a.link_target != b.link_target {
        let name = if hard(a) { "hardlink" } else { "link_target" };
        fields.push((name, json!(a.link_target), json!(b.link_target)));
    }
    if a.kind == b.kind && (a.content != b.content || a.size != b.size) {
        let side = |e: &ScannedEntry| json!({"size": e.size, "sha256": e.content});
        fields.push(("content", side(a), side(b)));
    }
    if a.mode != b.mode {
        let mode = |m: u32| json!(format!("{m:04o}"));
        fields.push(("mode", mode(a.mode), mode(b.mode)));
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        let owner = |e: &ScannedEntry| json!(format!("{}:{}", e.uid, e.gid));
        fields.push(("owner", owner(a), owner(b)));
    }
    if a.xattrs != b.xattrs {
        fields.push(("xattrs", json!(a.xattrs), json!(b.xattrs)));
    }
    if a.device != b.device {
        fields.push(("device", json!(a.device), json!(b.device)));
    }
    if a.mtime != b.mtime {
        fields.push(("mtime", json!(a.mtime), json!(b.mtime)));
    }
    fields
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Object(map) if map.contains_key("sha256") => format!(
            "{} bytes {}",
            map["size"],
            map["sha256"].as_str().unwrap_or("-")
        ),
        other => other.to_string(),
    }
}

/// One cause for an entry present on both sides with `fields` differing.
fn changed(scope: &str, a: &ScannedEntry, fields: &[(&'static str, Value, Value)]) -> Cause {
    let (first, va, vb) = &fields[0];
    let mut detail = format!(
        "{}: {first} differs ({} -> {})",
        display_path(a),
        describe_value(va),
        describe_value(vb)
    );
    for (name, va, vb) in &fields[1..] {
        detail.push_str(&format!(
            "; {name} {} -> {}",
            describe_value(va),
            describe_value(vb)
        ));
    }
    let mut cause = Cause::new(Level::File, scope, first, detail)
        .path(format!("/{}", a.path))
        .values(Some(va.clone()), Some(vb.clone()));
    cause.fields = fields.iter().map(|(n, _, _)| n.to_string()).collect();
    cause
}

fn presence(scope: &str, entry: &ScannedEntry, kind: &str) -> Cause {
    let (side, value) = match kind {
        "added" => ("B", (None, Some(kind_name(entry.kind)))),
        _ => ("A", (Some(kind_name(entry.kind)), None)),
    };
    let what = kind_name(entry.kind);
    let detail = format!(
        "{}: {kind} (only in {side}, {})",
        display_path(entry),
        what.as_str().unwrap_or("entry")
    );
    Cause::new(Level::File, scope, kind, detail)
        .path(format!("/{}", entry.path))
        .values(value.0, value.1)
}

/// The mtime-only summary (`paths` listed with `all`).
fn mtime_summary(scope: &str, paths: Vec<(String, u64, u64)>, all: bool) -> Cause {
    let count = paths.len() as u64;
    // Each side's mtime range, as [oldest, newest].
    let range = |side: fn(&(String, u64, u64)) -> u64| {
        let times = paths.iter().map(side);
        json!([times.clone().min(), times.max()])
    };
    let (range_a, range_b) = (range(|p| p.1), range(|p| p.2));
    let detail = format!(
        "{count} entries differ only in mtime (e.g. {} {} -> {}): builder did not clamp to \
         SOURCE_DATE_EPOCH",
        paths[0].0, paths[0].1, paths[0].2
    );
    let mut cause =
        Cause::new(Level::File, scope, "mtime_only", detail).values(Some(range_a), Some(range_b));
    cause.count = Some(count);
    if all {
        cause.paths = paths.into_iter().map(|(p, _, _)| p).collect();
    }
    cause
}

/// Compares two scanned layers entry by entry.
pub fn diff_files(scope: &str, a: &ScannedLayer, b: &ScannedLayer, all: bool) -> FileDiff {
    let (a_map, b_map) = (by_key(a), by_key(b));
    let mut diff = FileDiff::default();
    let mut mtime_only = Vec::new();
    for (key, entry_a) in &a_map {
        let Some(entry_b) = b_map.get(key) else {
            diff.causes.push(presence(scope, entry_a, "removed"));
            continue;
        };
        let fields = differing_fields(entry_a, entry_b);
        match fields.as_slice() {
            [] => {}
            [("mtime", _, _)] => {
                mtime_only.push((format!("/{}", entry_a.path), entry_a.mtime, entry_b.mtime))
            }
            _ => {
                if fields.iter().any(|f| f.0 == "content") && entry_a.kind == EntryType::File {
                    diff.changed_content.push(entry_a.path.clone());
                }
                diff.causes.push(changed(scope, entry_a, &fields));
            }
        }
    }
    for (key, entry_b) in &b_map {
        if !a_map.contains_key(key) {
            diff.causes.push(presence(scope, entry_b, "added"));
        }
    }
    if !mtime_only.is_empty() {
        diff.causes.push(mtime_summary(scope, mtime_only, all));
    }
    diff
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::diff) fn entry(path: &str, kind: EntryType) -> ScannedEntry {
        ScannedEntry {
            path: path.to_string(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            size: 0,
            link_target: None,
            content: None,
            xattrs: BTreeMap::new(),
            device: None,
            format: "ustar".into(),
            uname: String::new(),
            gname: String::new(),
            header: String::new(),
        }
    }

    pub(in crate::diff) fn layer(entries: Vec<ScannedEntry>) -> ScannedLayer {
        ScannedLayer {
            diff_id: crate::oci::digest::Digest::of_bytes(b""),
            tar_size: 0,
            entries_end: 0,
            entries,
        }
    }

    fn kinds(diff: &FileDiff) -> Vec<(String, Option<String>)> {
        diff.causes
            .iter()
            .map(|c| (c.kind.clone(), c.path.clone()))
            .collect()
    }

    #[test]
    fn hard_links_xattrs_and_whiteouts_are_named() {
        let mut linked = entry("bin/b", EntryType::HardLink);
        linked.link_target = Some("bin/a".into());
        let mut with_xattr = entry("bin/c", EntryType::File);
        with_xattr
            .xattrs
            .insert("security.capability".into(), "0x01".into());
        let a = layer(vec![
            entry("bin/a", EntryType::File),
            linked,
            entry("bin/c", EntryType::File),
            entry("etc/old", EntryType::File),
        ]);
        let b = layer(vec![
            entry("bin/a", EntryType::File),
            entry("bin/b", EntryType::File),
            with_xattr,
            entry("etc/old", EntryType::Whiteout),
        ]);
        let diff = diff_files("layer 0", &a, &b, false);
        let expected = [
            ("hardlink", "/bin/b"),
            ("xattrs", "/bin/c"),
            ("removed", "/etc/old"),
            ("added", "/etc/old"),
        ];
        let expected: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(k, p)| (k.to_string(), Some(p.to_string())))
            .collect();
        assert_eq!(kinds(&diff), expected);
        assert!(diff.causes[3].detail.contains("(whiteout)"));
    }
}
