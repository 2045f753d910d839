//! Owns: the ONE walk over a layer's tar entries. Every consumer (the
//! index in `reader`, `extract`, `squash`, the pallet's file reader) reads
//! layers through `LayerTar` and never through `tar::Archive::entries()`, so
//! they all agree on what a layer contains:
//! - decompression (gzip, none; zstd is a clear error) and the diff_id
//!   (sha256 of the whole tar stream, read to its end by `finish`);
//! - paths must be UTF-8: a non-UTF-8 path or link target is
//!   `EntryError::NonUtf8`, naming the raw bytes escaped (`caf\xe9`);
//! - pax global headers (`pax_global_header`) are archive metadata: skipped;
//!   pax extended headers and GNU long names/targets/sizes are resolved by
//!   the tar crate;
//! - paths are normalized (`tree::normalize_path`: leading `/` and `./`
//!   stripped, `..` rejected); an entry naming the root itself (`./`) is
//!   skipped;
//! - whiteouts: `.wh.<name>` -> `Whiteout` of `<dir>/<name>`,
//!   `.wh..wh..opq` -> `OpaqueWhiteout` of `<dir>` (the empty path for the
//!   layer root); other `.wh..wh.*` (AUFS bookkeeping) is skipped;
//! - link targets: symlink targets verbatim, hard-link targets normalized;
//! - size: a layer whose uncompressed tar grows past `max_layer_bytes()`
//!   (`STAGEX_MAX_LAYER_BYTES`, default 64 GiB) fails with `TooLarge` as
//!   soon as the limit is crossed, so a gzip bomb costs no consumer more
//!   than the limit (no disk is written by this module either way).
//!
//! It yields typed entries (`Entry`: metadata plus a reader of the file's
//! content) and decides nothing else: policies such as "absolute paths are
//! refused when extracting" belong to the consumer, which gets the raw path
//! and raw link target for that. It never writes files.
use std::borrow::Cow;
use std::io::{self, BufReader, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::tree::normalize_path;
use crate::oci::digest::Digest;
use crate::oci::media_type::LayerCompression;

/// Why a layer's tar cannot be read. The same layer fails with the same
/// error whoever reads it (index, extract, squash).
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(
        "layer entry {what} \"{escaped}\" is not UTF-8 (raw bytes shown escaped); \
         rebuild the layer with UTF-8 file names"
    )]
    NonUtf8 {
        /// `path` or `link target`.
        what: &'static str,
        /// The raw bytes, non-ASCII escaped as `\xNN`.
        escaped: String,
    },
    #[error("layer entry {raw:?}: {reason}")]
    InvalidPath { raw: String, reason: String },
    #[error("layer entry {path}: bad {field} in its tar header: {source}")]
    BadHeader {
        path: String,
        field: &'static str,
        source: io::Error,
    },
    #[error("layer entry {path}: {kind} without a target")]
    MissingLinkTarget { path: String, kind: &'static str },
    #[error("layer entry {path}: unsupported tar entry type {kind}")]
    Unsupported { path: String, kind: String },
    #[error(
        "zstd-compressed layers are not supported yet; use an image with gzip or \
         uncompressed layers"
    )]
    Zstd,
    #[error("{0}")]
    TooLarge(#[from] LayerTooLarge),
    #[error(
        "STAGEX_MAX_LAYER_BYTES={value:?} is not a number of bytes; \
         set it to a whole number such as 68719476736 (64 GiB)"
    )]
    BadLimit { value: String },
    #[error("reading the layer's tar: {0}")]
    Tar(#[source] io::Error),
}

/// The uncompressed tar of a layer grew past the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the layer's uncompressed tar is larger than {limit} bytes (STAGEX_MAX_LAYER_BYTES): \
     refused as a possible decompression bomb; raise STAGEX_MAX_LAYER_BYTES if the layer \
     is genuine"
)]
pub struct LayerTooLarge {
    pub limit: u64,
}

/// Default of `STAGEX_MAX_LAYER_BYTES`: 64 GiB.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 64 << 30;

/// The largest uncompressed tar a layer may have: `STAGEX_MAX_LAYER_BYTES`,
/// else `DEFAULT_MAX_LAYER_BYTES`.
pub fn max_layer_bytes() -> Result<u64, EntryError> {
    match std::env::var("STAGEX_MAX_LAYER_BYTES") {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| EntryError::BadLimit { value }),
        _ => Ok(DEFAULT_MAX_LAYER_BYTES),
    }
}

