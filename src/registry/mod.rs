//! The ONE registry client. Owns: the OCI distribution requests (manifests
//! by tag or digest as exact bytes, blobs streamed and verified against
//! their digests, existence checks, cross-repository mounts, chunked
//! uploads through oci-client, manifests pushed as exact bytes), run on the
//! shared runtime with the shared timeouts of `crate::net`, and the answers
//! turned into `net::RegistryError` once. Credentials come from `auth`;
//! bearer tokens from oci-client's token exchange. It knows nothing about
//! pallets or packages, and draws nothing (progress is reported as events).
pub mod auth;
pub mod push;

use std::fs::File;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use crate::net::{self, NetConfig, RegistryError};
use crate::oci::blob_writer::BlobError;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::media_type;
use crate::oci::reference::DockerReference;
use crate::progress::{Progress, Task};

pub use crate::net::{is_loopback, uses_tls, TLS_HOSTS_ENV};

/// Largest manifest accepted (containers/image uses the same 4 MiB cap).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Largest error body read (for its OCI error codes).
const MAX_ERROR_BYTES: usize = 64 << 10;

/// Chunk size for streamed uploads (constant memory).
const CHUNK: usize = 4 << 20;

/// An upload chunk must be acknowledged within this many idle timeouts
/// (reqwest counts the idle timer from the start of the request, body
/// included).
const UPLOAD_FACTOR: u32 = 4;

/// Manifest media types we accept when pulling.
const ACCEPTED: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
];

/// Splits `host[:port]/repo/path` into `(host, repo)`; a first component
/// without '.', ':' or `localhost` is not a host (error: be explicit).
pub fn split_repository(text: &str) -> Result<(String, String)> {
    let reference = DockerReference::parse_explicit(text)?;
    if reference.tag.is_some() || reference.digest.is_some() {
        anyhow::bail!("{text:?}: expected HOST[:PORT]/REPOSITORY without a tag or digest");
    }
    Ok((reference.domain, reference.path))
}

/// What a push of one blob did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had it in the target repository.
    Existed,
    /// Mounted from another repository on the same registry.
    Mounted,
    /// Uploaded (this many bytes).
    Uploaded(u64),
}

/// The answer to a mount request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mount {
    /// 201: the blob is now in the target repository.
    Mounted,
    /// 202: the registry did not mount it (it opened an upload instead):
    /// the caller uploads.
    NotMounted,
}

/// A client for one registry host.
pub struct RegistryClient {
    host: String,
    scheme: &'static str,
    http: reqwest::Client,
    /// Token exchange and chunked uploads.
    oci: Client,
    auth: RegistryAuth,
    config: NetConfig,
}

impl RegistryClient {
    /// A client for `host` (`127.0.0.1:5000`, `registry.example`) with the
    /// process-wide network configuration.
    pub fn new(host: &str) -> Result<RegistryClient, RegistryError> {
        let config = net::config()?;
        RegistryClient::build(host, config.clone(), net::http_client()?)
    }

    /// A client with its own configuration (e.g. shorter timeouts).
    pub fn with_config(host: &str, config: NetConfig) -> Result<RegistryClient, RegistryError> {
        let http = config.http_client()?;
        RegistryClient::build(host, config, http)
    }

