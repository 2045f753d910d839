//! Owns: WRITING signatures to a mirror, shared by `stagex sigs sync` and
//! `stagex publish`. A mirror is a file:// directory (or a plain path) or an
//! https:// (loopback http://) WebDAV server (nginx `dav_methods PUT`).
//!
//! `put_missing` uploads only the blobs the mirror lacks BY CONTENT, each at
//! the next free contiguous `signature-N`, never overwriting a file: on
//! WebDAV every PUT carries `If-None-Match: *` and is preceded by a HEAD
//! (nginx's dav module ignores the header), then the file is read back and
//! compared byte for byte. Directories go through `file.rs`'s atomic,
//! never-replacing `add`.
//!
//! It does not verify signatures (the caller decides what is worth
//! uploading) and draws no UI. Credentials come from the URL's userinfo,
//! `STAGEX_MIRROR_USER`/`STAGEX_MIRROR_PASSWORD`, or `~/.netrc`
//! (`lookaside::location`, the one parser of store locations); a WebDAV
//! mirror is listed by the one http walker (`lookaside::http`).
//!
//! One `Mirror` is used either through its async methods or through the
//! `*_blocking` methods, both on the process runtime of `crate::net` (the
//! HTTP connection pool belongs to the runtime that opened it).
use serde::Serialize;

use super::fetch::{self, Policy};
use super::file::FileLookaside;
use super::http::{HttpLookaside, PlainAnswer, Stop, WalkEnd};
use super::location::{Location, LocationError};
pub use super::location::{PASSWORD_ENV, USER_ENV};
use super::{max_signatures, signature_dir, Fetched, SignatureFile};
use crate::net::block_on;
use crate::oci::digest::Digest;

/// Why a mirror could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("invalid mirror {location:?}: {reason}")]
    Invalid { location: String, reason: String },
    #[error(
        "mirror {mirror} refused the request (HTTP 401) for {url}: give credentials in the URL \
         ({with_userinfo}/...), in {USER_ENV}/{PASSWORD_ENV}, or in ~/.netrc \
         (`machine HOST login USER password PASSWORD`)"
    )]
    Unauthorized {
        mirror: String,
        url: String,
        /// The mirror's URL with `USER:PASSWORD@` put in.
        with_userinfo: String,
    },
    #[error("{method} {url}: HTTP {status} (a signature mirror must answer 200/201 or 404)")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
    },
    #[error(
        "GET {url}: an HTML page with status 200 where a signature or a 404 was expected \
         (\"soft 404\"): configure the mirror to answer 404 for missing files"
    )]
    SoftNotFound { url: String },
    #[error("GET {url}: larger than the 4 MiB signature limit ({size} bytes): remove it")]
    TooLarge { url: String, size: u64 },
    #[error("{0}")]
    Transport(#[from] fetch::FetchError),
    #[error("{method} {url}: {message}")]
    Request {
        method: &'static str,
        url: String,
        message: String,
    },
    #[error(
        "PUT {url} answered {status}: the file existed and was REPLACED (another writer raced us \
         between HEAD and PUT): re-run `stagex sigs audit` on the mirror"
    )]
    Overwrote { url: String, status: u16 },
    #[error("{location}: the bytes read back differ from the bytes uploaded (a concurrent writer, or a rewriting proxy)")]
    ReadBackMismatch { location: String },
    #[error(
        "{location} already holds {cap} signatures, the cap ({}): readers ignore any more",
        super::MAX_SIGNATURES_ENV
    )]
    Full { location: String, cap: u32 },
    #[error(
        "refusing to prune {location}: no valid signature to keep, so every file would be \
         removed (a source that serves nothing valid must not empty a mirror)"
    )]
    NothingToKeep { location: String },
    #[error("{0}")]
    File(String),
}

impl From<LocationError> for MirrorError {
    fn from(e: LocationError) -> MirrorError {
        MirrorError::Invalid {
            location: e.location,
            reason: e.reason,
        }
    }
}