impl EntryError {
    /// An I/O error of the tar stream, typed when it is the size limit.
    fn from_io(error: io::Error) -> EntryError {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<LayerTooLarge>())
        {
            Some(too_large) => EntryError::TooLarge(too_large.clone()),
            None => EntryError::Tar(error),
        }
    }
}

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

/// The metadata of one entry, as every consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The path as the tar holds it (UTF-8 checked, not normalized).
    pub raw_path: String,
    /// Normalized relative path (`usr/bin/sh`); for a whiteout the path
    /// deleted, for an opaque marker the directory (empty for the root).
    pub path: String,
    pub kind: EntryType,
    /// Permission bits incl. setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Content size (regular files; 0 otherwise).
    pub size: u64,
    /// Symlink target (verbatim) or hard-link target (normalized path).
    pub link_target: Option<String>,
    /// The link target as the tar holds it (UTF-8 checked).
    pub raw_link_target: Option<String>,
    /// (major, minor) of a character or block device.
    pub device: Option<(u32, u32)>,
}

/// The decompressed tar stream, hashed as it is read (the diff_id).
type TarStream<'r> = HashingReader<Box<dyn Read + 'r>>;

/// One entry: its metadata (`Deref`) and, for a regular file, its content
/// (`Read`; empty for every other kind).
pub struct Entry<'a, 'r> {
    info: EntryInfo,
    content: tar::Entry<'a, TarStream<'r>>,
}

impl Entry<'_, '_> {
    pub fn info(&self) -> &EntryInfo {
        &self.info
    }

    pub fn into_info(self) -> EntryInfo {
        self.info
    }

    /// The raw tar header, for tools that explain how two layers' tar
    /// encodings differ (`diff`); nothing else should need it.
    pub fn raw_header(&self) -> &tar::Header {
        self.content.header()
    }

    /// Where the raw header starts in the uncompressed tar stream (after
    /// any pax or GNU long-name headers that belong to it).
    pub fn raw_header_position(&self) -> u64 {
        self.content.raw_header_position()
    }

    /// The pax extended records of this entry (key, value); empty when
    /// the entry had no pax header.
    pub fn pax_records(&mut self) -> io::Result<Vec<(String, Vec<u8>)>> {
        let Some(records) = self.content.pax_extensions()? else {
            return Ok(Vec::new());
        };
        records
            .map(|record| {
                record.map(|r| {
                    let key = String::from_utf8_lossy(r.key_bytes()).into_owned();
                    (key, r.value_bytes().to_vec())
                })
            })
            .collect()
    }
}

impl std::ops::Deref for Entry<'_, '_> {
    type Target = EntryInfo;
    fn deref(&self) -> &EntryInfo {
        &self.info
    }
}

impl Read for Entry<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.info.kind == EntryType::File {
            self.content.read(buf)
        } else {
            Ok(0)
        }
    }
}

/// A layer blob opened for reading its entries.
pub struct LayerTar<'r> {
    archive: tar::Archive<TarStream<'r>>,
}

impl<'r> LayerTar<'r> {
    /// Opens a layer blob (compressed as `compression`), limited to
    /// `max_layer_bytes()` uncompressed.
    pub fn new(blob: impl Read + 'r, compression: LayerCompression) -> Result<Self, EntryError> {
        LayerTar::with_limit(blob, compression, max_layer_bytes()?)
    }

    /// Opens a layer blob whose uncompressed tar may hold at most `limit`
    /// bytes.
    pub fn with_limit(
        blob: impl Read + 'r,
        compression: LayerCompression,
        limit: u64,
    ) -> Result<Self, EntryError> {
        let stream = HashingReader::new(decompress(blob, compression)?, limit);
        Ok(LayerTar {
            archive: tar::Archive::new(stream),
        })
    }

    /// The layer's entries in archive order (see the module doc for what
    /// is skipped and checked).
    pub fn entries(&mut self) -> Result<LayerEntries<'_, 'r>, EntryError> {
        Ok(LayerEntries {
            inner: self.archive.entries().map_err(EntryError::from_io)?,
        })
    }

    /// Reads the rest of the stream (tar padding after the end marker) and
    /// returns the diff_id: the digest of the whole uncompressed tar.
    pub fn finish(self) -> Result<Digest, EntryError> {
        Ok(self.finish_sized()?.0)
    }

