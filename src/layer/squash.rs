//! Owns: squashing (`--flatten`): layers, lowest first, into one layer
//! holding the merged tree, written by the deterministic writer.
//!
//! Rules, as an OCI runtime applies layers:
//! - a later entry replaces an earlier one at the same path; a directory
//!   entry over a directory only updates its metadata (children stay), a
//!   non-directory replaces a directory with everything under it;
//! - whiteouts apply to LOWER layers only (OCI image spec): `.wh.x` deletes
//!   `x` and everything under it, `.wh..wh..opq` everything under its
//!   directory, but never what the same layer writes, before or after the
//!   marker;
//! - a hard link may point to a file of this or a lower layer; it stays a
//!   hard link when its target still holds the same content at the end and
//!   sorts before it, and becomes a copy otherwise;
//! - devices and fifos are refused (the writer emits none);
//! - every entry obeys the entry rules (`rules::check_entry`, shared with
//!   the index, extraction and the pallet composer) against the merged tree
//!   so far: nothing written through a symlink, no absolute path, hard
//!   links only to regular files present.
//!
//! Entries come from the one tar walk (`entries`), so a layer squashes iff
//! it indexes and extracts. File contents are streamed to a scratch
//! directory (`.squash-*` in the destination layout, removed when done), so
//! memory holds metadata only. The scratch never holds more than
//! `max_layer_bytes()` (`STAGEX_MAX_LAYER_BYTES`): past that the squashed
//! layer would be refused anyway, so a decompression bomb stops there. Each layer is read to its end and its
//! diff_id checked against the expected one. It never writes outside the
//! layout.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::entries::{max_layer_bytes, Entry, EntryType, LayerTar};
use super::rules::{self, check_entry, SpecialFiles, TreeView};
use super::tree::{EntryKind, FileSource, FileTree, TreeEntry};
use super::writer::{write_layer_to_layout, LayerOptions, WrittenLayer};
use crate::oci::digest::{Digest, HashingWriter};
use crate::oci::layout::Layout;
use crate::oci::media_type::LayerCompression;

/// One layer to squash.
pub struct SquashInput<'r> {
    /// Names the layer in errors (e.g. its digest).
    pub name: String,
    pub blob: Box<dyn Read + 'r>,
    pub compression: LayerCompression,
    /// The diff_id the layer must have (from the image config), checked
    /// after reading it to its end.
    pub diff_id: Option<Digest>,
}

/// Squashes `layers` (lowest first) into one layer written to `layout`.
pub fn squash<'r>(
    layers: impl IntoIterator<Item = SquashInput<'r>>,
    options: &LayerOptions,
    layout: &Layout,
) -> Result<WrittenLayer> {
    let scratch = tempfile::Builder::new()
        .prefix(".squash-")
        .tempdir_in(layout.root())
        .with_context(|| {
            format!(
                "creating a scratch directory in {}",
                layout.root().display()
            )
        })?;
    let mut merged = Merged::new(scratch.path(), max_layer_bytes()?);
    for input in layers {
        let name = input.name.clone();
        merged
            .apply(input)
            .with_context(|| format!("squashing layer {name}"))?;
    }
    let tree = merged.into_tree()?;
    write_layer_to_layout(&tree, options, layout)
}

/// An entry of the merged tree; `content` is the digest of a file's bytes.
struct Node {
    entry: TreeEntry,
    content: Option<Digest>,
}

/// The merged tree so far.
struct Merged<'s> {
    scratch: &'s Path,
    files_stored: u64,
    /// Bytes in the scratch directory so far, and the most it may hold.
    bytes_stored: u64,
    max_bytes: u64,
    tree: BTreeMap<String, Node>,
    /// Hard links read: path -> (first file of the link set, its content).
    links: BTreeMap<String, (String, Digest)>,
}

impl<'s> Merged<'s> {
    fn new(scratch: &'s Path, max_bytes: u64) -> Self {
        Merged {
            scratch,
            files_stored: 0,
            bytes_stored: 0,
            max_bytes,
            tree: BTreeMap::new(),
            links: BTreeMap::new(),
        }
    }

    /// Applies one layer over the tree.
    fn apply(&mut self, input: SquashInput<'_>) -> Result<()> {
        let mut layer = LayerTar::new(input.blob, input.compression)?;
        // What this layer wrote: whiteouts never delete it.
        let mut written: BTreeSet<String> = BTreeSet::new();
        for entry in layer.entries()? {
            let mut entry = entry?;
            check_entry(entry.info(), self, SpecialFiles::Allow)?;
            match entry.kind {
                EntryType::Whiteout => self.remove_lower(&entry.path, true, &written),
                EntryType::OpaqueWhiteout => self.remove_lower(&entry.path, false, &written),
                _ => {
                    self.add(&mut entry)?;
                    written.insert(entry.path.clone());
                }
            }
        }
        let diff_id = layer.finish()?;
        if let Some(expected) = input.diff_id {
            if diff_id != expected {
                bail!(
                    "its tar has diff_id {diff_id}, the image config says {expected}: \
                     the blob is corrupt (delete it from the store and pull again)"
                );
            }
        }
        Ok(())
    }

