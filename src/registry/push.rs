//! Pushing an image (manifest or index) held in a local layout to a
//! registry: children first, each blob skipped if the repository has it,
//! mounted from a source repository of the same registry when one is
//! known, uploaded otherwise; manifests pushed as their exact bytes; the
//! tag last. Returns what it did, byte for byte, as the
//! `WriteReport` every image sink returns. Progress is reported as
//! events (one task per uploaded blob), never drawn here.
use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::{BlobPush, RegistryClient};
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::manifest::AnyManifest;
use crate::oci::reference::DockerReference;
use crate::oci::WriteReport;
use crate::progress::Progress;

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
    let mut report = WriteReport {
        reference: reference.to_string(),
        digest: Some(root.digest.clone()),
        ..WriteReport::default()
    };
    push_node(
        &client,
        &repo,
        layout,
        root,
        mount_from,
        progress,
        &mut report,
    )?;
    let bytes = layout.read_blob(&root.digest)?;
    client.push_manifest(&repo, &tag, &bytes, &root.media_type)?;
    Ok(report)
}

fn push_node(
    client: &RegistryClient,
    repo: &str,
    layout: &Layout,
    node: &Descriptor,
    mount_from: &BTreeMap<Digest, Vec<String>>,
    progress: &dyn Progress,
    report: &mut WriteReport,
) -> Result<()> {
    let bytes = layout.read_blob(&node.digest)?;
    match AnyManifest::parse(&bytes, Some(&node.media_type))
        .with_context(|| format!("manifest {}", node.digest))?
    {
        AnyManifest::Index(index) => {
            for child in &index.manifests {
                push_node(client, repo, layout, child, mount_from, progress, report)?;
                let child_bytes = layout.read_blob(&child.digest)?;
                client.push_manifest(
                    repo,
                    &child.digest.to_string(),
                    &child_bytes,
                    &child.media_type,
                )?;
            }
        }
        AnyManifest::Image(manifest) => {
            let blobs = std::iter::once(&manifest.config).chain(&manifest.layers);
            let mut done = std::collections::BTreeSet::new();
            for blob in blobs {
                if !done.insert(blob.digest.clone()) {
                    continue;
                }
                let sources = mount_from.get(&blob.digest).cloned().unwrap_or_default();
                match client.push_blob(repo, blob, layout, &sources, progress)? {
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
            }
        }
    }
    report.manifests_pushed += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
