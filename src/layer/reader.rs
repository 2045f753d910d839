//! The serializable index of a layer's entries (paths, kinds, modes,
//! owners, link targets, content digests, whiteouts) and its diff_id.
//!
//! Owns: the index format (`LayerIndex`, `LayerEntry`), kept in the store
//! and read by the composer. Entries come from the one tar walk in
//! `entries` (which owns UTF-8, pax, whiteout and path rules); this module
//! only hashes file contents and records what it is given. It never writes
//! files (see `extract`).
use std::io::{self, Read};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use super::entries::{decompress, tree_path_of, EntryType, PathMeaning};
use super::entries::{EntryInfo, LayerTar};
use crate::oci::digest::Digest;
use crate::oci::media_type::LayerCompression;

/// One entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    /// Normalized relative path (`usr/bin/sh`); for a whiteout the path
    /// deleted, for an opaque marker the directory.
    pub path: String,
    pub kind: EntryType,
    /// Permission bits incl. setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content size (regular files; 0 otherwise).
    pub size: u64,
    /// Symlink target (verbatim) or hard-link target (normalized path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// sha256 of a regular file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<Digest>,
}

/// The index of a layer: its diff_id and entries in archive order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    pub diff_id: Digest,
    pub entries: Vec<LayerEntry>,
}

impl LayerEntry {
    fn from_info(info: EntryInfo, content_digest: Option<Digest>) -> LayerEntry {
        LayerEntry {
            path: info.path,
            kind: info.kind,
            mode: info.mode,
            uid: info.uid,
            gid: info.gid,
            size: info.size,
            link_target: info.link_target,
            content_digest,
        }
    }
}

/// Indexes a layer blob: every entry, and the diff_id of its tar.
pub fn index_layer(reader: impl Read, compression: LayerCompression) -> Result<LayerIndex> {
    let mut layer = LayerTar::new(reader, compression)?;
    let mut entries = Vec::new();
    for entry in layer.entries()? {
        let mut entry = entry?;
        let content_digest = if entry.kind == EntryType::File {
            let mut hashing = crate::oci::digest::HashingWriter::new(io::sink());
            io::copy(&mut entry, &mut hashing)
                .with_context(|| format!("reading layer entry {}", entry.path))?;
            Some(hashing.finish().0)
        } else {
            None
        };
        entries.push(LayerEntry::from_info(entry.into_info(), content_digest));
    }
    let diff_id = layer.finish().context("reading the end of the layer")?;
    Ok(LayerIndex { diff_id, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tree::{FileSource, FileTree, TreeEntry};
    use crate::layer::writer::{write_layer, LayerOptions};

    #[test]
    fn index_matches_what_the_writer_wrote() {
        let mut tree = FileTree::new();
        tree.insert(
            "bin/sh",
            TreeEntry::file(FileSource::Bytes(b"#!".to_vec()), 0o4755),
        )
        .unwrap();
        tree.insert("bin/sh2", TreeEntry::hard_link("bin/sh", 0o4755))
            .unwrap();
        tree.insert("lib", TreeEntry::symlink("usr/lib")).unwrap();
        tree.insert("etc/.wh.old", TreeEntry::file(FileSource::Bytes(vec![]), 0))
            .unwrap();
        tree.insert(
            "opt/.wh..wh..opq",
            TreeEntry::file(FileSource::Bytes(vec![]), 0),
        )
        .unwrap();
        let mut blob = Vec::new();
        let w = write_layer(&tree, &LayerOptions::default(), &mut blob).unwrap();
        let index = index_layer(&blob[..], LayerCompression::Gzip).unwrap();
        assert_eq!(index.diff_id, w.diff_id);
        let summary: Vec<(&str, EntryType)> = index
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind))
            .collect();
        assert_eq!(
            summary,
            [
                ("bin", EntryType::Directory),
                ("bin/sh", EntryType::File),
                ("bin/sh2", EntryType::HardLink),
                ("etc", EntryType::Directory),
                ("etc/old", EntryType::Whiteout),
                ("lib", EntryType::Symlink),
                ("opt", EntryType::Directory),
                ("opt", EntryType::OpaqueWhiteout),
            ]
        );
        let sh = &index.entries[1];
        assert_eq!(sh.mode, 0o4755);
        assert_eq!(sh.size, 2);
        assert_eq!(sh.content_digest, Some(Digest::of_bytes(b"#!")));
        assert_eq!(index.entries[2].link_target.as_deref(), Some("bin/sh"));
        let json = serde_json::to_string(&index).unwrap();
        assert!(json.contains("\"kind\":\"hard_link\""), "{json}");
        let back: LayerIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(back, index);
    }

    #[test]
    fn zstd_is_a_clear_error() {
        let err = index_layer(&b""[..], LayerCompression::Zstd)
            .unwrap_err()
            .to_string();
        assert!(err.contains("zstd"), "{err}");
    }
}