/// Where one blob ended up, or where it already was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placed {
    /// `signature-N`.
    pub name: String,
    /// Path or URL (without credentials).
    pub location: String,
}

/// What `put_missing` did for one image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PutReport {
    /// Blobs written now, in the order given.
    pub uploaded: Vec<Placed>,
    /// Blobs the mirror already held (same bytes).
    pub present: Vec<Placed>,
    /// The image's files on the mirror as listed before the upload, ONLY
    /// when nothing was uploaded (then it is still the mirror's state, and
    /// `prune` can reuse it). After an upload it is `None`: a write fills
    /// the first gap, which makes the files behind it visible, and those
    /// were not in the listing, so the caller must list again.
    #[serde(skip)]
    pub listing: Option<Vec<SignatureFile>>,
}

/// A signature mirror to write to.
pub enum Mirror {
    File(FileLookaside),
    WebDav(WebDav),
}

impl Mirror {
    /// `https://[user:pass@]host/base`, loopback `http://...`, `file:///dir`
    /// or a directory path.
    pub fn parse(location: &str) -> Result<Mirror, MirrorError> {
        match Location::parse(location)? {
            Location::Directory(path) => Ok(Mirror::File(FileLookaside::new(path))),
            remote @ Location::Http { .. } => {
                Ok(Mirror::WebDav(WebDav::new(&remote, Policy::default())?))
            }
        }
    }

    /// Where the mirror is (never with credentials).
    pub fn describe(&self) -> String {
        match self {
            Mirror::File(f) => f.root().display().to_string(),
            Mirror::WebDav(w) => w.base().to_string(),
        }
    }

    /// The signatures the mirror serves for an image: `signature-1..` until
    /// the first missing one.
    pub async fn existing(
        &self,
        repository_path: &str,
        digest: &Digest,
    ) -> Result<Vec<SignatureFile>, MirrorError> {
        match self {
            Mirror::File(f) => {
                let (f, repo, digest) = (f.clone(), repository_path.to_string(), digest.clone());
                off_runtime(move || read_file(&f, &repo, &digest)).await
            }
            Mirror::WebDav(w) => w.existing(repository_path, digest).await,
        }
    }

    /// Uploads every blob the mirror lacks (by content), contiguously.
    pub async fn put_missing(
        &self,
        repository_path: &str,
        digest: &Digest,
        blobs: &[Vec<u8>],
    ) -> Result<PutReport, MirrorError> {
        match self {
            Mirror::File(f) => {
                let (f, repo, digest) = (f.clone(), repository_path.to_string(), digest.clone());
                let blobs = blobs.to_vec();
                off_runtime(move || put_missing_file(&f, &repo, &digest, &blobs)).await
            }
            Mirror::WebDav(w) => w.put_missing(repository_path, digest, blobs).await,
        }
    }

    /// Removes the image's signatures whose bytes are not in `keep` and
    /// renumbers the rest contiguously (in order, never replacing a file);
    /// returns what was removed. `existing` is the image's CURRENT listing
    /// on this mirror (`existing`, or `PutReport::listing` of an upload
    /// that wrote nothing). An empty `keep` is refused: it would empty the
    /// image (a source that serves nothing valid must not empty a mirror).
    /// Only `stagex sigs sync --prune` calls it.
    pub async fn prune(
        &self,
        repository_path: &str,
        digest: &Digest,
        existing: &[SignatureFile],
        keep: &[&[u8]],
    ) -> Result<Vec<Placed>, MirrorError> {
        if keep.is_empty() {
            return Err(MirrorError::NothingToKeep {
                location: format!(
                    "{}/{}",
                    self.describe(),
                    signature_dir(repository_path, digest)
                ),
            });
        }
        let doomed: Vec<&SignatureFile> = existing
            .iter()
            .filter(|f| !matches!(&f.content, Fetched::Blob(b) if keep.contains(&b.as_slice())))
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let removed: Vec<Placed> = doomed
            .iter()
            .map(|f| Placed {
                name: f.name.clone(),
                location: f.location.clone(),
            })
            .collect();
        let names: Vec<String> = removed.iter().map(|p| p.name.clone()).collect();
        let visible: Vec<String> = existing.iter().map(|f| f.name.clone()).collect();
        match self {
            Mirror::File(f) => {
                let (f, repo, digest) = (f.clone(), repository_path.to_string(), digest.clone());
                off_runtime(move || {
                    f.remove_and_compact(&repo, &digest, &visible, &names)
                        .map_err(|e| MirrorError::File(format!("{e:#}")))
                })
                .await?;
            }
            Mirror::WebDav(w) => {
                w.remove_and_compact(repository_path, digest, &visible, &names)
                    .await?;
            }
        }
        Ok(removed)
    }

