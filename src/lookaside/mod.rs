//! Signature stores in the containers/image "lookaside" layout:
//! `<base>/<repository path>@sha256=<hex>/signature-<N>`, N from 1, read
//! until the first missing one (a gap hides what follows).
//!
//! Owns: reading from file:// (or a plain directory) and http(s)://, with
//! the limits of containers/image (128 signatures, 4 MiB each), and
//! contiguous, never-overwriting writes to file:// stores and WebDAV
//! mirrors (`mirror`). It knows nothing of OpenPGP: blobs are bytes here.
pub mod fetch;
pub mod file;
pub mod http;
pub mod location;
pub mod mirror;

use anyhow::Result;

use crate::oci::digest::Digest;

/// Most signatures read per image (as containers/image).
pub const MAX_SIGNATURES: u32 = 128;
/// Largest signature body accepted.
pub const MAX_SIGNATURE_BYTES: u64 = 4 * 1024 * 1024;

/// The directory (relative to the base) holding an image's signatures.
pub fn signature_dir(repository_path: &str, digest: &Digest) -> String {
    format!("{repository_path}@{}={}", digest.algorithm(), digest.hex())
}

/// One `signature-N` as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureFile {
    /// `signature-N`.
    pub name: String,
    /// Full path or URL (for messages).
    pub location: String,
    pub content: Fetched,
}

/// What a signature location gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Blob(Vec<u8>),
    /// Larger than `MAX_SIGNATURE_BYTES` (size in bytes).
    TooLarge(u64),
    /// An HTTP 200 with an HTML page: a mirror that answers "soft 404s".
    SoftNotFound,
}

/// Every signature of one image, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureSet {
    pub files: Vec<SignatureFile>,
    /// Files that exist after a gap (or past the 128 limit): readers such
    /// as skopeo never see them. Only detectable on file:// stores.
    pub hidden: Vec<String>,
}

/// A lookaside store to read signatures from.
pub enum Lookaside {
    File(file::FileLookaside),
    Http(http::HttpLookaside),
}

impl Lookaside {
    /// `https://...`, `http://...`, `file:///dir` or a plain directory path
    /// (`location::Location`, the one parser of store locations).
    pub fn parse(location: &str) -> Result<Lookaside> {
        Ok(match location::Location::parse(location)? {
            location::Location::Directory(path) => Lookaside::File(file::FileLookaside::new(path)),
            remote @ location::Location::Http { .. } => {
                Lookaside::Http(http::HttpLookaside::reader(
                    &remote,
                    crate::net::http_client()?,
                    fetch::Policy::default(),
                )?)
            }
        })
    }

    /// Reads the signatures of `repository_path` (no registry host) at `digest`.
    pub fn read(&self, repository_path: &str, digest: &Digest) -> Result<SignatureSet> {
        match self {
            Lookaside::File(f) => f.read(repository_path, digest),
            Lookaside::Http(h) => h.read(repository_path, digest),
        }
    }

    /// Reads many images' signatures, in order: a directory on every core
    /// (a release is thousands of small files), http 16 images at a time;
    /// each image's files stay sequential, as the stop-at-404 rule needs.
    pub fn read_many(&self, images: &[(&str, &Digest)]) -> Vec<Result<SignatureSet>> {
        match self {
            Lookaside::File(f) => crate::parallel::map(images, |(p, d)| f.read(p, d)),
            Lookaside::Http(h) => h.read_many(images),
        }
    }

    /// Where this store is (for messages).
    pub fn describe(&self) -> String {
        match self {
            Lookaside::File(f) => f.root().display().to_string(),
            Lookaside::Http(h) => h.base().to_string(),
        }
    }
}

/// True when a body served with 200 is an HTML page rather than a signature.
pub fn looks_like_html(content_type: Option<&str>, body: &[u8]) -> bool {
    if content_type.is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("text/html")) {
        return true;
    }
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head = &body[start..body.len().min(start + 16)];
    let lower = head.to_ascii_lowercase();
    lower.starts_with(b"<!doctype") || lower.starts_with(b"<html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_detection() {
        assert!(looks_like_html(Some("text/html; charset=utf-8"), b"\x90"));
        assert!(looks_like_html(None, b"  <!DOCTYPE html><p>"));
        assert!(looks_like_html(Some("application/octet-stream"), b"<html>"));
        assert!(!looks_like_html(
            Some("application/octet-stream"),
            b"\x90\x0d"
        ));
        let d = Digest::of_bytes(b"x");
        assert_eq!(
            signature_dir("stagex/core-x", &d),
            format!("stagex/core-x@sha256={}", d.hex())
        );
    }
}