    /// `finish`, plus the size of the uncompressed tar in bytes.
    pub fn finish_sized(self) -> Result<(Digest, u64), EntryError> {
        self.archive
            .into_inner()
            .finish()
            .map_err(EntryError::from_io)
    }
}

/// The iterator of `LayerTar::entries`.
pub struct LayerEntries<'a, 'r> {
    inner: tar::Entries<'a, TarStream<'r>>,
}

impl<'a, 'r> Iterator for LayerEntries<'a, 'r> {
    type Item = Result<Entry<'a, 'r>, EntryError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let content = match self.inner.next()? {
                Ok(content) => content,
                Err(e) => return Some(Err(EntryError::from_io(e))),
            };
            match read_info(&content) {
                Ok(Some(info)) => return Some(Ok(Entry { info, content })),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The metadata of a raw tar entry, or `None` for what a layer skips.
fn read_info<R: Read>(item: &tar::Entry<'_, R>) -> Result<Option<EntryInfo>, EntryError> {
    let header = item.header();
    let tar_type = header.entry_type();
    if tar_type == tar::EntryType::XGlobalHeader {
        // `pax_global_header` (git archive, some tar writers): archive
        // metadata, not a file; docker and containerd skip it too.
        return Ok(None);
    }
    let raw_path = utf8(item.path_bytes(), "path")?;
    let meaning = tree_path_of(&raw_path).map_err(|e| EntryError::InvalidPath {
        raw: raw_path.clone(),
        reason: format!("{e:#}"),
    })?;
    let bad = |field: &'static str| {
        let path = raw_path.clone();
        move |source| EntryError::BadHeader {
            path,
            field,
            source,
        }
    };
    let mode = header.mode().map_err(bad("mode"))? & 0o7777;
    let uid = header.uid().map_err(bad("uid"))? as u32;
    let gid = header.gid().map_err(bad("gid"))? as u32;
    let mtime = header.mtime().map_err(bad("mtime"))?;
    let mut info = EntryInfo {
        raw_path: raw_path.clone(),
        path: String::new(),
        kind: EntryType::File,
        mode,
        uid,
        gid,
        mtime,
        size: 0,
        link_target: None,
        raw_link_target: None,
        device: None,
    };
    match meaning {
        PathMeaning::Skip => return Ok(None),
        PathMeaning::Whiteout(path) => {
            info.path = path;
            info.kind = EntryType::Whiteout;
            return Ok(Some(info));
        }
        PathMeaning::Opaque(path) => {
            info.path = path;
            info.kind = EntryType::OpaqueWhiteout;
            return Ok(Some(info));
        }
        PathMeaning::Entry(path) => info.path = path,
    }
    let raw_link = match item.link_name_bytes() {
        Some(link) if !link.is_empty() => Some(utf8(link, "link target")?),
        _ => None,
    };
    info.kind = entry_kind(item, &mut info, raw_link.as_deref())?;
    info.raw_link_target = raw_link;
    Ok(Some(info))
}

/// The entry's kind from its tar type; fills the size, link target or
/// device numbers that kind carries.
fn entry_kind<R: Read>(
    item: &tar::Entry<'_, R>,
    info: &mut EntryInfo,
    raw_link: Option<&str>,
) -> Result<EntryType, EntryError> {
    let header = item.header();
    let tar_type = header.entry_type();
    let path = info.path.clone();
    let missing = |kind| EntryError::MissingLinkTarget {
        path: path.clone(),
        kind,
    };
    let bad = |field: &'static str| {
        let path = info.raw_path.clone();
        move |source| EntryError::BadHeader {
            path,
            field,
            source,
        }
    };
    Ok(match tar_type {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            info.size = item.size();
            EntryType::File
        }
        tar::EntryType::Directory => EntryType::Directory,
        tar::EntryType::Symlink => {
            info.link_target = Some(raw_link.ok_or_else(|| missing("symlink"))?.to_string());
            EntryType::Symlink
        }
        tar::EntryType::Link => {
            let raw = raw_link.ok_or_else(|| missing("hard link"))?;
            let target = normalize_path(raw).map_err(|e| EntryError::InvalidPath {
                raw: info.raw_path.clone(),
                reason: format!("hard link target: {e:#}"),
            })?;
            info.link_target = Some(target);
            EntryType::HardLink
        }
        tar::EntryType::Char | tar::EntryType::Block => {
            let major = header.device_major().map_err(bad("device major"))?;
            let minor = header.device_minor().map_err(bad("device minor"))?;
            info.device = Some((major.unwrap_or(0), minor.unwrap_or(0)));
            if tar_type == tar::EntryType::Char {
                EntryType::CharDevice
            } else {
                EntryType::BlockDevice
            }
        }
        tar::EntryType::Fifo => EntryType::Fifo,
        other => {
            return Err(EntryError::Unsupported {
                path,
                kind: format!("{other:?}"),
            })
        }
    })
}