    fn build(
        host: &str,
        config: NetConfig,
        http: reqwest::Client,
    ) -> Result<RegistryClient, RegistryError> {
        let mut oci_config = config.oci_client_config(host);
        oci_config.read_timeout = Some(config.idle * UPLOAD_FACTOR);
        let auth = match auth::credentials(host).map_err(|e| RegistryError::Local {
            what: format!("credentials for {host}"),
            detail: format!("{e:#}"),
        })? {
            Some((user, pass)) => RegistryAuth::Basic(user, pass),
            None => RegistryAuth::Anonymous,
        };
        Ok(RegistryClient {
            host: host.to_string(),
            scheme: if uses_tls(host) { "https" } else { "http" },
            http,
            oci: Client::new(oci_config),
            auth,
            config,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// `HOST/REPO` + `what` (for messages).
    fn url(&self, repo: &str, what: &str) -> String {
        format!("{}/{repo}{what}", self.host)
    }

    fn endpoint(&self, repo: &str, path: &str) -> String {
        format!("{}://{}/v2/{repo}/{path}", self.scheme, self.host)
    }

    /// The Authorization header for `repo`: a bearer token from the
    /// registry's token service, else basic credentials, else none.
    async fn authorize(
        &self,
        repo: &str,
        operation: RegistryOperation,
        what: &str,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let reference = Reference::with_tag(self.host.clone(), repo.to_string(), "latest".into());
        let token = net::within(self.config.document, &self.host, what, async {
            self.oci
                .auth(&reference, &self.auth, operation)
                .await
                .map_err(|e| RegistryError::from_oci(&self.host, what, e, &self.config))
        })
        .await?;
        let value = match (token, &self.auth) {
            (Some(token), _) => format!("Bearer {token}"),
            (None, RegistryAuth::Basic(user, pass)) => {
                use base64::Engine;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                format!("Basic {encoded}")
            }
            (None, _) => return Ok(None),
        };
        HeaderValue::from_str(&value)
            .map(Some)
            .map_err(|_| RegistryError::Local {
                what: what.to_string(),
                detail: "credentials are not a valid HTTP header value".into(),
            })
    }

    /// One small exchange under the document deadline: credentials for
    /// `operation` on `repo`, `request` sent and its status checked
    /// against `expected`, then `read` of the response.
    fn small<T, F>(
        &self,
        repo: &str,
        operation: RegistryOperation,
        what: &str,
        request: reqwest::RequestBuilder,
        expected: &[StatusCode],
        read: impl FnOnce(reqwest::Response) -> F,
    ) -> Result<T, RegistryError>
    where
        F: std::future::Future<Output = Result<T, RegistryError>>,
    {
        net::block_on(net::within(self.config.document, &self.host, what, async {
            let authorization = self.authorize(repo, operation, what).await?;
            let response = self.send(request, authorization, expected, what).await?;
            read(response).await
        }))
    }

    /// Sends `request` (with credentials); the response if its status is
    /// one of `expected`, else the classified error.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        authorization: Option<HeaderValue>,
        expected: &[StatusCode],
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let request = match authorization {
            Some(value) => request.header(AUTHORIZATION, value),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport(what, &e))?;
        if expected.contains(&response.status()) {
            return Ok(response);
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = self
            .read_capped(response, MAX_ERROR_BYTES, what)
            .await
            .unwrap_or_default();
        Err(RegistryError::from_status(
            &self.host, what, status, &headers, &body,
        ))
    }

    fn transport(&self, what: &str, error: &reqwest::Error) -> RegistryError {
        RegistryError::from_reqwest(&self.host, what, error, &self.config)
    }

    /// The body, refused past `limit` bytes without reading further.
    async fn read_capped(
        &self,
        response: reqwest::Response,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(what, &e))?;
            if body.len() + chunk.len() > limit {
                return Err(RegistryError::TooLarge {
                    host: self.host.clone(),
                    what: what.to_string(),
                    limit: limit as u64,
                    detail: format!(
                        "over the {limit}-byte limit (as in containers/image); not read further"
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Pulls a manifest or index by tag or digest: exact bytes and their
    /// digest. A digest reference is checked against the bytes.
    pub fn pull_manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
    ) -> Result<(Vec<u8>, Digest), RegistryError> {
        let what = format!("manifest {}", self.url(repo, &sep(tag_or_digest)));
        let request = self
            .http
            .get(self.endpoint(repo, &format!("manifests/{tag_or_digest}")))
            .header(ACCEPT, ACCEPTED.join(", "));
        let bytes = self.small(
            repo,
            RegistryOperation::Pull,
            &what,
            request,
            &[StatusCode::OK],
            |response| self.read_capped(response, MAX_MANIFEST_BYTES, &what),
        )?;
        let digest = Digest::of_bytes(&bytes);
        if tag_or_digest.starts_with("sha256:") && digest.to_string() != tag_or_digest {
            return Err(RegistryError::DigestMismatch {
                host: self.host.clone(),
                what,
                expected: tag_or_digest.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok((bytes, digest))
    }

    /// Streams a blob into `layout` (no-op if present), verified against
    /// the descriptor's digest and size; nothing is stored on mismatch.
    /// Only silence (the idle timeout) ends a slow transfer.
    pub fn pull_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let digest = &descriptor.digest;
        if layout.has_blob(digest) {
            return Ok(());
        }
        let what = format!("blob {}", self.url(repo, &format!("/blobs/{digest}")));
        let local_error = |e: &dyn std::fmt::Display| RegistryError::Local {
            what: what.clone(),
            detail: e.to_string(),
        };
        let mut writer = layout
            .blob_writer()
            .map_err(|e| local_error(&format!("{e:#}")))?
            .expecting(digest, Some(descriptor.size));
        net::block_on(async {
            let authorization = self.authorize(repo, RegistryOperation::Pull, &what).await?;
            let request = self
                .http
                .get(self.endpoint(repo, &format!("blobs/{digest}")));
            let response = self
                .send(request, authorization, &[StatusCode::OK], &what)
                .await?;
            let task = Task::start(progress, &digest.to_string(), &what, Some(descriptor.size));
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.transport(&what, &e))?;
                // A hostile registry must not fill the disk: stop at the
                // descriptor's size instead of trusting the stream's end.
                if writer.count() + chunk.len() as u64 > descriptor.size {
                    return Err(RegistryError::TooLarge {
                        host: self.host.clone(),
                        what: what.clone(),
                        limit: descriptor.size,
                        detail: format!(
                            "the registry sent more than the {} bytes the descriptor declares; nothing stored",
                            descriptor.size
                        ),
                    });
                }
                writer.write_all(&chunk).map_err(|e| local_error(&e))?;
                task.advance(chunk.len() as u64);
            }
            Ok(())
        })?;
        writer.commit().map_err(|e| match e {
            BlobError::Io { .. } => local_error(&e),
            mismatch => RegistryError::DigestMismatch {
                host: self.host.clone(),
                what: what.clone(),
                expected: format!("{digest} ({} bytes)", descriptor.size),
                actual: mismatch.to_string(),
            },
        })?;
        Ok(())
    }

    /// True if `repo` on this registry has the blob.
    pub fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("blob {}", self.url(repo, &format!("/blobs/{digest}")));
        let request = self
            .http
            .head(self.endpoint(repo, &format!("blobs/{digest}")));
        let found = self.small(
            repo,
            RegistryOperation::Pull,
            &what,
            request,
            &[StatusCode::OK],
            |_| async { Ok(()) },
        );
        match found {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the registry to mount `digest` from `from_repo` into `repo`:
    /// 201 is `Mounted`, 202 `NotMounted` (the caller uploads); any other
    /// answer (401, 403, 5xx, ...) is an error.
    pub fn mount_blob(
        &self,
        repo: &str,
        from_repo: &str,
        digest: &Digest,
    ) -> Result<Mount, RegistryError> {
        let what = format!(
            "mount of {digest} from {} into {}",
            self.url(from_repo, ""),
            self.url(repo, "")
        );
        let request = self
            .http
            .post(self.endpoint(repo, "blobs/uploads/"))
            .query(&[("mount", digest.to_string().as_str()), ("from", from_repo)])
            .header(reqwest::header::CONTENT_LENGTH, "0");
        let status = self.small(
            repo,
            RegistryOperation::Push,
            &what,
            request,
            &[StatusCode::CREATED, StatusCode::ACCEPTED],
            |response| async move { Ok(response.status()) },
        )?;
        Ok(if status == StatusCode::CREATED {
            Mount::Mounted
        } else {
            Mount::NotMounted
        })
    }

    /// Uploads a blob from `layout` in constant memory (4 MiB chunks), as
    /// one progress task.
    pub fn upload_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: &dyn Progress,
    ) -> Result<(), RegistryError> {
        let task = push_task(progress, descriptor);
        self.upload(repo, descriptor, layout, &task)
    }

    fn upload(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        task: &Task<'_>,
    ) -> Result<(), RegistryError> {
        let what = format!(
            "upload of blob {}",
            self.url(repo, &format!("/blobs/{}", descriptor.digest))
        );
        let path = layout.blob_path(&descriptor.digest);
        let file = File::open(&path).map_err(|e| RegistryError::Local {
            what: what.clone(),
            detail: format!("blob missing from {}: {e}", path.display()),
        })?;
        let reference = Reference::with_tag(self.host.clone(), repo.to_string(), "latest".into());
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let stream = futures_util::stream::unfold(file, move |mut file| {
            let sent = sent_tx.clone();
            async move {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            return Some((
                                Err(oci_client::errors::OciDistributionError::IoError(e)),
                                file,
                            ))
                        }
                    }
                }
                if filled == 0 {
                    return None;
                }
                buf.truncate(filled);
                let _ = sent.send(filled as u64);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
        });
        let digest = descriptor.digest.to_string();
        net::block_on(async {
            self.authorize(repo, RegistryOperation::Push, &what).await?;
            let upload =
                self.oci
                    .push_blob_stream(&reference, stream, &digest, Some(descriptor.size));
            tokio::pin!(upload);
            // Progress from the reader side while the upload runs.
            loop {
                tokio::select! {
                    result = &mut upload => {
                        while let Ok(n) = sent_rx.try_recv() {
                            task.advance(n);
                        }
                        return result
                            .map(|_| ())
                            .map_err(|e| RegistryError::from_oci(&self.host, &what, e, &self.config));
                    }
                    Some(n) = sent_rx.recv() => task.advance(n),
                }
            }
        })
    }

    /// Makes sure `repo` has the blob: skip if present, else mount from one
    /// of `mount_from` (repositories on this registry), else upload. One
    /// progress task covers the whole decision.
    pub fn push_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        mount_from: &[String],
        progress: &dyn Progress,
    ) -> Result<BlobPush, RegistryError> {
        let task = push_task(progress, descriptor);
        if self.blob_exists(repo, &descriptor.digest)? {
            return Ok(BlobPush::Existed);
        }
        for from in mount_from {
            if from != repo && self.mount_blob(repo, from, &descriptor.digest)? == Mount::Mounted {
                return Ok(BlobPush::Mounted);
            }
        }
        self.upload(repo, descriptor, layout, &task)?;
        Ok(BlobPush::Uploaded(descriptor.size))
    }

    /// Pushes manifest or index bytes exactly as given, under a tag or
    /// digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let what = format!("push of manifest {}", self.url(repo, &sep(tag_or_digest)));
        let content_type = HeaderValue::from_str(media_type).map_err(|_| RegistryError::Local {
            what: what.clone(),
            detail: format!("bad media type {media_type:?}"),
        })?;
        let request = self
            .http
            .put(self.endpoint(repo, &format!("manifests/{tag_or_digest}")))
            .header(CONTENT_TYPE, content_type)
            .body(bytes.to_vec());
        self.small(
            repo,
            RegistryOperation::Push,
            &what,
            request,
            &[StatusCode::CREATED, StatusCode::OK, StatusCode::ACCEPTED],
            |_| async { Ok(()) },
        )
    }

    /// The idle timeout this client uses (for callers' messages).
    pub fn idle_timeout(&self) -> Duration {
        self.config.idle
    }
}

/// The progress task of pushing one blob (`push <12 hex digits>`).
fn push_task<'a>(progress: &'a dyn Progress, descriptor: &Descriptor) -> Task<'a> {
    Task::start(
        progress,
        &descriptor.digest.to_string(),
        &format!("push {}", &descriptor.digest.hex()[..12]),
        Some(descriptor.size),
    )
}

