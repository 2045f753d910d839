//! Signature stores in the containers/image "lookaside" layout:
//! `<base>/<repository path>@sha256=<hex>/signature-<N>`, N from 1, read
//! until the first missing one (a gap hides what follows).
//!
//! Owns: the ONE signature store type (`Lookaside`), a directory
//! (`file`) or an http(s)/WebDAV server (`http`, `webdav`), with the limits
//! of containers/image (128 signatures, 4 MiB each). Its read side is one
//! walk of `signature-1..N` per backend returning one `Listing` (files,
//! how the list ended, files hidden behind a gap), used by verify, the
//! pallet gate, `sigs sync`/`audit` and the writer; its write side is
//! `put_missing` and `prune` (`put`): contiguous, never overwriting, read
//! back. Every HTTP call goes through `crate::net` (client, timeouts, its
//! retry engine, its errors; `fetch`), every failure is a `StoreError`.
//! It knows nothing of OpenPGP: blobs are bytes here.
pub mod error;
pub mod fetch;
pub mod file;
pub mod http;
pub mod location;
pub mod put;
pub mod scratch;
mod webdav;

pub use error::StoreError;
pub use fetch::Validators;
pub use put::{Placed, PutReport};

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
    /// What the server said to ask again cheaply (empty on directories).
    pub validators: Validators,
}

/// What a signature location gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Blob(Vec<u8>),
    /// Larger than `MAX_SIGNATURE_BYTES` (size in bytes).
    TooLarge(u64),
    /// An HTTP 200 with an HTML page: a mirror that answers "soft 404s"
    /// (only `read`'s last file: a walk ends there, `End::SoftNotFound`).
    SoftNotFound,
    /// 304 to a CONDITIONAL request: unchanged since the validators sent
    /// (a 304 to a plain GET ends the walk with an error instead).
    NotModified,
}

/// Every file of one image in order, how the list ended, and what hides
/// behind a gap (or past the cap).
#[derive(Debug)]
pub struct Listing {
    pub files: Vec<SignatureFile>,
    pub end: End,
    /// Files that exist after a gap (or, at `End::Limit`, past the cap):
    /// readers such as skopeo never see them. Listed on directories;
    /// over http only `probe_after` finds them.
    pub hidden: Vec<SignatureFile>,
}

/// How a walk of `signature-1..` ended.
#[derive(Debug)]
pub enum End {
    /// The first missing file (404 / no such file): the normal end.
    Missing,
    /// The cap (`max_signatures`) of files read: readers stop there.
    Limit,
    /// An HTML page with status 200 at this file.
    SoftNotFound { name: String, location: String },
    /// A 401, a status other than 200/304/404 (after retries), a
    /// transport or file system failure, at `name` when one was asked.
    Failed {
        name: Option<String>,
        error: StoreError,
    },
}

impl End {
    /// True when the list is known to be complete.
    pub fn is_clean(&self) -> bool {
        matches!(self, End::Missing | End::Limit)
    }
}

impl Listing {
    /// A listing that could not be made at all.
    pub fn failed(error: StoreError) -> Listing {
        Listing {
            files: Vec::new(),
            end: End::Failed { name: None, error },
            hidden: Vec::new(),
        }
    }

    /// The cap was reached and more files exist: `hidden` are unread
    /// because of the cap, not a gap.
    pub fn capped(&self) -> bool {
        matches!(self.end, End::Limit) && !self.hidden.is_empty()
    }

    /// `signature-N` of every hidden file.
    pub fn hidden_names(&self) -> Vec<String> {
        self.hidden.iter().map(|f| f.name.clone()).collect()
    }

    /// `stagex verify`'s view: the files a reader sees (a soft 404 kept as
    /// the last one, for the report); a failure fails the read.
    pub fn for_reader(mut self) -> Result<Listing, StoreError> {
        match std::mem::replace(&mut self.end, End::Missing) {
            End::Failed { error, .. } => return Err(error),
            End::SoftNotFound { name, location } => self.files.push(SignatureFile {
                name,
                location,
                content: Fetched::SoftNotFound,
                validators: Validators::default(),
            }),
            end => self.end = end,
        }
        Ok(self)
    }
}

/// The one signature store: a directory or an http(s) (WebDAV) server.
pub enum Lookaside {
    File(file::FileLookaside),
    Http(http::HttpLookaside),
}

impl Lookaside {
    /// A store to READ: `https://...`, `http://...`, `file:///dir` or a
    /// plain directory path (`location::Location`, the one parser).
    pub fn parse(location: &str) -> Result<Lookaside, StoreError> {
        Lookaside::open(
            &location::Location::parse(location)?,
            fetch::ReadPolicy::default(),
        )
    }

    /// A store to WRITE (a mirror): credentials from the URL, the
    /// environment or `~/.netrc`; plain http on loopback only.
    pub fn parse_mirror(location: &str) -> Result<Lookaside, StoreError> {
        Lookaside::open_mirror(
            &location::Location::parse(location)?,
            fetch::ReadPolicy::default(),
        )
    }

    /// The store to read at a parsed location, its http requests under
    /// `policy` (one client per store: one connection pool, HTTP/2 where
    /// the server speaks it; one retry budget).
    pub fn open(
        location: &location::Location,
        policy: fetch::ReadPolicy,
    ) -> Result<Lookaside, StoreError> {
        Ok(match location {
            location::Location::Directory(path) => Lookaside::File(file::FileLookaside::new(path)),
            remote => Lookaside::Http(http::HttpLookaside::reader(remote, policy)?),
        })
    }