/// The bytes as a `String`, or `NonUtf8` naming them escaped.
fn utf8(bytes: Cow<'_, [u8]>, what: &'static str) -> Result<String, EntryError> {
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(_) => Err(EntryError::NonUtf8 {
            what,
            escaped: bytes.escape_ascii().to_string(),
        }),
    }
}

/// What a raw tar path means for a layer.
#[derive(Debug, PartialEq, Eq)]
pub enum PathMeaning {
    Entry(String),
    Whiteout(String),
    Opaque(String),
    /// AUFS bookkeeping (`.wh..wh.plnk` etc.) and the root itself: ignored.
    Skip,
}

/// Classifies a raw tar path: normalizes it and recognizes whiteouts.
/// An entry naming the root itself (`./`, as `tar -C dir .` and many
/// image tools write first) is skipped: the root is the target directory,
/// whose metadata a layer does not own.
pub fn tree_path_of(raw: &str) -> anyhow::Result<PathMeaning> {
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
            anyhow::bail!("invalid whiteout {raw:?}: no name after .wh.");
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

/// Wraps a layer blob reader so it yields the uncompressed tar.
pub fn decompress<'a>(
    reader: impl Read + 'a,
    compression: LayerCompression,
) -> Result<Box<dyn Read + 'a>, EntryError> {
    match compression {
        LayerCompression::None => Ok(Box::new(reader)),
        LayerCompression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(1 << 16, reader),
        ))),
        LayerCompression::Zstd => Err(EntryError::Zstd),
    }
}