/// `:tag` or `@sha256:..` as written after a repository.
fn sep(tag_or_digest: &str) -> String {
    if tag_or_digest.starts_with("sha256:") {
        format!("@{tag_or_digest}")
    } else {
        format!(":{tag_or_digest}")
    }
}

/// Listing repositories and tags (for `stagex sigs sync --registry`).
impl RegistryClient {
    /// Every repository of the registry's catalog under `prefix/`
    /// (`/v2/_catalog`, paginated). Registries without a catalog (Docker
    /// Hub) answer an error: name the images with a digests file there.
    pub fn repositories(&self, prefix: &str) -> Result<Vec<String>, RegistryError> {
        let anchor = Reference::with_tag(self.host.clone(), format!("{prefix}/x"), "latest".into());
        let what = format!(
            "the repository catalog of {} (/v2/_catalog; a registry without one needs --digests)",
            self.host
        );
        let mut all = self.paginate(&what, |last| {
            let anchor = &anchor;
            async move {
                let page = self
                    .oci
                    .catalog(anchor, &self.auth, Some(PAGE), last.as_deref())
                    .await?;
                Ok(page.repositories)
            }
        })?;
        let wanted = format!("{}/", prefix.trim_end_matches('/'));
        all.retain(|r| r.starts_with(&wanted));
        Ok(all)
    }

