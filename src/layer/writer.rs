//! The deterministic layer writer: `FileTree` -> tar -> (pinned gzip) ->
//! bytes, with diff_id and digest computed while streaming.
//!
//! Owns: the exact tar bytes (the reproducibility contract: the diff_id) and
//! storing a layer in a layout. It never walks directories (`tree` does)
//! and never chooses compression bytes (`compress` does).
//!
//! Determinism rules (architecture.md), as implemented here:
//! - entry order = the tree's order: bytewise sort of the full normalized
//!   path (without the trailing `/` of directories), so parents come before
//!   children; the root directory itself is not an entry;
//! - every header is a fresh `Header::new_ustar()` whose fields are all set
//!   here: name, mode (`& 0o7777`, setuid/setgid/sticky kept), numeric
//!   uid/gid from the tree, size, mtime = `LayerOptions::mtime`
//!   (SOURCE_DATE_EPOCH, default 1), typeflag, linkname, empty uname/gname,
//!   devmajor/devminor 0, checksum. No atime/ctime anywhere; no xattrs;
//! - names: directories end with `/`; no `./` prefix; hard links are tar
//!   hard links (typeflag `1`, linkname = the target's path);
//! - anything that does not fit ustar is carried by a PAX extended header
//!   (`x`) placed before the entry, holding only the needed records among
//!   `gid`, `linkpath`, `path`, `size`, `uid`, in that (sorted) order: paths
//!   or link targets longer than 100 bytes, sizes >= 8 GiB, ids >= 2^21. The
//!   PAX header itself is named `PaxHeaders/entry`, mode 0644, owner 0:0,
//!   same mtime; the ustar name/linkname fields then hold the value cut to
//!   100 bytes at a UTF-8 boundary (for readers without PAX);
//! - the archive ends with two 512-byte zero blocks.
//!
//! Nothing depends on umask, TZ, locale, directory listing order or thread
//! count. Memory is bounded: file contents stream through a 1 MiB buffer and
//! the compressor holds a few 1 MiB blocks; a layer is never buffered whole.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{bail, Context, Result};
use tar::{EntryType as TarType, Header};

use super::compress::ParallelGzipWriter;
use super::tree::{EntryKind, FileSource, FileTree, TreeEntry};
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::{Digest, HashingWriter};
use crate::oci::layout::Layout;
use crate::oci::media_type::{self, LayerCompression};

/// The default mtime when SOURCE_DATE_EPOCH is not set.
pub const DEFAULT_MTIME: u64 = 1;

const PAX_HEADER_NAME: &str = "PaxHeaders/entry";
const USTAR_NAME_LEN: usize = 100;
const MAX_OCTAL_SIZE: u64 = 8 * 1024 * 1024 * 1024; // 12-byte field
const MAX_OCTAL_ID: u32 = 2_097_152; // 8-byte field
const COPY_BUFFER: usize = 1 << 20;

/// How to write a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOptions {
    /// mtime of every entry (SOURCE_DATE_EPOCH; default 1).
    pub mtime: u64,
    /// `Gzip` (pinned, see `compress`) or `None` (plain tar). `Zstd` is
    /// refused.
    pub compression: LayerCompression,
    /// Compression threads; 0 = available parallelism. Never changes bytes.
    pub workers: usize,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mtime: DEFAULT_MTIME,
            compression: LayerCompression::Gzip,
            workers: 0,
        }
    }
}

impl LayerOptions {
    /// Defaults, with `mtime` from `$SOURCE_DATE_EPOCH` when it is set.
    pub fn from_env() -> Result<LayerOptions> {
        let value = std::env::var("SOURCE_DATE_EPOCH").ok();
        Ok(LayerOptions {
            mtime: mtime_from_source_date_epoch(value.as_deref())?,
            ..LayerOptions::default()
        })
    }

    /// The media type of layers written with these options.
    pub fn media_type(&self) -> Result<&'static str> {
        match self.compression {
            LayerCompression::Gzip => Ok(media_type::OCI_LAYER_GZIP),
            LayerCompression::None => Ok(media_type::OCI_LAYER_TAR),
            LayerCompression::Zstd => {
                bail!("zstd layers are not supported for writing; use gzip or none")
            }
        }
    }
}

/// Parses a SOURCE_DATE_EPOCH value (decimal seconds); `None` or an empty
/// value gives the default 1.
pub fn mtime_from_source_date_epoch(value: Option<&str>) -> Result<u64> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_MTIME),
        Some(text) => text.parse::<u64>().with_context(|| {
            format!("SOURCE_DATE_EPOCH={text:?} is not a number of seconds; set it to e.g. 1")
        }),
    }
}

/// A layer that was written: its digests, size and media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob bytes (compressed, or the tar itself).
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    pub media_type: String,
}

