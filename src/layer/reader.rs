//! Reading layers from anywhere: decompression and a serializable index of
//! a layer's entries (paths, kinds, modes, owners, link targets, content
//! digests, whiteouts).
//!
//! Owns: the mapping from raw tar entries to `LayerEntry` (normalized paths
//! as in `tree::normalize_path`; `.wh.<name>` -> `Whiteout` of
//! `<dir>/<name>`; `.wh..wh..opq` -> `OpaqueWhiteout` of `<dir>` (the empty
//! path for the layer root); other `.wh..wh.*` AUFS metadata is skipped) and
//! the diff_id (sha256 of the whole decompressed stream, read to its end).
//! PAX and GNU long names/targets/sizes are resolved by the tar crate. It
//! never writes files (see `extract`).
use std::io::{self, BufReader, Read};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::tree::normalize_path;
use crate::oci::digest::Digest;
use crate::oci::media_type::LayerCompression;

/// What an entry of a layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Directory,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// Deletes `path` from lower layers.
    Whiteout,
    /// Hides everything lower layers have under the directory `path`.
    OpaqueWhiteout,
}

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

/// Wraps a layer blob reader so it yields the uncompressed tar.
pub fn decompress<'a>(
    reader: impl Read + 'a,
    compression: LayerCompression,
) -> Result<Box<dyn Read + 'a>> {
    match compression {
        LayerCompression::None => Ok(Box::new(reader)),
        LayerCompression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(1 << 16, reader),
        ))),
        LayerCompression::Zstd => bail!(
            "zstd-compressed layers are not supported yet; use an image with gzip or \
             uncompressed layers"
        ),
    }
}

/// A reader that hashes everything it yields.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads the rest of the stream (e.g. tar padding after the end
    /// marker) and returns the digest of all of it.
    pub(crate) fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        Digest::from_hex(&hex::encode(self.hasher.finalize()))
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What a raw tar path means for a layer.
#[derive(Debug, PartialEq, Eq)]
pub enum PathMeaning {
    Entry(String),
    Whiteout(String),
    Opaque(String),
    /// AUFS bookkeeping (`.wh..wh.plnk` etc.): ignored.
    Skip,
}

/// Classifies a raw tar path: normalizes it and recognizes whiteouts.
/// An entry naming the root itself (`./`, as `tar -C dir .` and many
/// image tools write first) is skipped: the root is the target directory,
/// whose metadata a layer does not own.
pub fn tree_path_of(raw: &str) -> Result<PathMeaning> {
    if names_root(raw) {
        return Ok(PathMeaning::Skip);
    }
    let path = normalize_path(raw)?;
    let (dir, base) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path.as_str()),
    };
    if base == ".wh..wh..opq" {
        return Ok(PathMeaning::Opaque(dir.to_string()));
    }
    if base.starts_with(".wh..wh.") {
        return Ok(PathMeaning::Skip);
    }
    if let Some(name) = base.strip_prefix(".wh.") {
        if name.is_empty() {
            bail!("invalid whiteout {raw:?}: no name after .wh.");
        }
        let deleted = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        return Ok(PathMeaning::Whiteout(deleted));
    }
    Ok(PathMeaning::Entry(path))
}

/// `.`, `./`, `/`, `.//./`: a path that is the root and nothing else.
fn names_root(raw: &str) -> bool {
    !raw.is_empty() && raw.split('/').all(|c| c.is_empty() || c == ".")
}

pub(crate) fn utf8_path(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).with_context(|| {
        format!(
            "layer path {:?} is not UTF-8",
            String::from_utf8_lossy(bytes)
        )
    })
}

fn marker(path: String, kind: EntryType, mode: u32, uid: u32, gid: u32) -> LayerEntry {
    LayerEntry {
        path,
        kind,
        mode,
        uid,
        gid,
        size: 0,
        link_target: None,
        content_digest: None,
    }
}

