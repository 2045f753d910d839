//! Owns: the ONE blob push rule, and pushing an image (manifest or index)
//! held in a local layout to a registry with it.
//!
//! The rule (`RegistryClient::push_blob_with`): HEAD — the repository has
//! the blob, done; else mount it from the repositories of the same
//! registry known to hold it, one after the other; else upload it. What a
//! mount's answer means is decided once (`read_mount`), after the OCI
//! distribution spec: 201 is mounted; 202 is the spec's "not mounted, go
//! on with the upload"; 401, 403 and 404 are a registry saying the same by
//! status (the source is not readable with our token, or does not hold
//! the blob): the next source, then the upload follows. Any other failure
//! (5xx, 429, a broken connection, a timeout), after the caller's retries,
//! is the registry failing, not the source refusing: it is the push's
//! error, not hidden behind an upload to the same failing server. How each
//! call is made is the caller's (`Calls`): once (`Once`, the image sinks)
//! or under a retry budget (publish).
//!
//! The image push: children first, each blob through the rule, manifests
//! pushed as their exact bytes, the tag last. Returns what it did, byte for
//! byte, as the `WriteReport` every image sink returns. Progress is
//! reported as events (one task per uploaded blob), never drawn here.
use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::{BlobPush, Mount, RegistryClient};
use crate::net::RegistryError;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::manifest::AnyManifest;
use crate::oci::reference::DockerReference;
use crate::oci::WriteReport;
use crate::progress::Progress;

/// How the blob push rule makes each registry call: once, or under the
/// caller's retry budget. The rule is the same either way.
pub trait Calls {
    type Error;
    fn call<T>(&self, op: impl FnMut() -> Result<T, RegistryError>) -> Result<T, Self::Error>;
}

/// Every call made once; its error as it came.
pub struct Once;

impl Calls for Once {
    type Error = RegistryError;
    fn call<T>(
        &self,
        mut op: impl FnMut() -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        op()
    }
}

/// The one reading of a mount's answer (see the header): a refusal by
/// status (401, 403, 404) is `NotMounted`, like a 202; any other failure
/// stays an error.
pub fn read_mount(answer: Result<Mount, RegistryError>) -> Result<Mount, RegistryError> {
    match answer {
        Err(
            RegistryError::Unauthorized { .. }
            | RegistryError::Forbidden { .. }
            | RegistryError::NotFound { .. },
        ) => Ok(Mount::NotMounted),
        answer => answer,
    }
}

impl RegistryClient {
    /// Makes sure `repo` has the blob, each call made once: skip if
    /// present, else mount from one of `mount_from` (repositories on this
    /// registry), else upload (one progress task).
    pub fn push_blob(
        &self,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        mount_from: &[String],
        progress: &dyn Progress,
    ) -> Result<BlobPush, RegistryError> {
        self.push_blob_with(&Once, repo, descriptor, layout, progress, || {
            mount_from.to_vec()
        })
    }

    /// The rule, each call made through `calls`. `mount_from` is asked
    /// only when the repository lacks the blob (publish claims the upload
    /// there); an upload reports its bytes to `progress`, one task per
    /// attempt.
    pub fn push_blob_with<C: Calls>(
        &self,
        calls: &C,
        repo: &str,
        descriptor: &Descriptor,
        layout: &Layout,
        progress: &dyn Progress,
        mount_from: impl FnOnce() -> Vec<String>,
    ) -> Result<BlobPush, C::Error> {
        let digest = &descriptor.digest;
        if !calls.call(|| self.needs_blob(repo, digest))? {
            return Ok(BlobPush::Existed);
        }
        for from in mount_from().iter().filter(|from| *from != repo) {
            let mounted = calls.call(|| read_mount(self.mount_blob(repo, from, digest)))?;
            if mounted == Mount::Mounted {
                return Ok(BlobPush::Mounted);
            }
        }
        calls.call(|| self.upload_blob(repo, descriptor, layout, progress))?;
        Ok(BlobPush::Uploaded(descriptor.size))
    }
}

/// Splits `HOST/REPO:TAG` or `HOST/REPO@sha256:..` (tag defaults to
/// `latest`) into `(host, repo, tag or digest)`.
pub fn parse_reference(text: &str) -> Result<(String, String, String)> {
    let reference = DockerReference::parse_explicit(text)?;
    let tag = reference.tag_or_digest();
    Ok((reference.domain, reference.path, tag))
}