    /// The same mirror with another request policy (timeouts, retries).
    pub fn with_policy(self, policy: Policy) -> Mirror {
        match self {
            Mirror::WebDav(w) => Mirror::WebDav(w.with_policy(policy)),
            file => file,
        }
    }

    /// `existing` for callers without a runtime.
    pub fn existing_blocking(
        &self,
        repository_path: &str,
        digest: &Digest,
    ) -> Result<Vec<SignatureFile>, MirrorError> {
        block_on(self.existing(repository_path, digest))
    }

    /// `put_missing` for callers without a runtime.
    pub fn put_missing_blocking(
        &self,
        repository_path: &str,
        digest: &Digest,
        blobs: &[Vec<u8>],
    ) -> Result<PutReport, MirrorError> {
        block_on(self.put_missing(repository_path, digest, blobs))
    }
}

/// Runs blocking file work (fsyncs) on the blocking pool, so that many
/// images' writes proceed in parallel instead of stalling the runtime.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("a mirror file task panicked")
}

/// What to do with one blob of `put_missing`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// The mirror already holds these bytes.
    Present(Placed),
    /// Upload it.
    Write,
    /// Same bytes as the earlier blob at this index.
    SameAs(usize),
}

/// Decides, by content, which blobs the mirror lacks. Pure.
fn plan(existing: &[SignatureFile], blobs: &[Vec<u8>]) -> Vec<Step> {
    blobs
        .iter()
        .enumerate()
        .map(|(i, blob)| {
            if let Some(found) = existing.iter().find_map(|f| match &f.content {
                Fetched::Blob(b) if b == blob => Some(Placed {
                    name: f.name.clone(),
                    location: f.location.clone(),
                }),
                _ => None,
            }) {
                Step::Present(found)
            } else if let Some(first) = blobs[..i].iter().position(|b| b == blob) {
                Step::SameAs(first)
            } else {
                Step::Write
            }
        })
        .collect()
}

/// Turns a plan, the listing it was made from and the places written
/// into the report.
fn report_of(
    steps: Vec<Step>,
    existing: Vec<SignatureFile>,
    written: Vec<Option<Placed>>,
) -> PutReport {
    let placed_of = |i: usize| match &steps[i] {
        Step::Present(p) => Some(p.clone()),
        _ => written[i].clone(),
    };
    let nothing_written = written.iter().all(Option::is_none);
    let mut report = PutReport {
        listing: nothing_written.then_some(existing),
        ..PutReport::default()
    };
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Present(p) => report.present.push(p.clone()),
            Step::SameAs(first) => report.present.extend(placed_of(*first)),
            Step::Write => report.uploaded.extend(written[i].clone()),
        }
    }
    report
}

/// N of `signature-N`.
fn slot_number(name: &str) -> Option<u32> {
    name.strip_prefix("signature-")?.parse().ok()
}

fn read_file(
    store: &FileLookaside,
    repository_path: &str,
    digest: &Digest,
) -> Result<Vec<SignatureFile>, MirrorError> {
    store
        .read(repository_path, digest)
        .map(|s| s.files)
        .map_err(|e| MirrorError::File(format!("{e:#}")))
}

