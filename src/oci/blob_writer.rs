//! Owns: the ONE way a blob lands on disk: a temp file in the target
//! directory, hashed while it is written, checked against the expected
//! digest (and size) when one is known, fsynced, then renamed to
//! `<dir>/<hex>`. A blob that does not match is never visible under its
//! name, and no temp file outlives a failure.
//!
//! Used by OCI layouts (and through them the store and `out/`), registry
//! pulls and the layer writer. It must not know where bytes come from or
//! what they mean.
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::digest::{Digest, HashingWriter};

/// Why a blob was not stored.
#[derive(Debug, Error)]
pub enum BlobError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("content does not match its digest: expected {expected}, got {actual} ({size} bytes); nothing was stored")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {expected} is {actual} bytes, but its descriptor declares {declared}; nothing was stored")]
    SizeMismatch {
        expected: Digest,
        declared: u64,
        actual: u64,
    },
}

/// A temp file in `dir` that will be renamed into place: created 0644 (not
/// tempfile's 0600), so what we publish is readable like any other file.
pub fn new_temp_file(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}

/// Makes a finished temp file durable and visible under `path`: fsync,
/// then rename (atomic within a file system, replacing `path`).
pub fn sync_and_rename(temp: tempfile::NamedTempFile, path: &Path) -> io::Result<()> {
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A blob being written into `dir` (e.g. `<layout>/blobs/sha256`).
pub struct BlobWriter {
    dir: PathBuf,
    out: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
    expected: Option<Digest>,
    expected_size: Option<u64>,
}

impl BlobWriter {
    /// Starts a blob in `dir` (created if missing); its name is its digest.
    pub fn new(dir: &Path) -> Result<BlobWriter, BlobError> {
        let io_err = |what| {
            move |source| BlobError::Io {
                what,
                path: dir.to_path_buf(),
                source,
            }
        };
        fs::create_dir_all(dir).map_err(io_err("creating"))?;
        let temp = new_temp_file(dir).map_err(io_err("creating a temporary file in"))?;
        Ok(BlobWriter {
            dir: dir.to_path_buf(),
            out: HashingWriter::new(BufWriter::with_capacity(1 << 20, temp)),
            expected: None,
            expected_size: None,
        })
    }

    /// The content must have this digest (and size, when given), or
    /// nothing is stored. Writing past `size` fails at once, so a hostile
    /// peer cannot fill the disk.
    pub fn expecting(mut self, digest: &Digest, size: Option<u64>) -> BlobWriter {
        self.expected = Some(digest.clone());
        self.expected_size = size;
        self
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.out.count()
    }

    /// Verifies, fsyncs and renames the blob into `<dir>/<hex>` (an
    /// existing blob of that digest is kept). Returns digest and size.
    pub fn commit(self) -> Result<(Digest, u64), BlobError> {
        let (digest, size, buffered) = self.out.finish();
        if let Some(expected) = self.expected {
            if digest != expected {
                return Err(BlobError::DigestMismatch {
                    expected,
                    actual: digest,
                    size,
                });
            }
            if let Some(declared) = self.expected_size.filter(|s| *s != size) {
                return Err(BlobError::SizeMismatch {
                    expected,
                    declared,
                    actual: size,
                });
            }
        }
        let path = self.dir.join(digest.hex());
        let io_err = |what, source| BlobError::Io {
            what,
            path: path.clone(),
            source,
        };
        let temp = buffered
            .into_inner()
            .map_err(|e| io_err("writing", e.into_error()))?;
        if path.is_file() {
            return Ok((digest, size));
        }
        sync_and_rename(temp, &path).map_err(|e| io_err("storing", e))?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let (Some(limit), Some(expected)) = (self.expected_size, &self.expected) {
            if self.out.count() + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {expected} is larger than the {limit} bytes its descriptor declares; nothing was stored"
                    ),
                ));
            }
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn stores_under_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BlobWriter::new(dir.path()).unwrap();
        w.write_all(b"hello").unwrap();
        let (digest, size) = w.commit().unwrap();
        assert_eq!((digest.clone(), size), (Digest::of_bytes(b"hello"), 5));
        assert_eq!(fs::read(dir.path().join(digest.hex())).unwrap(), b"hello");
        assert_eq!(left(dir.path()), vec![digest.hex().to_string()]);
    }

    #[test]
    fn a_mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = Digest::of_bytes(b"other");
        let mut w = BlobWriter::new(dir.path()).unwrap().expecting(&wrong, None);
        w.write_all(b"data").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&wrong.to_string()), "{err}");
        assert!(left(dir.path()).is_empty());
    }

    #[test]
    fn oversize_is_refused_while_writing_and_short_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of_bytes(b"data");
        let mut w = BlobWriter::new(dir.path())
            .unwrap()
            .expecting(&digest, Some(3));
        assert!(w.write_all(b"data").is_err());
        drop(w);
        let w = BlobWriter::new(dir.path())
            .unwrap()
            .expecting(&digest, Some(5));
        let mut w = w;
        w.write_all(b"data").unwrap();
        assert!(matches!(
            w.commit().unwrap_err(),
            BlobError::SizeMismatch { .. }
        ));
        assert!(left(dir.path()).is_empty());
    }
}
