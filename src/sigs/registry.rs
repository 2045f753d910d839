//! Owns: the image set of a registry namespace (`--registry NS`): every
//! repository under NS in the registry's catalog, every tag, resolved to
//! the per-platform manifest digests a signature covers (an index is
//! followed one level; attestation entries, platform unknown/unknown, are
//! skipped). Uses the one registry client; blocking.
use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::oci::digest::Digest;
use crate::oci::manifest::AnyManifest;
use crate::registry::{split_repository, RegistryClient};
use crate::sign::image::ImageTarget;

/// The images of `namespace_ref` (`host/ns`), named in `identity` (the
/// identity namespace signatures carry).
pub fn list(namespace_ref: &str, identity: &str) -> Result<Vec<ImageTarget>> {
    let (host, prefix) = split_repository(namespace_ref)?;
    let client = RegistryClient::new(&host)?;
    let mut images = Vec::new();
    for repo in client.repositories(&prefix)? {
        let name = repo
            .strip_prefix(&format!("{prefix}/"))
            .unwrap_or(&repo)
            .to_string();
        let mut digests = BTreeSet::new();
        for tag in client.tags(&repo)? {
            digests.extend(platform_digests(&client, &repo, &tag)?);
        }
        for digest in digests {
            images.push(ImageTarget::in_namespace(identity, &name, digest)?);
        }
    }
    Ok(images)
}

/// The per-platform manifest digests behind `repo:tag`.
fn platform_digests(client: &RegistryClient, repo: &str, tag: &str) -> Result<Vec<Digest>> {
    let (bytes, digest) = client.pull_manifest(repo, tag)?;
    let manifest = AnyManifest::parse(&bytes, None)
        .with_context(|| format!("{}/{repo}:{tag}: not a manifest", client.host()))?;
    Ok(match manifest {
        AnyManifest::Image(_) => vec![digest],
        AnyManifest::Index(index) => index
            .manifests
            .iter()
            .filter(|d| d.platform.as_ref().is_none_or(|p| p.os != "unknown"))
            .map(|d| d.digest.clone())
            .collect(),
    })
}