    /// Every tag of `repo` (paginated).
    pub fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let anchor = Reference::with_tag(self.host.clone(), repo.to_string(), "latest".into());
        let what = format!("the tags of {}", self.url(repo, ""));
        self.paginate(&what, |last| {
            let anchor = &anchor;
            async move {
                let page = self
                    .oci
                    .list_tags(anchor, &self.auth, Some(PAGE), last.as_deref())
                    .await?;
                Ok(page.tags)
            }
        })
    }

    /// Collects pages of `PAGE` names (each under the document deadline)
    /// until a short page; `page(last)` asks for the names after `last`.
    fn paginate<F>(
        &self,
        what: &str,
        page: impl Fn(Option<String>) -> F,
    ) -> Result<Vec<String>, RegistryError>
    where
        F: std::future::Future<
            Output = Result<Vec<String>, oci_client::errors::OciDistributionError>,
        >,
    {
        let mut all: Vec<String> = Vec::new();
        loop {
            let names =
                net::block_on(net::within(self.config.document, &self.host, what, async {
                    page(all.last().cloned())
                        .await
                        .map_err(|e| RegistryError::from_oci(&self.host, what, e, &self.config))
                }))?;
            let full = names.len() >= PAGE;
            all.extend(names);
            if !full {
                return Ok(all);
            }
        }
    }
}

/// Names asked for per page when listing.
const PAGE: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_can_serve_many_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<RegistryClient>();
    }

    #[test]
    fn splits_repositories() {
        assert_eq!(
            split_repository("127.0.0.1:5000/stagex").unwrap(),
            ("127.0.0.1:5000".into(), "stagex".into())
        );
        assert!(split_repository("stagex/core").is_err());
        assert!(split_repository("host.example").is_err());
        assert!(split_repository("host.example/a:1").is_err());
    }
}
