//! The serializable index of a layer's entries (paths, kinds, modes,
//! owners, link targets, content digests, whiteouts), its diff_id and size,
//! and the entry rules' verdict on the layer standing alone.
//!
//! Owns: the index format (`LayerIndex`, `LayerEntry`, `Verdict`), kept in
//! the store (`store::layer_index`) and read by the composer. Entries come
//! from the one tar walk in `entries` (which owns UTF-8, pax, whiteout,
//! path and size rules); each is checked by the one rule set in `rules`
//! against the layer's own earlier entries, so the verdict is made once,
//! when the index is. This module only hashes file contents and records
//! what it is given. It never writes files (see `extract`).
use std::collections::HashMap;
use std::io::{self, Read};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use super::entries::{decompress, tree_path_of, EntryType, PathMeaning};
use super::entries::{EntryInfo, LayerTar};
use super::rules::{check_entry, node_of, Finding, Node, SpecialFiles, TreeView};
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

/// The index of a layer: its diff_id, size and entries in archive order,
/// and the rules' verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    pub entries: Vec<LayerEntry>,
    pub verdict: Verdict,
}

/// How many findings of each class a verdict keeps (the totals count all).
pub const FINDINGS_KEPT: usize = 16;

/// What the entry rules (`layer::rules`) found in a layer standing alone:
/// entries that are never safe, and special files (device nodes, fifos),
/// which a caller may allow. Each list keeps the first `FINDINGS_KEPT`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub unsafe_entries: Vec<Finding>,
    pub unsafe_total: u64,
    pub special_files: Vec<Finding>,
    pub special_total: u64,
}

impl Verdict {
    fn record(&mut self, finding: Finding) {
        let (kept, total) = match finding.violation.is_special_file() {
            true => (&mut self.special_files, &mut self.special_total),
            false => (&mut self.unsafe_entries, &mut self.unsafe_total),
        };
        *total += 1;
        if kept.len() < FINDINGS_KEPT {
            kept.push(finding);
        }
    }

    /// The first finding that makes the layer unusable under `special`,
    /// with how many such findings the layer has.
    pub fn refusal(&self, special: SpecialFiles) -> Option<(&Finding, u64)> {
        if let Some(first) = self.unsafe_entries.first() {
            return Some((first, self.unsafe_total));
        }
        match special {
            SpecialFiles::Refuse => self.special_files.first().map(|f| (f, self.special_total)),
            SpecialFiles::Allow => None,
        }
    }
}

/// The layer's own entries so far, as the rules see them.
#[derive(Default)]
struct OwnEntries(HashMap<String, Node>);

impl TreeView for OwnEntries {
    fn node(&self, path: &str) -> Option<Node> {
        self.0.get(path).cloned()
    }
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

/// Indexes a layer blob: every entry, the diff_id and size of its tar, and
/// the rules' verdict on its entries (against its own earlier entries).
pub fn index_layer(reader: impl Read, compression: LayerCompression) -> Result<LayerIndex> {
    let mut layer = LayerTar::new(reader, compression)?;
    let mut entries = Vec::new();
    let mut verdict = Verdict::default();
    let mut own = OwnEntries::default();
    for entry in layer.entries()? {
        let mut entry = entry?;
        if let Err(finding) = check_entry(entry.info(), &own, SpecialFiles::Refuse) {
            verdict.record(finding);
        }
        if let Some(node) = node_of(entry.info()) {
            own.0.insert(entry.path.clone(), node);
        }
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
    let (diff_id, tar_size) = layer
        .finish_sized()
        .context("reading the end of the layer")?;
    Ok(LayerIndex {
        diff_id,
        tar_size,
        entries,
        verdict,
    })
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
    fn the_verdict_names_unsafe_entries_and_special_files_apart() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind: tar::EntryType, link: &str| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(0);
            h.set_mtime(1);
            if link.is_empty() {
                b.append_data(&mut h, name, &b""[..]).unwrap();
            } else {
                b.append_link(&mut h, name, link).unwrap();
            }
        };
        add("evil", tar::EntryType::Symlink, "/tmp");
        add("evil/x", tar::EntryType::Regular, "");
        add("hl", tar::EntryType::Link, "missing");
        add("p", tar::EntryType::Fifo, "");
        let tar = b.into_inner().unwrap();
        let index = index_layer(&tar[..], LayerCompression::None).unwrap();
        let verdict = &index.verdict;
        assert_eq!((verdict.unsafe_total, verdict.special_total), (2, 1));
        let paths: Vec<&str> = verdict
            .unsafe_entries
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(paths, ["evil/x", "hl"]);
        assert_eq!(
            verdict.refusal(SpecialFiles::Allow).unwrap().0.path,
            "evil/x"
        );
        assert_eq!(index.tar_size, tar.len() as u64);
        assert_eq!(index.entries.len(), 4, "the index still lists every entry");
    }

    #[test]
    fn zstd_is_a_clear_error() {
        let err = index_layer(&b""[..], LayerCompression::Zstd)
            .unwrap_err()
            .to_string();
        assert!(err.contains("zstd"), "{err}");
    }
}
