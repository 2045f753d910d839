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
pub mod scratch;

use anyhow::Result;

use crate::oci::digest::Digest;

/// Most signatures read per image by default (as containers/image).
pub const DEFAULT_MAX_SIGNATURES: u32 = 128;
/// Environment variable that changes how many signatures per image are
/// read and written (readers such as skopeo stop at 128 whatever it says).
pub const MAX_SIGNATURES_ENV: &str = "STAGEX_MAX_SIGNATURES";
/// The largest cap `STAGEX_MAX_SIGNATURES` may set.
const CAP_LIMIT: u32 = 100_000;
/// Largest signature body accepted.
pub const MAX_SIGNATURE_BYTES: u64 = 4 * 1024 * 1024;

/// A `STAGEX_MAX_SIGNATURES` that is not a number in 1..=100000.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_SIGNATURES_ENV}={value:?}: not a number of signatures per image from 1 to {CAP_LIMIT} (unset it for the default, {DEFAULT_MAX_SIGNATURES})")]
pub struct CapSettingError {
    pub value: String,
}

/// The cap as set in the environment (the default when unset); commands
/// call it first so that a bad value is one clear error.
pub fn signature_cap_setting() -> Result<u32, CapSettingError> {
    match std::env::var(MAX_SIGNATURES_ENV) {
        Err(_) => Ok(DEFAULT_MAX_SIGNATURES),
        Ok(value) => value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=CAP_LIMIT).contains(n))
            .ok_or(CapSettingError { value }),
    }
}

/// Most `signature-N` files read (and written) per image: the setting,
/// read once per process (an invalid value counts as unset here; the
/// commands reject it up front through `signature_cap_setting`).
pub fn max_signatures() -> u32 {
    static CAP: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| signature_cap_setting().unwrap_or(DEFAULT_MAX_SIGNATURES))
}

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
    /// Files that exist after a gap (or, when `capped`, past the cap):
    /// readers such as skopeo never see them. Only detectable on file://
    /// stores.
    pub hidden: Vec<String>,
    /// The cap (`max_signatures`) was reached and more files exist: the
    /// `hidden` ones are unread because of the cap, not a gap.
    pub capped: bool,
}

/// A lookaside store to read signatures from: `read` for verify and the
/// pallet gate, `list`/`get`/`probe_after` (`sigs::source`) for sync and
/// audit.
pub enum Lookaside {
    File(file::FileLookaside),
    Http(http::HttpLookaside),
}

impl Lookaside {
    /// `https://...`, `http://...`, `file:///dir` or a plain directory path
    /// (`location::Location`, the one parser of store locations).
    pub fn parse(location: &str) -> Result<Lookaside> {
        Lookaside::open(
            &location::Location::parse(location)?,
            fetch::Policy::default(),
        )
    }

    /// The store at a parsed location, its http requests under `policy`
    /// (one client per store: one connection pool, HTTP/2 where the
    /// server speaks it).
    pub fn open(location: &location::Location, policy: fetch::Policy) -> Result<Lookaside> {
        Ok(match location {
            location::Location::Directory(path) => Lookaside::File(file::FileLookaside::new(path)),
            remote @ location::Location::Http { .. } => Lookaside::Http(
                http::HttpLookaside::reader(remote, crate::net::http_client()?, policy)?,
            ),
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
            Lookaside::File(f) => {
                use rayon::prelude::*;
                images.par_iter().map(|(p, d)| f.read(p, d)).collect()
            }
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