impl WrittenLayer {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.size)
    }
}

/// Where the tar stream goes after its diff_id hash.
enum Sink<W: Write> {
    Plain(BufWriter<HashingWriter<W>>),
    Gzip(Box<ParallelGzipWriter<HashingWriter<W>>>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(buf),
            Sink::Gzip(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

impl<W: Write> Sink<W> {
    fn finish(self) -> io::Result<HashingWriter<W>> {
        match self {
            Sink::Plain(w) => w.into_inner().map_err(|e| e.into_error()),
            Sink::Gzip(w) => w.finish(),
        }
    }
}

/// Writes `tree` as a layer to `out`; returns its digests.
pub fn write_layer(
    tree: &FileTree,
    options: &LayerOptions,
    out: impl Write,
) -> Result<WrittenLayer> {
    tree.validate()?;
    let media_type = options.media_type()?;
    let blob = HashingWriter::new(out);
    let sink = match options.compression {
        LayerCompression::Gzip => {
            let gzip = ParallelGzipWriter::new(blob, options.workers).context("writing layer")?;
            Sink::Gzip(Box::new(gzip))
        }
        _ => Sink::Plain(BufWriter::with_capacity(COPY_BUFFER, blob)),
    };
    let mut tar = HashingWriter::new(sink);
    let mut buffer = vec![0u8; COPY_BUFFER];
    for (path, entry) in tree.entries() {
        write_entry(&mut tar, path, entry, options.mtime, &mut buffer)
            .with_context(|| format!("writing layer entry {path}"))?;
    }
    tar.write_all(&[0u8; 1024]).context("writing layer")?;
    let (diff_id, _, sink) = tar.finish();
    let blob = sink.finish().context("writing layer")?;
    let (digest, size, mut out) = blob.finish();
    out.flush().context("writing layer")?;
    Ok(WrittenLayer {
        diff_id,
        digest,
        size,
        media_type: media_type.to_string(),
    })
}

/// Writes `tree` as a layer blob into `layout` through the layout's blob
/// writer (temp file, hashed, fsync, rename to its digest); an existing
/// identical blob is kept.
pub fn write_layer_to_layout(
    tree: &FileTree,
    options: &LayerOptions,
    layout: &Layout,
) -> Result<WrittenLayer> {
    let mut blob = layout.blob_writer()?;
    let written = write_layer(tree, options, &mut blob)?;
    let (digest, _) = blob
        .commit()
        .with_context(|| format!("storing layer blob {}", written.digest))?;
    debug_assert_eq!(digest, written.digest);
    Ok(written)
}

fn write_entry(
    tar: &mut impl Write,
    path: &str,
    entry: &TreeEntry,
    mtime: u64,
    buffer: &mut [u8],
) -> Result<()> {
    match &entry.kind {
        EntryKind::Directory => {
            let name = format!("{path}/");
            write_header(tar, &name, None, TarType::Directory, entry, 0, mtime)?;
        }
        EntryKind::Symlink { target } => {
            write_header(tar, path, Some(target), TarType::Symlink, entry, 0, mtime)?;
        }
        EntryKind::HardLink { target } => {
            write_header(tar, path, Some(target), TarType::Link, entry, 0, mtime)?;
        }
        EntryKind::File(FileSource::Bytes(bytes)) => {
            let size = bytes.len() as u64;
            write_header(tar, path, None, TarType::Regular, entry, size, mtime)?;
            tar.write_all(bytes)?;
            write_padding(tar, size)?;
        }
        EntryKind::File(FileSource::Path(source)) => {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(source)
                .with_context(|| format!("opening {}", source.display()))?;
            let size = file
                .metadata()
                .with_context(|| format!("reading metadata of {}", source.display()))?
                .len();
            write_header(tar, path, None, TarType::Regular, entry, size, mtime)?;
            copy_exact(&mut file, tar, size, buffer)
                .with_context(|| format!("reading {}", source.display()))?;
            write_padding(tar, size)?;
        }
    }
    Ok(())
}

/// Copies exactly `size` bytes; a file that shrinks or grows meanwhile is an
/// error (its header already promised `size`).
fn copy_exact(file: &mut File, out: &mut impl Write, size: u64, buffer: &mut [u8]) -> Result<()> {
    let mut left = size;
    while left > 0 {
        let want = left.min(buffer.len() as u64) as usize;
        let n = match file.read(&mut buffer[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            bail!("file shrank while being written to the layer (expected {size} bytes)");
        }
        out.write_all(&buffer[..n])?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe)? != 0 {
        bail!("file grew while being written to the layer (expected {size} bytes)");
    }
    Ok(())
}

fn write_padding(tar: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (size % 512) as usize;
    if rem != 0 {
        tar.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
}

/// The longest prefix of `s` that fits `max` bytes and ends on a char boundary.
fn cut_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One PAX record: `"<len> <key>=<value>\n"` where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    debug_assert_eq!(rec.len(), len);
    rec
}

fn write_header(
    tar: &mut impl Write,
    name: &str,
    link: Option<&str>,
    kind: TarType,
    entry: &TreeEntry,
    size: u64,
    mtime: u64,
) -> Result<()> {
    // BTreeMap: PAX records come out sorted by key.
    let mut pax: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    if name.len() > USTAR_NAME_LEN {
        pax.insert("path", name.as_bytes().to_vec());
    }
    if let Some(link) = link {
        if link.len() > USTAR_NAME_LEN {
            pax.insert("linkpath", link.as_bytes().to_vec());
        }
    }
    if size >= MAX_OCTAL_SIZE {
        pax.insert("size", size.to_string().into_bytes());
    }
    if entry.uid >= MAX_OCTAL_ID {
        pax.insert("uid", entry.uid.to_string().into_bytes());
    }
    if entry.gid >= MAX_OCTAL_ID {
        pax.insert("gid", entry.gid.to_string().into_bytes());
    }
    if !pax.is_empty() {
        let records: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let owner = TreeEntry {
            kind: EntryKind::Directory,
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        let header = ustar_header(
            PAX_HEADER_NAME,
            "",
            TarType::XHeader,
            &owner,
            records.len() as u64,
            mtime,
        );
        tar.write_all(header.as_bytes())?;
        tar.write_all(&records)?;
        write_padding(tar, records.len() as u64)?;
    }
    let mut fitted = entry.clone();
    if fitted.uid >= MAX_OCTAL_ID {
        fitted.uid = 0;
    }
    if fitted.gid >= MAX_OCTAL_ID {
        fitted.gid = 0;
    }
    let header_size = if size >= MAX_OCTAL_SIZE { 0 } else { size };
    let header = ustar_header(
        cut_utf8(name, USTAR_NAME_LEN),
        cut_utf8(link.unwrap_or(""), USTAR_NAME_LEN),
        kind,
        &fitted,
        header_size,
        mtime,
    );
    tar.write_all(header.as_bytes())?;
    Ok(())
}

/// A ustar header with every field set explicitly.
fn ustar_header(
    name: &str,
    link: &str,
    kind: TarType,
    entry: &TreeEntry,
    size: u64,
    mtime: u64,
) -> Header {
    let mut header = Header::new_ustar();
    {
        let ustar = header.as_ustar_mut().expect("new_ustar is ustar");
        ustar.name = [0; 100];
        ustar.name[..name.len()].copy_from_slice(name.as_bytes());
        ustar.linkname = [0; 100];
        ustar.linkname[..link.len()].copy_from_slice(link.as_bytes());
        ustar.uname = [0; 32];
        ustar.gname = [0; 32];
        ustar.prefix = [0; 155];
        ustar.set_device_major(0);
        ustar.set_device_minor(0);
    }
    header.set_mode(entry.mode & 0o7777);
    header.set_uid(u64::from(entry.uid));
    header.set_gid(u64::from(entry.gid));
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_entry_type(kind);
    header.set_cksum();
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tree::FileSource;

    fn bytes(b: &[u8], mode: u32) -> TreeEntry {
        TreeEntry::file(FileSource::Bytes(b.to_vec()), mode)
    }

    fn tar_of(tree: &FileTree, options: &LayerOptions) -> (Vec<u8>, WrittenLayer) {
        let mut out = Vec::new();
        let written = write_layer(tree, options, &mut out).unwrap();
        (out, written)
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"abc"), b"12 path=abc\n");
        // 98 bytes of body: 2 digits would give 100, which needs 3 digits.
        let rec = pax_record("path", &[b'a'; 91]);
        assert_eq!(rec.len(), 101);
        assert!(rec.starts_with(b"101 path="));
    }

    #[test]
    fn headers_are_explicit_and_ordered() {
        let mut tree = FileTree::new();
        tree.insert("usr/bin/tool", bytes(b"hello", 0o4755))
            .unwrap();
        tree.insert(
            "usr/bin/tool2",
            TreeEntry::hard_link("usr/bin/tool", 0o4755),
        )
        .unwrap();
        tree.insert("bin", TreeEntry::symlink("/usr/bin")).unwrap();
        let opts = LayerOptions {
            compression: LayerCompression::None,
            mtime: 1234,
            ..LayerOptions::default()
        };
        let (tar_bytes, written) = tar_of(&tree, &opts);
        assert_eq!(written.diff_id, written.digest);
        assert_eq!(written.diff_id, Digest::of_bytes(&tar_bytes));
        assert_eq!(written.media_type, media_type::OCI_LAYER_TAR);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1234);
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.uid().unwrap(), 0);
            seen.push((
                String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                h.mode().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("bin".to_string(), 0o777),
                ("usr/".to_string(), 0o755),
                ("usr/bin/".to_string(), 0o755),
                ("usr/bin/tool".to_string(), 0o4755),
                ("usr/bin/tool2".to_string(), 0o4755),
            ]
        );
        assert_eq!(tar_bytes.len() % 512, 0);
        assert!(tar_bytes[tar_bytes.len() - 1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn long_names_and_targets_use_pax_and_read_back() {
        let long_dir = "d".repeat(150);
        let long_file = format!("{long_dir}/{}", "f".repeat(200));
        let mut tree = FileTree::new();
        tree.insert(&long_file, bytes(b"x", 0o644)).unwrap();
        tree.insert("link", TreeEntry::symlink(format!("/{long_file}")))
            .unwrap();
        tree.insert("z-hard", TreeEntry::hard_link(&long_file, 0o644))
            .unwrap();
        let opts = LayerOptions {
            compression: LayerCompression::None,
            ..LayerOptions::default()
        };
        let (tar_bytes, _) = tar_of(&tree, &opts);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let got: Vec<(String, Option<String>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_str().unwrap().to_string(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_str().unwrap().to_string()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (format!("{long_dir}/"), None),
                (long_file.clone(), None),
                ("link".to_string(), Some(format!("/{long_file}"))),
                ("z-hard".to_string(), Some(long_file.clone())),
            ]
        );
    }

    #[test]
    fn large_ids_use_pax_records() {
        let mut tree = FileTree::new();
        let mut entry = bytes(b"x", 0o644);
        entry.uid = 3_000_000;
        entry.gid = 70_000;
        tree.insert("f", entry).unwrap();
        let opts = LayerOptions {
            compression: LayerCompression::None,
            ..LayerOptions::default()
        };
        let (tar_bytes, _) = tar_of(&tree, &opts);
        let record: &[u8] = b"15 uid=3000000\n";
        assert!(tar_bytes.windows(record.len()).any(|w| w == record));
        let index = crate::layer::index_layer(&tar_bytes[..], LayerCompression::None).unwrap();
        assert_eq!(index.entries[0].uid, 3_000_000);
        assert_eq!(index.entries[0].gid, 70_000);
    }

    #[test]
    fn gzip_layer_digests_are_stable_and_mtime_matters() {
        let mut tree = FileTree::new();
        tree.insert("etc/os-release", bytes(b"ID=stagex\n", 0o644))
            .unwrap();
        let a = tar_of(&tree, &LayerOptions::default());
        let b = tar_of(
            &tree,
            &LayerOptions {
                workers: 1,
                ..LayerOptions::default()
            },
        );
        assert_eq!(a, b);
        assert_eq!(a.1.digest, Digest::of_bytes(&a.0));
        assert_eq!(a.1.size, a.0.len() as u64);
        let c = tar_of(
            &tree,
            &LayerOptions {
                mtime: 2,
                ..LayerOptions::default()
            },
        );
        assert_ne!(a.1.diff_id, c.1.diff_id);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&a.0[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(Digest::of_bytes(&plain), a.1.diff_id);
    }

    #[test]
    fn source_date_epoch_parsing() {
        assert_eq!(mtime_from_source_date_epoch(None).unwrap(), 1);
        assert_eq!(mtime_from_source_date_epoch(Some("")).unwrap(), 1);
        assert_eq!(
            mtime_from_source_date_epoch(Some("1700000000")).unwrap(),
            1_700_000_000
        );
        let err = mtime_from_source_date_epoch(Some("yesterday"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
    }

    #[test]
    fn zstd_is_refused() {
        let opts = LayerOptions {
            compression: LayerCompression::Zstd,
            ..LayerOptions::default()
        };
        assert!(write_layer(&FileTree::new(), &opts, io::sink()).is_err());
    }

    #[test]
    fn layout_blob_is_stored_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("l")).unwrap();
        let mut tree = FileTree::new();
        tree.insert("a", bytes(b"a", 0o600)).unwrap();
        let w = write_layer_to_layout(&tree, &LayerOptions::default(), &layout).unwrap();
        let blob = layout.read_blob(&w.digest).unwrap();
        assert_eq!(blob.len() as u64, w.size);
        assert_eq!(w.descriptor().media_type, media_type::OCI_LAYER_GZIP);
        // Writing again keeps the one blob.
        let again = write_layer_to_layout(&tree, &LayerOptions::default(), &layout).unwrap();
        assert_eq!(again, w);
    }
}