    fn add(&mut self, entry: &mut Entry<'_, '_>) -> Result<()> {
        let path = entry.path.clone();
        let (kind, content) = match entry.kind {
            EntryType::Directory => {
                if self.tree.get(&path).is_some_and(|n| !n.entry.is_dir()) {
                    self.tree.remove(&path);
                }
                (EntryKind::Directory, None)
            }
            EntryType::File => {
                let (source, digest) = self.store_content(entry)?;
                self.links.remove(&path);
                (EntryKind::File(FileSource::Path(source)), Some(digest))
            }
            EntryType::HardLink => {
                let target = entry.link_target.clone().unwrap_or_default();
                let (source, digest) = self.file_at(&target).ok_or_else(|| {
                    anyhow!("hard link /{path} -> /{target}: the target is not a regular file")
                })?;
                let first = match self.links.get(&target) {
                    Some((first, d)) if *d == digest => first.clone(),
                    _ => target,
                };
                self.links.insert(path.clone(), (first, digest.clone()));
                (EntryKind::File(FileSource::Path(source)), Some(digest))
            }
            EntryType::Symlink => (
                EntryKind::Symlink {
                    target: entry.link_target.clone().unwrap_or_default(),
                },
                None,
            ),
            other => bail!(
                "entry /{path} is a {other:?}, which a squashed layer cannot hold; \
                 drop it from the image or do not flatten"
            ),
        };
        if !matches!(kind, EntryKind::Directory) {
            self.remove_subtree(&path, true);
        }
        let node = Node {
            entry: TreeEntry {
                kind,
                mode: entry.mode,
                uid: entry.uid,
                gid: entry.gid,
            },
            content,
        };
        self.tree.insert(path, node);
        Ok(())
    }

    /// The stored content and digest of the regular file at `path`.
    fn file_at(&self, path: &str) -> Option<(PathBuf, Digest)> {
        match self.tree.get(path)? {
            Node {
                entry:
                    TreeEntry {
                        kind: EntryKind::File(FileSource::Path(source)),
                        ..
                    },
                content: Some(digest),
            } => Some((source.clone(), digest.clone())),
            _ => None,
        }
    }

    /// Streams a file's content to a new scratch file.
    fn store_content(&mut self, entry: &mut Entry<'_, '_>) -> Result<(PathBuf, Digest)> {
        self.files_stored += 1;
        let source = self.scratch.join(self.files_stored.to_string());
        let ctx = || format!("storing /{} in {}", entry.path, self.scratch.display());
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&source)
            .with_context(ctx)?;
        let mut hashing = HashingWriter::new(BufWriter::new(file));
        let room = self.max_bytes - self.bytes_stored;
        let copied = io::copy(&mut entry.take(room.saturating_add(1)), &mut hashing);
        let ctx = || format!("storing /{} in {}", entry.path, self.scratch.display());
        let copied = copied.with_context(ctx)?;
        if copied > room {
            bail!(
                "the squashed layer would hold more than {} bytes of file content \
                 (STAGEX_MAX_LAYER_BYTES) at /{}: refused; raise STAGEX_MAX_LAYER_BYTES \
                 if the layers are genuine",
                self.max_bytes,
                entry.path
            );
        }
        self.bytes_stored += copied;
        let (digest, _, mut out) = hashing.finish();
        out.flush().with_context(ctx)?;
        Ok((source, digest))
    }

    /// A whiteout: deletes what lower layers have at `path` (the entry
    /// itself when `including_self`) and under it, keeping what this layer
    /// wrote and the directories holding it.
    fn remove_lower(&mut self, path: &str, including_self: bool, written: &BTreeSet<String>) {
        let doomed: Vec<String> = self
            .under(path, including_self)
            .into_iter()
            .filter(|k| !written.contains(k) && !holds_any(written, k))
            .collect();
        for k in doomed {
            self.tree.remove(&k);
            self.links.remove(&k);
        }
    }

    /// Removes `path` (when `including_self`) and everything under it.
    fn remove_subtree(&mut self, path: &str, including_self: bool) {
        for k in self.under(path, including_self) {
            self.tree.remove(&k);
            self.links.remove(&k);
        }
    }

    /// The paths of the tree under `path` (and `path` itself when asked);
    /// everything for the empty path (the root).
    fn under(&self, path: &str, including_self: bool) -> Vec<String> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut keys: Vec<String> = self
            .tree
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if including_self && self.tree.contains_key(path) {
            keys.push(path.to_string());
        }
        keys
    }

    /// The final tree: hard links kept where their first file still holds
    /// the same content and sorts before them, copies otherwise.
    fn into_tree(mut self) -> Result<FileTree> {
        // Decided in path order, so a link's first file is decided first.
        let mut kept: BTreeMap<String, String> = BTreeMap::new();
        for (path, (first, digest)) in &self.links {
            let first = kept.get(first).cloned().unwrap_or_else(|| first.clone());
            let same = self.file_at(&first).is_some_and(|(_, d)| d == *digest);
            if first < *path && same && self.file_at(path).is_some() {
                kept.insert(path.clone(), first);
            }
        }
        for (path, first) in kept {
            let node = self.tree.get_mut(&path).expect("checked above");
            node.entry.kind = EntryKind::HardLink { target: first };
        }
        let mut tree = FileTree::new();
        for (path, node) in self.tree {
            tree.insert(&path, node.entry)
                .with_context(|| format!("squashed tree: /{path}"))?;
        }
        Ok(tree)
    }
}