    /// The mirror to write at a parsed location, under `policy`.
    pub fn open_mirror(
        location: &location::Location,
        policy: fetch::ReadPolicy,
    ) -> Result<Lookaside, StoreError> {
        Ok(match location {
            location::Location::Directory(path) => Lookaside::File(file::FileLookaside::new(path)),
            remote => Lookaside::Http(http::HttpLookaside::writer(remote, policy)?),
        })
    }

    /// Where this store is (for messages; never with credentials).
    pub fn describe(&self) -> String {
        match self {
            Lookaside::File(f) => f.root().display().to_string(),
            Lookaside::Http(h) => h.base().to_string(),
        }
    }

    /// Reads the signatures of `repository_path` (no registry host) at
    /// `digest` as a reader sees them (`Listing::for_reader`).
    pub fn read(&self, repository_path: &str, digest: &Digest) -> Result<Listing, StoreError> {
        match self {
            Lookaside::File(f) => f.list(repository_path, digest),
            Lookaside::Http(h) => crate::net::block_on(h.walk(repository_path, digest, &[])),
        }
        .for_reader()
    }

    /// `read` of many images, in order: a directory on every core (a
    /// release is thousands of small files), http 16 images at a time;
    /// each image's files stay sequential, as the stop-at-404 rule needs.
    pub fn read_many(&self, images: &[(&str, &Digest)]) -> Vec<Result<Listing, StoreError>> {
        use futures_util::StreamExt;
        match self {
            Lookaside::File(f) => {
                use rayon::prelude::*;
                images
                    .par_iter()
                    .map(|(p, d)| f.list(p, d).for_reader())
                    .collect()
            }
            Lookaside::Http(h) => crate::net::block_on(
                futures_util::stream::iter(
                    images
                        .iter()
                        .map(|(p, d)| async move { h.walk(p, d, &[]).await.for_reader() }),
                )
                .buffered(CONCURRENT_IMAGES)
                .collect(),
            ),
        }
    }

    /// The walk of `signature-1..` of one image. `known[n-1]`, when given
    /// and not empty, makes the request for `signature-n` conditional
    /// (http; a directory is simply read).
    pub async fn list(
        &self,
        repository_path: &str,
        digest: &Digest,
        known: &[Validators],
    ) -> Listing {
        match self {
            Lookaside::File(f) => {
                let (f, repo, digest) = (f.clone(), repository_path.to_string(), digest.clone());
                off_runtime(move || f.list(&repo, &digest)).await
            }
            Lookaside::Http(h) => h.walk(repository_path, digest, known).await,
        }
    }

    /// One file, unconditionally (the bytes behind a 304): `None` when it
    /// does not exist.
    pub async fn get(
        &self,
        repository_path: &str,
        digest: &Digest,
        name: &str,
    ) -> Result<Option<SignatureFile>, StoreError> {
        if let Lookaside::Http(h) = self {
            return h
                .get_file(&h.url(repository_path, digest, name), name)
                .await;
        }
        let listing = self.list(repository_path, digest, &[]).await;
        if let End::Failed { error, .. } = listing.end {
            return Err(error);
        }
        Ok(listing.files.into_iter().find(|e| e.name == name))
    }

    /// Over http: which of the `count` files after `signature-<after>`
    /// exist (a gap cannot be listed, only probed). A directory lists
    /// them in `Listing::hidden`: nothing to probe.
    pub async fn probe_after(
        &self,
        repository_path: &str,
        digest: &Digest,
        after: u32,
        count: u32,
    ) -> Vec<SignatureFile> {
        let Lookaside::Http(h) = self else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for n in after + 1..=(after + count).min(max_signatures()) {
            let name = format!("signature-{n}");
            if let Ok(Some(file)) = h
                .get_file(&h.url(repository_path, digest, &name), &name)
                .await
            {
                found.push(file);
            }
        }
        found
    }
}

/// Images read at once by `read_many` over http.
const CONCURRENT_IMAGES: usize = 16;

/// Runs blocking file work (reads, fsyncs) on the blocking pool, so that
/// many images proceed in parallel instead of stalling the runtime.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("a signature store file task panicked")
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

    #[test]
    fn a_reader_sees_a_soft_404_as_the_last_file_and_a_failure_as_an_error() {
        let file = |name: &str| SignatureFile {
            name: name.into(),
            location: name.into(),
            content: Fetched::Blob(b"s".to_vec()),
            validators: Validators::default(),
        };
        let soft = Listing {
            files: vec![file("signature-1")],
            end: End::SoftNotFound {
                name: "signature-2".into(),
                location: "u/signature-2".into(),
            },
            hidden: Vec::new(),
        };
        let read = soft.for_reader().unwrap();
        assert!(read.end.is_clean());
        assert_eq!(read.files[1].content, Fetched::SoftNotFound);
        let failed = Listing::failed(StoreError::NothingToKeep {
            location: "x".into(),
        });
        assert!(failed.for_reader().is_err());
        let capped = Listing {
            files: vec![file("signature-1")],
            end: End::Limit,
            hidden: vec![file("signature-2")],
        };
        assert!(capped.capped());
        assert_eq!(capped.hidden_names(), ["signature-2"]);
    }
}