/// Pushes the image at `root` from `layout` to `docker://reference`.
/// `mount_from` maps blob digests to repositories of the same registry
/// that hold them.
pub fn push_image(
    reference: &str,
    layout: &Layout,
    root: &Descriptor,
    mount_from: &BTreeMap<Digest, Vec<String>>,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    let (host, repo, tag) = parse_reference(reference)?;
    let client = RegistryClient::new(&host)?;
    let mut push = ImagePush {
        client: &client,
        repo: &repo,
        layout,
        mount_from,
        progress,
        report: WriteReport {
            reference: reference.to_string(),
            digest: Some(root.digest.clone()),
            ..WriteReport::default()
        },
    };
    push.node(root)?;
    let bytes = layout.read_blob(&root.digest)?;
    client.push_manifest(&repo, &tag, &bytes, &root.media_type)?;
    Ok(push.report)
}

/// One image going to one repository: what every node's push shares, and
/// the report it fills.
struct ImagePush<'a> {
    client: &'a RegistryClient,
    repo: &'a str,
    layout: &'a Layout,
    mount_from: &'a BTreeMap<Digest, Vec<String>>,
    progress: &'a dyn Progress,
    report: WriteReport,
}

impl ImagePush<'_> {
    /// `node` and everything below it, its own manifest excepted (the
    /// caller pushes it by digest or under the tag).
    fn node(&mut self, node: &Descriptor) -> Result<()> {
        let bytes = self.layout.read_blob(&node.digest)?;
        match AnyManifest::parse(&bytes, Some(&node.media_type))
            .with_context(|| format!("manifest {}", node.digest))?
        {
            AnyManifest::Index(index) => {
                for child in &index.manifests {
                    self.node(child)?;
                    let child_bytes = self.layout.read_blob(&child.digest)?;
                    self.client.push_manifest(
                        self.repo,
                        &child.digest.to_string(),
                        &child_bytes,
                        &child.media_type,
                    )?;
                }
            }
            AnyManifest::Image(manifest) => {
                let blobs = std::iter::once(&manifest.config).chain(&manifest.layers);
                let mut done = std::collections::BTreeSet::new();
                for blob in blobs.filter(|blob| done.insert(blob.digest.clone())) {
                    self.blob(blob)?;
                }
            }
        }
        self.report.manifests_pushed += 1;
        Ok(())
    }

    /// One blob through the rule, counted.
    fn blob(&mut self, blob: &Descriptor) -> Result<()> {
        let sources = self
            .mount_from
            .get(&blob.digest)
            .cloned()
            .unwrap_or_default();
        let report = &mut self.report;
        match self
            .client
            .push_blob(self.repo, blob, self.layout, &sources, self.progress)?
        {
            BlobPush::Existed => report.blobs_existing += 1,
            BlobPush::Mounted => {
                report.blobs_mounted += 1;
                report.bytes_mounted += blob.size;
            }
            BlobPush::Uploaded(n) => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += n;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_mount_is_not_mounted_a_failing_one_stays_an_error() {
        let (host, what) = ("127.0.0.1:5000".to_string(), "mount".to_string());
        let refusals = [
            RegistryError::NotFound {
                host: host.clone(),
                what: what.clone(),
            },
            RegistryError::Unauthorized {
                host: host.clone(),
                what: what.clone(),
                sent: None,
            },
            RegistryError::Forbidden {
                host: host.clone(),
                what: what.clone(),
            },
        ];
        for refusal in refusals {
            assert_eq!(read_mount(Err(refusal)).unwrap(), Mount::NotMounted);
        }
        assert_eq!(read_mount(Ok(Mount::Mounted)).unwrap(), Mount::Mounted);
        assert_eq!(
            read_mount(Ok(Mount::NotMounted)).unwrap(),
            Mount::NotMounted
        );
        let failing = RegistryError::Server {
            host,
            what,
            status: 500,
            detail: String::new(),
        };
        assert!(matches!(
            read_mount(Err(failing)),
            Err(RegistryError::Server { status: 500, .. })
        ));
    }

    #[test]
    fn parses_push_references() {
        assert_eq!(
            parse_reference("127.0.0.1:5000/me/rust-jq:1").unwrap(),
            ("127.0.0.1:5000".into(), "me/rust-jq".into(), "1".into())
        );
        assert_eq!(parse_reference("h.example/x").unwrap().2, "latest");
        assert!(parse_reference("x").is_err());
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_reference(&format!("h.example/x@sha256:{hex}"))
                .unwrap()
                .2,
            format!("sha256:{hex}")
        );
    }
}