impl TreeView for Merged<'_> {
    fn node(&self, path: &str) -> Option<rules::Node> {
        Some(match &self.tree.get(path)?.entry.kind {
            EntryKind::Directory => rules::Node::Directory,
            EntryKind::File(_) | EntryKind::HardLink { .. } => rules::Node::File,
            EntryKind::Symlink { target } => rules::Node::Symlink {
                target: target.clone(),
            },
        })
    }
}

/// True when a path of `set` lies under the directory `dir`.
fn holds_any(set: &BTreeSet<String>, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    set.range(prefix.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(&prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::entries::EntryError;
    use crate::layer::reader::index_layer;

    fn file(b: &[u8], mode: u32) -> TreeEntry {
        TreeEntry::file(FileSource::Bytes(b.to_vec()), mode)
    }

    fn blob(tree: &FileTree) -> (Vec<u8>, Digest) {
        let mut blob = Vec::new();
        let w =
            crate::layer::writer::write_layer(tree, &LayerOptions::default(), &mut blob).unwrap();
        (blob, w.diff_id)
    }

    fn input(blob: &[u8], diff_id: Option<Digest>) -> SquashInput<'_> {
        SquashInput {
            name: "test".into(),
            blob: Box::new(blob),
            compression: LayerCompression::Gzip,
            diff_id,
        }
    }

    /// Squashes `trees` and returns the result's (path, kind, link, content).
    fn squashed(trees: &[FileTree]) -> Vec<(String, EntryType, Option<String>, Vec<u8>)> {
        let blobs: Vec<(Vec<u8>, Digest)> = trees.iter().map(blob).collect();
        squashed_inputs(blobs.iter().map(|(b, d)| input(b, Some(d.clone()))))
    }

    fn squashed_inputs<'r>(
        inputs: impl IntoIterator<Item = SquashInput<'r>>,
    ) -> Vec<(String, EntryType, Option<String>, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("layout")).unwrap();
        let written = squash(inputs, &LayerOptions::default(), &layout).unwrap();
        let leftovers: Vec<_> = fs::read_dir(layout.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".squash-"))
            .collect();
        assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
        let bytes = layout.read_blob(&written.digest).unwrap();
        let mut layer = LayerTar::new(&bytes[..], LayerCompression::Gzip).unwrap();
        let mut out = Vec::new();
        for entry in layer.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push((
                entry.path.clone(),
                entry.kind,
                entry.link_target.clone(),
                data,
            ));
        }
        assert_eq!(layer.finish().unwrap(), written.diff_id);
        out
    }

    fn paths(entries: &[(String, EntryType, Option<String>, Vec<u8>)]) -> Vec<&str> {
        entries.iter().map(|e| e.0.as_str()).collect()
    }

    #[test]
    fn whiteouts_apply_to_lower_layers_only() {
        let mut lower = FileTree::new();
        lower.insert("etc/passwd", file(b"root", 0o644)).unwrap();
        lower.insert("etc/group", file(b"g", 0o644)).unwrap();
        lower.insert("opt/old/a", file(b"a", 0o644)).unwrap();
        lower.insert("opt/keep", file(b"k", 0o644)).unwrap();
        let mut upper = FileTree::new();
        upper.insert("etc/.wh.passwd", file(b"", 0)).unwrap();
        // Sorts BEFORE the opaque marker, yet is this layer's own: kept.
        upper.insert("opt/.keep2", file(b"new", 0o600)).unwrap();
        upper.insert("opt/.wh..wh..opq", file(b"", 0)).unwrap();
        upper.insert("opt/keep", file(b"new", 0o600)).unwrap();
        let got = squashed(&[lower, upper]);
        assert_eq!(
            paths(&got),
            ["etc", "etc/group", "opt", "opt/.keep2", "opt/keep"]
        );
        assert_eq!(got[4].3, b"new");
    }

    /// An empty ustar header of `kind` (0755, root, mtime 1), for entries
    /// our writer cannot make.
    fn raw_header(kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(0);
        h
    }

    #[test]
    fn replacing_kinds_and_keeping_hard_links() {
        let mut lower = FileTree::new();
        lower.insert("bin/sh", file(b"shell", 0o755)).unwrap();
        lower
            .insert("bin/sh2", TreeEntry::hard_link("bin/sh", 0o755))
            .unwrap();
        lower.insert("lib/x/y", file(b"y", 0o644)).unwrap();
        lower.insert("usr/a", file(b"a", 0o644)).unwrap();
        lower
            .insert("usr/b", TreeEntry::hard_link("usr/a", 0o644))
            .unwrap();
        let mut upper = FileTree::new();
        upper.insert("lib", TreeEntry::symlink("usr/lib")).unwrap();
        upper.insert("usr/a", file(b"changed", 0o644)).unwrap();
        // A hard link to a file of the lower layer (our writer cannot
        // write one: a raw tar).
        let mut h = raw_header(tar::EntryType::Link);
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_link(&mut h, "bin/sh3", "bin/sh").unwrap();
        let linked = builder.into_inner().unwrap();
        let (lower, lower_id) = blob(&lower);
        let (upper, upper_id) = blob(&upper);
        let got = squashed_inputs([
            input(&lower, Some(lower_id)),
            input(&upper, Some(upper_id)),
            SquashInput {
                name: "raw".into(),
                blob: Box::new(&linked[..]),
                compression: LayerCompression::None,
                diff_id: Some(Digest::of_bytes(&linked)),
            },
        ]);
        let summary: Vec<(&str, EntryType, Option<&str>, &[u8])> = got
            .iter()
            .map(|(p, k, l, d)| (p.as_str(), *k, l.as_deref(), d.as_slice()))
            .collect();
        assert_eq!(
            summary,
            [
                ("bin", EntryType::Directory, None, &b""[..]),
                ("bin/sh", EntryType::File, None, b"shell"),
                ("bin/sh2", EntryType::HardLink, Some("bin/sh"), b""),
                ("bin/sh3", EntryType::HardLink, Some("bin/sh"), b""),
                ("lib", EntryType::Symlink, Some("usr/lib"), b""),
                ("usr", EntryType::Directory, None, b""),
                ("usr/a", EntryType::File, None, b"changed"),
                // Its target changed: a copy of what it linked to.
                ("usr/b", EntryType::File, None, b"a"),
            ]
        );
    }

    #[test]
    fn the_same_layers_squash_to_the_same_bytes() {
        let mut t = FileTree::new();
        t.insert("a/b", file(b"b", 0o4755)).unwrap();
        let (b, d) = blob(&t);
        let digest = || {
            let dir = tempfile::tempdir().unwrap();
            let layout = Layout::create(dir.path()).unwrap();
            squash(
                [input(&b, Some(d.clone()))],
                &LayerOptions::default(),
                &layout,
            )
            .unwrap()
            .digest
        };
        assert_eq!(digest(), digest());
        // One layer squashed is that layer, byte for byte.
        assert_eq!(digest(), Digest::of_bytes(&b));
    }

    #[test]
    fn a_wrong_diff_id_and_a_non_utf8_path_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let mut t = FileTree::new();
        t.insert("a", file(b"a", 0o644)).unwrap();
        let (b, _) = blob(&t);
        let wrong = Digest::of_bytes(b"other");
        let err = squash([input(&b, Some(wrong))], &LayerOptions::default(), &layout).unwrap_err();
        assert!(format!("{err:#}").contains("diff_id"), "{err:#}");

        let mut h = raw_header(tar::EntryType::Directory);
        h.as_old_mut().name[..5].copy_from_slice(b"caf\xe9/");
        h.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&h, &b""[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let raw = SquashInput {
            name: "raw".into(),
            blob: Box::new(&tar[..]),
            compression: LayerCompression::None,
            diff_id: None,
        };
        let err = squash([raw], &LayerOptions::default(), &layout).unwrap_err();
        let squash_error = err.downcast_ref::<EntryError>().expect("an EntryError");
        let index_error = index_layer(&tar[..], LayerCompression::None).unwrap_err();
        let index_error = index_error.downcast_ref::<EntryError>().unwrap();
        assert_eq!(squash_error.to_string(), index_error.to_string());
        assert!(
            squash_error.to_string().contains("caf\\xe9/"),
            "{squash_error}"
        );
    }
}
