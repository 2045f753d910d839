//! Owns: a layer's entries as a diff needs them (`ScannedLayer`): what
//! the store's layer index holds (path, kind, mode, owner, size, link
//! target, content sha256) plus mtime, xattrs, device numbers and how each
//! entry is encoded in the tar (header format, uname/gname, a hash of the
//! raw header), the tar's length and where its entries end (padding).
//!
//! One streaming pass per layer, through the one tar walk
//! (`layer::LayerTar`), cached in the store as `diff-scan` metadata keyed
//! by the compressed layer digest: a warm diff decompresses nothing. A
//! layer a registry streams in is scanned from those bytes as the store
//! verifies them (`scan_stream`, fed by `side`), so a cold diff reads it
//! once too. File
//! contents are hashed only when the store's layer index lacks them (the
//! pass then hashes them itself: still one decompression per layer). The
//! store index is read in `store_index` only (the one place to re-point
//! when it moves); `diff` never writes it.
use std::collections::BTreeMap;
use std::io::{self, Read};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::DiffError;
use crate::layer::entries::{decompress, Entry, EntryType, LayerTar};
use crate::layer::reader::LayerIndex;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::{Digest, HashingWriter};
use crate::oci::media_type::{self, LayerCompression};
use crate::store::Store;

/// Store metadata kind of scanned layers (bump the suffix when the
/// record's shape changes).
pub const META_DIFF_SCAN: &str = "diff-scan-v1";

/// One entry of a scanned layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedEntry {
    pub path: String,
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Digest>,
    /// `SCHILY.xattr.*` pax records (name -> value, hex when not UTF-8).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<(u32, u32)>,
    /// `ustar`, `gnu`, `pax` (a pax header precedes it) or `v7`.
    pub format: String,
    pub uname: String,
    pub gname: String,
    /// The first 16 hex digits of the sha256 of the raw 512-byte header.
    pub header: String,
}

/// A layer's entries in archive order, and its tar's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedLayer {
    pub diff_id: Digest,
    /// Length of the uncompressed tar.
    pub tar_size: u64,
    /// Where the last entry's data (rounded to 512) ends.
    pub entries_end: u64,
    pub entries: Vec<ScannedEntry>,
}

/// The store's layer index of `layer`, when it has one: THE one place
/// `diff` reads it (re-point here when the index moves).
fn store_index(store: &Store, layer: &Descriptor) -> Option<LayerIndex> {
    store.cached_layer_index(&layer.digest).ok().flatten()
}

/// The scanned layer (from the cache, else one pass over the blob, which
/// must decompress to `diff_id`).
pub fn scan_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<ScannedLayer, DiffError> {
    if let Some(bytes) = store.read_meta(META_DIFF_SCAN, &layer.digest) {
        if let Ok(cached) = serde_json::from_slice::<ScannedLayer>(&bytes) {
            if &cached.diff_id == diff_id {
                return Ok(cached);
            }
        }
    }
    let known = store_index(store, layer).filter(|i| &i.diff_id == diff_id);
    let layer_error = |source: anyhow::Error| DiffError::Layer {
        digest: layer.digest.clone(),
        source,
    };
    let scanned = scan_blob(store, layer, known.as_ref()).map_err(layer_error)?;
    if &scanned.diff_id != diff_id {
        return Err(DiffError::DiffIdMismatch {
            digest: layer.digest.clone(),
            expected: diff_id.clone(),
            actual: scanned.diff_id,
        });
    }
    record_scan(store, &layer.digest, &scanned).map_err(layer_error)?;
    Ok(scanned)
}

/// Caches the scan of stored layer blob `digest` (`scan_layer` checks
/// its diff_id against the config's before it uses it). Only a scan of
/// the verified blob's bytes may be recorded.
pub fn record_scan(store: &Store, digest: &Digest, scanned: &ScannedLayer) -> Result<()> {
    store.write_meta(META_DIFF_SCAN, digest, &serde_json::to_vec(scanned)?)
}

/// Counts the bytes that pass through.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The compression of a layer descriptor.
pub(super) fn compression_of(layer: &Descriptor) -> Result<LayerCompression> {
    media_type::layer_compression(&layer.media_type)
        .with_context(|| format!("media type {:?} is not a layer type", layer.media_type))
}

/// One pass over the stored blob; content digests from `known` where
/// its entries line up with the tar's, else hashed.
fn scan_blob(
    store: &Store,
    layer: &Descriptor,
    known: Option<&LayerIndex>,
) -> Result<ScannedLayer> {
    let blob = store.layout().open_blob(&layer.digest, Some(layer.size))?;
    scan_stream(blob, compression_of(layer)?, known)
}

/// One pass over a layer's (compressed) bytes as they come: from the
/// stored blob, or streamed in while a fetch stores it (`side`).
pub fn scan_stream(
    bytes: impl Read,
    compression: LayerCompression,
    known: Option<&LayerIndex>,
) -> Result<ScannedLayer> {
    let mut counting = Counting {
        inner: decompress(bytes, compression)?,
        count: 0,
    };
    let mut entries = Vec::new();
    let mut entries_end = 0;
    let mut tar = LayerTar::new(&mut counting, LayerCompression::None)?;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let index = known.and_then(|k| k.entries.get(entries.len()));
        let from_index = index
            .filter(|i| i.path == entry.path && i.kind == entry.kind)
            .map(|i| i.content_digest.clone());
        let scanned = scan_entry(&mut entry, from_index)?;
        entries_end = entry.raw_header_position() + 512 + scanned.size.div_ceil(512) * 512;
        entries.push(scanned);
    }
    let diff_id = tar.finish().context("reading the end of the layer")?;
    Ok(ScannedLayer {
        diff_id,
        tar_size: counting.count,
        entries_end,
        entries,
    })
}

/// One entry: metadata, encoding, and its content digest (`known`, else
/// hashed now).
fn scan_entry(entry: &mut Entry<'_, '_>, known: Option<Option<Digest>>) -> Result<ScannedEntry> {
    let pax = entry.pax_records().context("reading pax records")?;
    let header = entry.raw_header();
    let format = if !pax.is_empty() {
        "pax"
    } else if header.as_gnu().is_some() {
        "gnu"
    } else if header.as_ustar().is_some() {
        "ustar"
    } else {
        "v7"
    };
    let name =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let uname = name(header.username_bytes());
    let gname = name(header.groupname_bytes());
    let header_hash = hex::encode(&Sha256::digest(header.as_bytes())[..8]);
    let xattrs = pax
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("SCHILY.xattr.")?;
            let value = match std::str::from_utf8(value) {
                Ok(text) => text.to_string(),
                Err(_) => format!("0x{}", hex::encode(value)),
            };
            Some((name.to_string(), value))
        })
        .collect();
    let content = match known {
        Some(digest) => digest,
        None if entry.kind == EntryType::File => {
            let mut hashing = HashingWriter::new(io::sink());
            io::copy(entry, &mut hashing).with_context(|| format!("reading /{}", entry.path))?;
            Some(hashing.finish().0)
        }
        None => None,
    };
    let info = entry.info();
    Ok(ScannedEntry {
        path: info.path.clone(),
        kind: info.kind,
        mode: info.mode,
        uid: info.uid,
        gid: info.gid,
        mtime: info.mtime,
        size: info.size,
        link_target: info.link_target.clone(),
        content,
        xattrs,
        device: info.device,
        format: format.to_string(),
        uname,
        gname,
        header: header_hash,
    })
}