/// Indexes a layer blob: every entry, and the diff_id of its tar.
pub fn index_layer(reader: impl Read, compression: LayerCompression) -> Result<LayerIndex> {
    let tar_stream = HashingReader::new(decompress(reader, compression)?);
    let mut archive = tar::Archive::new(tar_stream);
    let mut entries = Vec::new();
    for item in archive.entries().context("reading layer tar")? {
        let mut item = item.context("reading layer tar entry")?;
        if item.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue; // archive metadata, not an entry (as in extract)
        }
        let raw = item.path_bytes().into_owned();
        let raw = utf8_path(&raw)?;
        let header = item.header();
        let mode = header.mode().with_context(|| format!("{raw}: bad mode"))? & 0o7777;
        let uid = header.uid().with_context(|| format!("{raw}: bad uid"))? as u32;
        let gid = header.gid().with_context(|| format!("{raw}: bad gid"))? as u32;
        let tar_type = header.entry_type();
        let meaning = tree_path_of(raw).with_context(|| format!("layer entry {raw:?}"))?;
        let path = match meaning {
            PathMeaning::Skip => continue,
            PathMeaning::Whiteout(p) => {
                entries.push(marker(p, EntryType::Whiteout, mode, uid, gid));
                continue;
            }
            PathMeaning::Opaque(p) => {
                entries.push(marker(p, EntryType::OpaqueWhiteout, mode, uid, gid));
                continue;
            }
            PathMeaning::Entry(p) => p,
        };
        let link = match item.link_name_bytes() {
            Some(l) if !l.is_empty() => Some(utf8_path(&l)?.to_string()),
            _ => None,
        };
        let (kind, link_target) = match tar_type {
            tar::EntryType::Regular | tar::EntryType::Continuous => (EntryType::File, None),
            tar::EntryType::Directory => (EntryType::Directory, None),
            tar::EntryType::Symlink => {
                let Some(target) = link else {
                    bail!("layer entry {path}: symlink without a target");
                };
                (EntryType::Symlink, Some(target))
            }
            tar::EntryType::Link => {
                let Some(target) = link else {
                    bail!("layer entry {path}: hard link without a target");
                };
                let target = normalize_path(&target)
                    .with_context(|| format!("layer entry {path}: hard link target"))?;
                (EntryType::HardLink, Some(target))
            }
            tar::EntryType::Char => (EntryType::CharDevice, None),
            tar::EntryType::Block => (EntryType::BlockDevice, None),
            tar::EntryType::Fifo => (EntryType::Fifo, None),
            other => bail!("layer entry {path}: unsupported tar entry type {other:?}"),
        };
        let (size, content_digest) = if kind == EntryType::File {
            let mut hashing = crate::oci::digest::HashingWriter::new(io::sink());
            io::copy(&mut item, &mut hashing)
                .with_context(|| format!("reading layer entry {path}"))?;
            let (digest, size, _) = hashing.finish();
            (size, Some(digest))
        } else {
            (0, None)
        };
        entries.push(LayerEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            size,
            link_target,
            content_digest,
        });
    }
    let diff_id = archive
        .into_inner()
        .finish()
        .context("reading the end of the layer")?;
    Ok(LayerIndex { diff_id, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tree::{FileSource, FileTree, TreeEntry};
    use crate::layer::writer::{write_layer, LayerOptions};

    #[test]
    fn whiteout_paths_are_classified() {
        assert_eq!(
            tree_path_of("./etc/.wh.passwd").unwrap(),
            PathMeaning::Whiteout("etc/passwd".into())
        );
        assert_eq!(
            tree_path_of(".wh.tmp").unwrap(),
            PathMeaning::Whiteout("tmp".into())
        );
        assert_eq!(
            tree_path_of("usr/.wh..wh..opq").unwrap(),
            PathMeaning::Opaque("usr".into())
        );
        assert_eq!(
            tree_path_of(".wh..wh..opq").unwrap(),
            PathMeaning::Opaque(String::new())
        );
        assert_eq!(
            tree_path_of(".wh..wh.plnk/1").unwrap(),
            PathMeaning::Entry(".wh..wh.plnk/1".into())
        );
        assert_eq!(tree_path_of("a/.wh..wh.aufs").unwrap(), PathMeaning::Skip);
        assert!(tree_path_of("../x").is_err());
        for root in ["./", ".", "/", ".//./"] {
            assert_eq!(tree_path_of(root).unwrap(), PathMeaning::Skip, "{root}");
        }
        assert!(tree_path_of("").is_err());
        assert!(tree_path_of("./..").is_err());
    }

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
