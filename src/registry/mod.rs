//! The ONE registry client: a synchronous wrapper over oci-client (which is
//! async; a private tokio runtime drives it). Owns: plain HTTP for loopback
//! hosts and TLS otherwise (`$STAGEX_TLS_HOSTS` forces TLS for listed
//! loopback hosts, `$STAGEX_CA_FILE` adds a private CA), credentials (`auth`), verification of every
//! pulled byte against its digest, streaming blobs into an OCI layout and
//! out of one, cross-repository mounts with upload fallback, and pushing
//! manifests as exact bytes. It knows nothing about pallets or packages.
pub mod auth;
pub mod push;

use std::fs::File;
use std::io::{Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::media_type;

/// Largest manifest accepted (containers/image uses the same 4 MiB cap).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Chunk size for streamed uploads (constant memory).
const CHUNK: usize = 4 << 20;

/// Manifest media types we accept when pulling.
const ACCEPTED: &[&str] = &[
    media_type::OCI_MANIFEST,
    media_type::OCI_INDEX,
    media_type::DOCKER_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
];

/// True for hosts spoken to over plain HTTP: 127.0.0.0/8, localhost, [::1].
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Names hosts (comma-separated `host[:port]`) spoken to over TLS even
/// though they are loopback addresses (a local TLS registry, or a tunnel).
pub const TLS_HOSTS_ENV: &str = "STAGEX_TLS_HOSTS";

/// Whether `host` is spoken to over TLS: every non-loopback host, and
/// loopback hosts listed in `$STAGEX_TLS_HOSTS`.
pub fn uses_tls(host: &str) -> bool {
    !is_loopback(host)
        || std::env::var(TLS_HOSTS_ENV)
            .map(|list| list.split(',').any(|h| h.trim() == host))
            .unwrap_or(false)
}

/// The private CA in `$STAGEX_CA_FILE` (PEM), trusted besides the system
/// roots; the same variable the https lookaside reads.
fn extra_root_certificates() -> Result<Vec<oci_client::client::Certificate>> {
    let Some(path) = std::env::var_os(crate::lookaside::http::CA_FILE_ENV) else {
        return Ok(Vec::new());
    };
    let data = std::fs::read(&path).with_context(|| {
        format!(
            "reading {}={}",
            crate::lookaside::http::CA_FILE_ENV,
            path.to_string_lossy()
        )
    })?;
    Ok(vec![oci_client::client::Certificate {
        encoding: oci_client::client::CertificateEncoding::Pem,
        data,
    }])
}

/// Splits `host[:port]/repo/path` into `(host, repo)`; a first component
/// without '.', ':' or `localhost` is not a host (error: be explicit).
pub fn split_repository(text: &str) -> Result<(String, String)> {
    let (host, repo) = text
        .split_once('/')
        .ok_or_else(|| anyhow!("{text:?}: expected HOST[:PORT]/REPOSITORY"))?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        bail!("{text:?}: the first component {host:?} is not a registry host (write e.g. 127.0.0.1:5000/{text})");
    }
    if repo.is_empty() || repo.ends_with('/') {
        bail!("{text:?}: empty repository name");
    }
    Ok((host.to_string(), repo.to_string()))
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

/// A client for one registry host.
pub struct RegistryClient {
    host: String,
    client: Client,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
}

impl RegistryClient {
    /// A client for `host` (`127.0.0.1:5000`, `registry.example`).
    pub fn new(host: &str) -> Result<RegistryClient> {
        let protocol = if uses_tls(host) {
            ClientProtocol::Https
        } else {
            ClientProtocol::Http
        };
        let client = Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            extra_root_certificates: extra_root_certificates()?,
            ..ClientConfig::default()
        });
        let auth = match auth::credentials(host)? {
            Some((user, pass)) => RegistryAuth::Basic(user, pass),
            None => RegistryAuth::Anonymous,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the registry client runtime")?;
        Ok(RegistryClient {
            host: host.to_string(),
            client,
            auth,
            runtime,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn reference(&self, repo: &str, tag_or_digest: &str) -> Reference {
        if tag_or_digest.starts_with("sha256:") {
            Reference::with_digest(
                self.host.clone(),
                repo.to_string(),
                tag_or_digest.to_string(),
            )
        } else {
            Reference::with_tag(
                self.host.clone(),
                repo.to_string(),
                tag_or_digest.to_string(),
            )
        }
    }

    fn url(&self, repo: &str, what: &str) -> String {
        format!("{}/{repo}{what}", self.host)
    }

    /// Pulls a manifest or index by tag or digest: exact bytes and their
    /// digest. A digest reference is checked against the bytes.
    pub fn pull_manifest(&self, repo: &str, tag_or_digest: &str) -> Result<(Vec<u8>, Digest)> {
        let reference = self.reference(repo, tag_or_digest);
        let (bytes, _) = self
            .runtime
            .block_on(
                self.client
                    .pull_manifest_raw(&reference, &self.auth, ACCEPTED),
            )
            .with_context(|| format!("pulling manifest {}", self.url(repo, &sep(tag_or_digest))))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            bail!(
                "manifest {} is {} bytes, over the {MAX_MANIFEST_BYTES}-byte limit (as in containers/image)",
                self.url(repo, &sep(tag_or_digest)),
                bytes.len()
            );
        }
        let digest = Digest::of_bytes(&bytes);
        if tag_or_digest.starts_with("sha256:") && digest.to_string() != tag_or_digest {
            bail!(
                "manifest {} has digest {digest}: the registry sent wrong bytes",
                self.url(repo, &sep(tag_or_digest))
            );
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Streams a blob into `layout` (no-op if present), verified against
    /// the descriptor's digest and size; nothing is stored on mismatch.
    pub fn pull_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: Option<&ProgressBar>,
    ) -> Result<()> {
        let digest = &descriptor.digest;
        if layout.has_blob(digest) {
            return Ok(());
        }
        let url = self.url(repo, &format!("/blobs/{digest}"));
        let mut writer = layout
            .blob_writer()?
            .expecting(digest, Some(descriptor.size));
        let reference = self.reference(repo, &digest.to_string());
        let digest_text = digest.to_string();
        self.runtime
            .block_on(async {
                self.client
                    .auth(&reference, &self.auth, oci_client::RegistryOperation::Pull)
                    .await?;
                let mut stream = self
                    .client
                    .pull_blob_stream(&reference, digest_text.as_str())
                    .await?;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    // A hostile registry must not fill the disk: stop at the
                    // descriptor's size instead of trusting the stream's end.
                    if writer.count() + chunk.len() as u64 > descriptor.size {
                        bail!(
                            "the registry sent more than the {} bytes the descriptor declares; nothing stored",
                            descriptor.size
                        );
                    }
                    writer.write_all(&chunk)?;
                    if let Some(bar) = progress {
                        bar.inc(chunk.len() as u64);
                    }
                }
                anyhow::Ok(())
            })
            .with_context(|| format!("pulling blob {url}"))?;
        writer
            .commit()
            .with_context(|| format!("blob {url}: the registry sent wrong bytes"))?;
        Ok(())
    }

    /// True if `repo` on this registry has the blob.
    pub fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let reference = self.reference(repo, &digest.to_string());
        self.runtime
            .block_on(async {
                self.client
                    .auth(&reference, &self.auth, oci_client::RegistryOperation::Pull)
                    .await
                    .ok();
                self.client
                    .blob_exists(&reference, &digest.to_string())
                    .await
            })
            .with_context(|| {
                format!(
                    "checking blob {}",
                    self.url(repo, &format!("/blobs/{digest}"))
                )
            })
    }

    /// Asks the registry to mount `digest` from `from_repo` into `repo`.
    /// `false` when it did not (e.g. a 202 answer): the caller uploads.
    pub fn mount_blob(&self, repo: &str, from_repo: &str, digest: &Digest) -> Result<bool> {
        let target = self.reference(repo, "latest");
        let source = self.reference(from_repo, "latest");
        let result = self.runtime.block_on(async {
            self.client
                .auth(&target, &self.auth, oci_client::RegistryOperation::Push)
                .await?;
            self.client
                .mount_blob(&target, &source, &digest.to_string())
                .await
                .map_err(anyhow::Error::from)
        });
        Ok(result.is_ok())
    }

    /// Uploads a blob from `layout` in constant memory.
    pub fn upload_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: Option<&ProgressBar>,
    ) -> Result<()> {
        let path = layout.blob_path(&descriptor.digest);
        let file = File::open(&path).with_context(|| {
            format!("blob {} missing from {}", descriptor.digest, path.display())
        })?;
        let reference = self.reference(repo, "latest");
        let bar = progress.cloned();
        let stream = futures_util::stream::unfold(file, move |mut file| {
            let bar = bar.clone();
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
                if let Some(bar) = &bar {
                    bar.inc(filled as u64);
                }
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
        });
        self.runtime
            .block_on(async {
                self.client
                    .auth(&reference, &self.auth, oci_client::RegistryOperation::Push)
                    .await?;
                self.client
                    .push_blob_stream(
                        &reference,
                        stream,
                        &descriptor.digest.to_string(),
                        Some(descriptor.size),
                    )
                    .await
                    .map_err(anyhow::Error::from)
            })
            .with_context(|| {
                format!(
                    "uploading blob {}",
                    self.url(repo, &format!("/blobs/{}", descriptor.digest))
                )
            })?;
        Ok(())
    }

    /// Makes sure `repo` has the blob: skip if present, else mount from one
    /// of `mount_from` (repositories on this registry), else upload.
    pub fn push_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        mount_from: &[String],
        progress: Option<&ProgressBar>,
    ) -> Result<BlobPush> {
        if self.blob_exists(repo, &descriptor.digest)? {
            return Ok(BlobPush::Existed);
        }
        for from in mount_from {
            if from != repo && self.mount_blob(repo, from, &descriptor.digest)? {
                return Ok(BlobPush::Mounted);
            }
        }
        self.upload_blob(repo, descriptor, layout, progress)?;
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
    ) -> Result<()> {
        let reference = self.reference(repo, tag_or_digest);
        let content_type = media_type
            .parse()
            .with_context(|| format!("bad media type {media_type:?}"))?;
        self.runtime
            .block_on(async {
                self.client
                    .auth(&reference, &self.auth, oci_client::RegistryOperation::Push)
                    .await?;
                self.client
                    .push_manifest_raw(&reference, bytes.to_vec(), content_type)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .with_context(|| format!("pushing manifest {}", self.url(repo, &sep(tag_or_digest))))?;
        Ok(())
    }
}

/// `:tag` or `@sha256:..` as written after a repository.
fn sep(tag_or_digest: &str) -> String {
    if tag_or_digest.starts_with("sha256:") {
        format!("@{tag_or_digest}")
    } else {
        format!(":{tag_or_digest}")
    }
}

/// Reads a blob fully from a layout (helper for small JSON blobs).
pub fn read_small_blob(layout: &Layout, digest: &Digest) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    layout.open_blob(digest, None)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Listing repositories and tags (for `stagex sigs sync --registry`; kept
/// apart, at the end, by the helper that added it).
impl RegistryClient {
    /// Every repository of the registry's catalog under `prefix/`
    /// (`/v2/_catalog`, paginated). Registries without a catalog (Docker
    /// Hub) answer an error: name the images with a digests file there.
    pub fn repositories(&self, prefix: &str) -> Result<Vec<String>> {
        let anchor = self.reference(&format!("{prefix}/x"), "latest");
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self
                .runtime
                .block_on(
                    self.client
                        .catalog(&anchor, &self.auth, Some(1000), last.as_deref()),
                )
                .with_context(|| {
                    format!(
                        "listing the repositories of {} (/v2/_catalog): a registry without a catalog needs --digests",
                        self.host
                    )
                })?;
            let n = page.repositories.len();
            last = page.repositories.last().cloned();
            all.extend(page.repositories);
            if n < 1000 || last.is_none() {
                break;
            }
        }
        let wanted = format!("{}/", prefix.trim_end_matches('/'));
        all.retain(|r| r.starts_with(&wanted));
        Ok(all)
    }

    /// Every tag of `repo` (paginated).
    pub fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let anchor = self.reference(repo, "latest");
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self
                .runtime
                .block_on(
                    self.client
                        .list_tags(&anchor, &self.auth, Some(1000), last.as_deref()),
                )
                .with_context(|| format!("listing the tags of {}", self.url(repo, "")))?;
            let n = page.tags.len();
            last = page.tags.last().cloned();
            all.extend(page.tags);
            if n < 1000 || last.is_none() {
                break;
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_plain_http() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "registry.example",
            "10.0.0.1:5000",
            "localhost.example:5000",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn splits_repositories() {
        assert_eq!(
            split_repository("127.0.0.1:5000/stagex").unwrap(),
            ("127.0.0.1:5000".into(), "stagex".into())
        );
        assert!(split_repository("stagex/core").is_err());
        assert!(split_repository("host.example").is_err());
    }
}