/// `put_missing` on a directory (blocking): the plan is made and carried
/// out under the image's lock (`FileLookaside::update`), so concurrent
/// writers of the same blobs add each once.
fn put_missing_file(
    store: &FileLookaside,
    repository_path: &str,
    digest: &Digest,
    blobs: &[Vec<u8>],
) -> Result<PutReport, MirrorError> {
    let mut planned = None;
    let placed = store
        .update(repository_path, digest, |set| {
            let steps = plan(&set.files, blobs);
            let writes = steps
                .iter()
                .zip(blobs)
                .filter(|(step, _)| **step == Step::Write)
                .map(|(_, blob)| blob.clone())
                .collect();
            planned = Some((steps, set.files.clone()));
            Ok(writes)
        })
        .map_err(|e| MirrorError::File(format!("{e:#}")))?;
    let (steps, existing) = planned.expect("update asks for the plan before writing");
    let mut placed = placed.into_iter();
    let mut written = vec![None; blobs.len()];
    for (i, step) in steps.iter().enumerate() {
        if *step == Step::Write {
            let (n, path) = placed.next().expect("one placement per write");
            written[i] = Some(read_back(n, &path, &blobs[i])?);
        }
    }
    Ok(report_of(steps, existing, written))
}

/// Reads a file just added back and compares it with what was written.
fn read_back(n: u32, path: &std::path::Path, blob: &[u8]) -> Result<Placed, MirrorError> {
    let location = path.display().to_string();
    let back = std::fs::read(path)
        .map_err(|e| MirrorError::File(format!("reading back {location}: {e}")))?;
    if back != blob {
        return Err(MirrorError::ReadBackMismatch { location });
    }
    Ok(Placed {
        name: format!("signature-{n}"),
        location,
    })
}

/// A WebDAV mirror (PUT, HEAD, GET, MKCOL).
pub struct WebDav {
    /// Base URL (without credentials), the writer's credentials, client
    /// and policy; also the reader that lists the mirror.
    store: HttpLookaside,
}

impl WebDav {
    /// A WebDAV mirror at a parsed http(s) location, with credentials from
    /// the URL, the environment or ~/.netrc; plain http is refused beyond
    /// loopback (passwords).
    pub fn new(location: &Location, policy: Policy) -> Result<WebDav, MirrorError> {
        let invalid = |reason: String| MirrorError::Invalid {
            location: location.describe(),
            reason,
        };
        if let Location::Http {
            https: false,
            host_port,
            ..
        } = location
        {
            if !crate::registry::is_loopback(host_port) {
                return Err(invalid(
                    "plain http is allowed on loopback only (credentials and signatures travel in clear): use https://".into(),
                ));
            }
        }
        let client = crate::net::http_client().map_err(|e| invalid(e.to_string()))?;
        Ok(WebDav {
            store: HttpLookaside::writer(location, client, policy)?,
        })
    }

    /// Replaces the request policy (timeouts, retries).
    pub fn with_policy(self, policy: Policy) -> WebDav {
        WebDav {
            store: self.store.with_policy(policy),
        }
    }

    pub fn base(&self) -> &str {
        self.store.base()
    }

    fn url(&self, repository_path: &str, digest: &Digest, name: &str) -> String {
        self.store.url(repository_path, digest, name)
    }

    /// The mirror's files through the one http walker: anything but a
    /// signature or the closing 404 is an error (a mirror must be clean
    /// before it is written to).
    async fn existing(
        &self,
        repository_path: &str,
        digest: &Digest,
    ) -> Result<Vec<SignatureFile>, MirrorError> {
        let walk = self.store.walk_plain(repository_path, digest).await;
        for file in &walk.files {
            match &file.content {
                Fetched::Blob(_) => {}
                Fetched::TooLarge(size) => {
                    return Err(MirrorError::TooLarge {
                        url: file.location.clone(),
                        size: *size,
                    })
                }
                Fetched::SoftNotFound => {
                    return Err(MirrorError::SoftNotFound {
                        url: file.location.clone(),
                    })
                }
            }
        }
        match walk.end {
            WalkEnd::Missing | WalkEnd::Limit => Ok(walk.files),
            WalkEnd::Stopped { url, stop, .. } => Err(self.stopped(url, stop)),
            WalkEnd::Failed(e) => Err(e.into()),
        }
    }