/// A reader that hashes and counts everything it yields, and fails with
/// `LayerTooLarge` once more than `limit` bytes came out.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// Reads the rest of the stream and returns the digest and size of all
    /// of it.
    fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LayerTooLarge { limit: self.limit }));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(raw name bytes, type, link bytes, content)`.
    type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

    /// A tar of raw entries, names copied verbatim into the old header
    /// fields.
    fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_ustar();
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
            h.set_entry_type(*kind);
            h.set_mode(0o4755);
            h.set_uid(7);
            h.set_gid(8);
            h.set_mtime(9);
            h.set_size(data.len() as u64);
            h.set_cksum();
            builder.append(&h, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn infos(tar: &[u8]) -> Result<Vec<(EntryInfo, Vec<u8>)>, EntryError> {
        let mut layer = LayerTar::new(tar, LayerCompression::None)?;
        let mut out = Vec::new();
        for entry in layer.entries()? {
            let mut entry = entry?;
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push((entry.into_info(), data));
        }
        Ok(out)
    }

    #[test]
    fn entries_are_typed_normalized_and_classified() {
        use tar::EntryType as T;
        let tar = raw_tar(&[
            (b"./", T::Directory, b"", b""),
            (b"./usr/", T::Directory, b"", b""),
            (b"./usr/sh", T::Regular, b"", b"#!"),
            (b"/usr/sh2", T::Link, b"./usr/sh", b""),
            (b"lib", T::Symlink, b"/usr/lib", b""),
            (b"etc/.wh.passwd", T::Regular, b"", b""),
            (b"opt/.wh..wh..opq", T::Regular, b"", b""),
            (b"a/.wh..wh.aufs", T::Regular, b"", b""),
        ]);
        let got = infos(&tar).unwrap();
        let summary: Vec<(&str, EntryType, Option<&str>, &[u8])> = got
            .iter()
            .map(|(i, d)| {
                (
                    i.path.as_str(),
                    i.kind,
                    i.link_target.as_deref(),
                    d.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("usr", EntryType::Directory, None, &b""[..]),
                ("usr/sh", EntryType::File, None, b"#!"),
                ("usr/sh2", EntryType::HardLink, Some("usr/sh"), b""),
                ("lib", EntryType::Symlink, Some("/usr/lib"), b""),
                ("etc/passwd", EntryType::Whiteout, None, b""),
                ("opt", EntryType::OpaqueWhiteout, None, b""),
            ]
        );
        let sh = &got[1].0;
        assert_eq!(
            (sh.mode, sh.uid, sh.gid, sh.mtime, sh.size),
            (0o4755, 7, 8, 9, 2)
        );
        assert_eq!(sh.raw_path, "./usr/sh");
        assert_eq!(got[2].0.raw_path, "/usr/sh2");
        assert_eq!(got[2].0.raw_link_target.as_deref(), Some("./usr/sh"));
    }

    #[test]
    fn pax_long_names_and_global_headers() {
        let long = format!("usr/share/doc/{}/café/ü.txt", "x".repeat(120));
        let mut builder = tar::Builder::new(Vec::new());
        let mut g = tar::Header::new_ustar();
        g.set_path("pax_global_header").unwrap();
        g.set_entry_type(tar::EntryType::XGlobalHeader);
        let record = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
        g.set_size(record.len() as u64);
        g.set_cksum();
        builder.append(&g, &record[..]).unwrap();
        builder
            .append_pax_extensions([("path", long.as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("short").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(3);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        builder.append(&h, &b"abc"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let got = infos(&tar).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.path, long);
        assert_eq!(got[0].1, b"abc");
    }

    #[test]
    fn non_utf8_paths_and_targets_are_named_escaped() {
        use tar::EntryType as T;
        let err = infos(&raw_tar(&[(b"caf\xe9", T::Regular, b"", b"")])).unwrap_err();
        assert!(
            matches!(&err, EntryError::NonUtf8 { what: "path", escaped } if escaped == "caf\\xe9"),
            "{err}"
        );
        assert!(err.to_string().contains("caf\\xe9"), "{err}");
        let err = infos(&raw_tar(&[(b"l", T::Symlink, b"\xff", b"")])).unwrap_err();
        assert!(
            matches!(&err, EntryError::NonUtf8 { what: "link target", escaped } if escaped == "\\xff"),
            "{err}"
        );
    }

    #[test]
    fn bad_paths_and_types_are_errors() {
        use tar::EntryType as T;
        let err = infos(&raw_tar(&[(b"../x", T::Regular, b"", b"")])).unwrap_err();
        assert!(err.to_string().contains("../x"), "{err}");
        let err = infos(&raw_tar(&[(b"h", T::Link, b"../../s", b"")])).unwrap_err();
        assert!(err.to_string().contains("../../s"), "{err}");
        let err = infos(&raw_tar(&[(b"l", T::Symlink, b"", b"")])).unwrap_err();
        assert!(matches!(err, EntryError::MissingLinkTarget { .. }), "{err}");
        let err = infos(&raw_tar(&[(b"s", T::new(b'Z'), b"", b"")])).unwrap_err();
        assert!(matches!(err, EntryError::Unsupported { .. }), "{err}");
        assert!(matches!(
            LayerTar::new(&b""[..], LayerCompression::Zstd).err(),
            Some(EntryError::Zstd)
        ));
    }

    #[test]
    fn a_tar_past_the_limit_is_too_large_wherever_it_is_crossed() {
        use tar::EntryType as T;
        let tar = raw_tar(&[(b"big", T::Regular, b"", &[0u8; 4096])]);
        // Crossed in the file's content: the reader's error says why.
        let mut layer = LayerTar::with_limit(&tar[..], LayerCompression::None, 2048).unwrap();
        let mut entry = layer.entries().unwrap().next().unwrap().unwrap();
        let error = io::copy(&mut entry, &mut io::sink()).unwrap_err();
        assert!(
            error.to_string().contains("STAGEX_MAX_LAYER_BYTES"),
            "{error}"
        );
        // Crossed in a header: a typed error.
        let mut layer = LayerTar::with_limit(&tar[..], LayerCompression::None, 100).unwrap();
        let error = layer.entries().unwrap().next().unwrap().err().unwrap();
        assert!(
            matches!(error, EntryError::TooLarge(LayerTooLarge { limit: 100 })),
            "{error}"
        );
        // Within the limit: the size of the whole tar.
        let mut layer = LayerTar::with_limit(&tar[..], LayerCompression::None, 1 << 20).unwrap();
        assert_eq!(layer.entries().unwrap().count(), 1);
        assert_eq!(layer.finish_sized().unwrap().1, tar.len() as u64);
    }

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
}