    /// What an answer that stops a listing means to a mirror writer.
    fn stopped(&self, url: String, stop: Stop) -> MirrorError {
        match stop {
            Stop::Unauthorized => self.unauthorized(&url),
            Stop::SoftNotFound => MirrorError::SoftNotFound { url },
            Stop::Status(status) => MirrorError::Status {
                method: "GET",
                url,
                status,
            },
        }
    }

    async fn put_missing(
        &self,
        repository_path: &str,
        digest: &Digest,
        blobs: &[Vec<u8>],
    ) -> Result<PutReport, MirrorError> {
        let existing = self.existing(repository_path, digest).await?;
        let steps = plan(&existing, blobs);
        let mut next = existing.len() as u32 + 1;
        let mut written = vec![None; blobs.len()];
        for (i, step) in steps.iter().enumerate() {
            if *step == Step::Write {
                let placed = self
                    .put_new(repository_path, digest, &blobs[i], next)
                    .await?;
                next = slot_number(&placed.name).map_or(next, |n| n + 1);
                written[i] = Some(placed);
            }
        }
        Ok(report_of(steps, existing, written))
    }

    /// GET (the read-back): `Some(bytes)`, `None` on 404, an error on
    /// anything else, classified as the walk classifies it.
    async fn get(&self, url: &str) -> Result<Option<Vec<u8>>, MirrorError> {
        match self.store.get_plain(url).await? {
            PlainAnswer::File(Fetched::Blob(body)) => Ok(Some(body)),
            PlainAnswer::File(Fetched::TooLarge(size)) => Err(MirrorError::TooLarge {
                url: url.into(),
                size,
            }),
            PlainAnswer::File(Fetched::SoftNotFound) => {
                Err(MirrorError::SoftNotFound { url: url.into() })
            }
            PlainAnswer::Missing => Ok(None),
            PlainAnswer::Stop(stop) => Err(self.stopped(url.into(), stop)),
        }
    }

    fn unauthorized(&self, url: &str) -> MirrorError {
        MirrorError::Unauthorized {
            mirror: self.base().to_string(),
            url: url.to_string(),
            with_userinfo: super::location::with_placeholder_userinfo(self.base()),
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self
            .store
            .client()
            .request(method, url)
            .timeout(self.store.policy().timeout);
        match self.store.auth() {
            Some(c) => request.basic_auth(&c.user, Some(&c.password)),
            None => request,
        }
    }

    async fn send(
        &self,
        method: &'static str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<u16, MirrorError> {
        let response = request.send().await.map_err(|e| MirrorError::Request {
            method,
            url: url.to_string(),
            message: fetch::describe(&e),
        })?;
        match response.status().as_u16() {
            401 => Err(self.unauthorized(url)),
            status => Ok(status),
        }
    }

    /// Writes `blob` at the first free slot from `from` on: HEAD (taken ->
    /// next), PUT with If-None-Match: * (412 -> next; 409 -> MKCOL the
    /// parents once), then read back and compare.
    async fn put_new(
        &self,
        repository_path: &str,
        digest: &Digest,
        blob: &[u8],
        from: u32,
    ) -> Result<Placed, MirrorError> {
        let mut n = from.max(1);
        let mut made_collections = false;
        loop {
            if n > max_signatures() {
                return Err(MirrorError::Full {
                    location: self.url(repository_path, digest, ""),
                    cap: max_signatures(),
                });
            }
            let name = format!("signature-{n}");
            let url = self.url(repository_path, digest, &name);
            match self
                .send("HEAD", &url, self.request(reqwest::Method::HEAD, &url))
                .await?
            {
                404 => {}
                200..=299 => {
                    n += 1;
                    continue;
                }
                status => {
                    return Err(MirrorError::Status {
                        method: "HEAD",
                        url,
                        status,
                    })
                }
            }
            let put = self
                .request(reqwest::Method::PUT, &url)
                .header(reqwest::header::IF_NONE_MATCH, "*")
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(blob.to_vec());
            match self.send("PUT", &url, put).await? {
                201 => {}
                412 => {
                    n += 1;
                    continue;
                }
                409 if !made_collections => {
                    self.make_collections(repository_path, digest).await?;
                    made_collections = true;
                    continue;
                }
                status @ (200 | 204) => return Err(MirrorError::Overwrote { url, status }),
                status => {
                    return Err(MirrorError::Status {
                        method: "PUT",
                        url,
                        status,
                    })
                }
            }
            if self.get(&url).await?.as_deref() != Some(blob) {
                return Err(MirrorError::ReadBackMismatch { location: url });
            }
            return Ok(Placed {
                name,
                location: url,
            });
        }
    }

    /// DELETE `remove`, then MOVE the other `visible` files down to a
    /// contiguous 1..k (`Overwrite: F`: never replacing a file).
    async fn remove_and_compact(
        &self,
        repository_path: &str,
        digest: &Digest,
        visible: &[String],
        remove: &[String],
    ) -> Result<(), MirrorError> {
        for name in remove {
            let url = self.url(repository_path, digest, name);
            match self
                .send("DELETE", &url, self.request(reqwest::Method::DELETE, &url))
                .await?
            {
                200..=299 | 404 => {}
                status => {
                    return Err(MirrorError::Status {
                        method: "DELETE",
                        url,
                        status,
                    })
                }
            }
        }
        let kept = visible.iter().filter(|n| !remove.contains(n));
        for (i, name) in kept.enumerate() {
            let target = format!("signature-{}", i + 1);
            if *name == target {
                continue;
            }
            let url = self.url(repository_path, digest, name);
            let destination = self.url(repository_path, digest, &target);
            let r#move = reqwest::Method::from_bytes(b"MOVE").expect("valid method");
            let request = self
                .request(r#move, &url)
                .header("Destination", &destination)
                .header("Overwrite", "F");
            match self.send("MOVE", &url, request).await? {
                200..=299 => {}
                status => {
                    return Err(MirrorError::Status {
                        method: "MOVE",
                        url,
                        status,
                    })
                }
            }
        }
        Ok(())
    }

    /// MKCOL every directory of the image's path (for WebDAV servers that
    /// do not create parents on PUT; 405 means "exists").
    async fn make_collections(
        &self,
        repository_path: &str,
        digest: &Digest,
    ) -> Result<(), MirrorError> {
        let dir = signature_dir(repository_path, digest);
        let mut path = String::new();
        for part in dir.split('/') {
            path = format!("{path}/{part}");
            let url = format!("{}{path}/", self.base());
            let mkcol = reqwest::Method::from_bytes(b"MKCOL").expect("valid method");
            match self.send("MKCOL", &url, self.request(mkcol, &url)).await? {
                200..=299 | 405 => {}
                status => {
                    return Err(MirrorError::Status {
                        method: "MKCOL",
                        url,
                        status,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_and_http_is_loopback_only() {
        let webdav = |text: &str| WebDav::new(&Location::parse(text).unwrap(), Policy::default());
        let w = webdav("https://u:p%40ss@127.0.0.1:8443/sigs/").unwrap();
        assert_eq!(w.base(), "https://127.0.0.1:8443/sigs");
        let c = w.store.auth().cloned().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p@ss"));
        assert!(webdav("http://127.0.0.1:1/x").is_ok());
        let err = webdav("http://u:pw@mirror.example/x")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("loopback") && !err.contains("pw@"), "{err}");
        assert!(Mirror::parse("ftp://x").is_err());
        assert!(matches!(Mirror::parse("/srv/m"), Ok(Mirror::File(_))));
    }

    #[test]
    fn a_location_read_from_keeps_its_credentials_out_of_its_printed_url() {
        let location = Location::parse("https://reader:s%3Acret@127.0.0.1:8443/sigs/").unwrap();
        let (c, _) = location.reader_credentials_and_source().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("reader", "s:cret"));
        let lookaside = HttpLookaside::reader(
            &location,
            crate::net::http_client().unwrap(),
            Policy::default(),
        )
        .unwrap();
        assert_eq!(lookaside.base(), "https://127.0.0.1:8443/sigs");
        assert_eq!(lookaside.auth(), Some(&c));
    }

    #[test]
    fn file_mirror_uploads_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::parse(dir.path().to_str().unwrap()).unwrap();
        let d = Digest::of_bytes(b"m");
        let first = mirror
            .put_missing_blocking("stagex/x", &d, &[b"a".to_vec(), b"b".to_vec()])
            .unwrap();
        assert_eq!(first.uploaded.len(), 2);
        assert_eq!(first.uploaded[1].name, "signature-2");
        let again = mirror
            .put_missing_blocking(
                "stagex/x",
                &d,
                &[b"b".to_vec(), b"c".to_vec(), b"c".to_vec()],
            )
            .unwrap();
        assert_eq!(again.present.len(), 2);
        assert_eq!(again.present[0].name, "signature-2");
        assert_eq!(again.uploaded.len(), 1);
        assert_eq!(again.uploaded[0].name, "signature-3");
        let listed = mirror.existing_blocking("stagex/x", &d).unwrap();
        let names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["signature-1", "signature-2", "signature-3"]);
        // Something was written: no listing to reuse.
        assert_eq!(again.listing, None);
        // Nothing to write: the listing made before is still current.
        let idle = mirror
            .put_missing_blocking("stagex/x", &d, &[b"a".to_vec()])
            .unwrap();
        assert_eq!(idle.listing.as_deref(), Some(&listed[..]));
        // `prune` refuses to remove everything.
        let err = block_on(mirror.prune("stagex/x", &d, &listed, &[])).unwrap_err();
        assert!(matches!(err, MirrorError::NothingToKeep { .. }), "{err}");
        assert_eq!(mirror.existing_blocking("stagex/x", &d).unwrap(), listed);
        // `prune` from the listing: "a" goes, the rest moves down.
        let removed = block_on(mirror.prune("stagex/x", &d, &listed, &[b"b", b"c"])).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].name, "signature-1");
        let left: Vec<Fetched> = mirror
            .existing_blocking("stagex/x", &d)
            .unwrap()
            .into_iter()
            .map(|f| f.content)
            .collect();
        assert_eq!(
            left,
            [Fetched::Blob(b"b".to_vec()), Fetched::Blob(b"c".to_vec())]
        );
    }

    #[test]
    fn an_upload_into_a_gap_leaves_no_listing_to_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::parse(dir.path().to_str().unwrap()).unwrap();
        let d = Digest::of_bytes(b"gap");
        let Mirror::File(store) = &mirror else {
            panic!("not a directory mirror");
        };
        let image = store.image_dir("stagex/x", &d);
        std::fs::create_dir_all(&image).unwrap();
        std::fs::write(image.join("signature-1"), b"a").unwrap();
        std::fs::write(image.join("signature-3"), b"c").unwrap();
        let put = mirror
            .put_missing_blocking("stagex/x", &d, &[b"b".to_vec()])
            .unwrap();
        assert_eq!(put.uploaded[0].name, "signature-2");
        // The upload filled the gap: signature-3 is visible now, and only
        // a new listing shows it.
        assert_eq!(put.listing, None);
        let names: Vec<String> = mirror
            .existing_blocking("stagex/x", &d)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["signature-1", "signature-2", "signature-3"]);
    }
}
