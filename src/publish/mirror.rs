//! Owns: step 4 of a release, the signatures to every mirror. For every
//! per-platform manifest of the release, the signature files the gate found
//! VALID (by trusted keys; rejected files are never spread) are read from
//! the local lookaside and handed to the one signature store's writer
//! (`Lookaside::put_missing`, shared with `stagex sigs sync`), which uploads
//! only what the mirror lacks by content, contiguously, never replacing a
//! file, and reads back what it wrote. Images go to a mirror 16 at a time;
//! `--dry-run` only reads the mirror and counts what would be uploaded.
//! An image whose push failed on EVERY registry gets no signatures on the
//! mirrors (signatures of an image no registry serves would vouch for
//! nothing a user can pull); the report names it and why (`skipped`).
//!
//! Must not: decide validity (the gate did) or write anything itself.
use std::collections::BTreeMap;

use futures_util::StreamExt;

use super::release::ReleaseImage;
use super::report::{self, Failed, MirrorReport, RegistryReport};
use crate::lookaside::{Fetched, Lookaside, StoreError};
use crate::oci::digest::Digest;
use crate::progress::{Progress, Task};
use crate::sign::check::ImageReport;

/// Images uploaded to one mirror at once.
const CONCURRENT_IMAGES: usize = 16;

/// The valid signatures of one manifest, in their local order.
#[derive(Clone, Debug)]
pub struct Signatures {
    /// The release image (`ReleaseImage::name`) the manifest belongs to.
    pub release_image: String,
    pub image: String,
    pub repository_path: String,
    pub digest: Digest,
    pub blobs: Vec<Vec<u8>>,
}

/// The files the gate accepted (`reports`, in the order of the images'
/// targets): the very bytes it verified, so a file changed in the store
/// since then is never what reaches a mirror.
pub fn collect(images: &[ReleaseImage], reports: &[ImageReport]) -> Vec<Signatures> {
    let targets = images
        .iter()
        .flat_map(|i| i.targets.iter().map(move |t| (i.name.as_str(), t)));
    targets
        .zip(reports)
        .map(|((release_image, target), report)| Signatures {
            release_image: release_image.to_string(),
            image: target.name.clone(),
            repository_path: target.repository_path.clone(),
            digest: target.digest.clone(),
            blobs: report.accepted.clone(),
        })
        .collect()
}

/// The release images that are on no registry after the push (each failed
/// on every destination), with why: image name -> the registries' errors.
/// Without destinations (a mirror-only run) nothing is skipped. Pure.
pub fn unpublished(registries: &[RegistryReport]) -> BTreeMap<String, String> {
    let mut failures: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for registry in registries {
        for f in &registry.failed {
            failures
                .entry(f.image.as_str())
                .or_default()
                .push(format!("{}: {}", registry.registry, f.error));
        }
    }
    failures
        .into_iter()
        .filter(|(_, errors)| errors.len() == registries.len())
        .map(|(image, errors)| {
            (
                image.to_string(),
                format!(
                    "not uploaded: the image is on no registry (push failed on {})",
                    errors.join("; ")
                ),
            )
        })
        .collect()
}

/// Uploads (or, `dry_run`, plans) every image's signatures to every
/// mirror, except those of the release images in `skip` (name -> why),
/// which each mirror's report lists as skipped.
pub fn upload_all(
    mirrors: &[String],
    signatures: &[Signatures],
    skip: &BTreeMap<String, String>,
    dry_run: bool,
    progress: &dyn Progress,
) -> Vec<MirrorReport> {
    let (skipped, signatures): (Vec<&Signatures>, Vec<&Signatures>) = signatures
        .iter()
        .partition(|s| skip.contains_key(&s.release_image));
    let signatures: Vec<Signatures> = signatures.into_iter().cloned().collect();
    let skipped: Vec<Failed> = skipped
        .iter()
        .map(|s| Failed {
            image: format!("{}@{}", s.image, s.digest),
            error: skip[&s.release_image].clone(),
        })
        .collect();
    let mut reports = upload_each(mirrors, &signatures, dry_run, progress);
    for report in &mut reports {
        report.skipped = skipped.clone();
    }
    reports
}

fn upload_each(
    mirrors: &[String],
    signatures: &[Signatures],
    dry_run: bool,
    progress: &dyn Progress,
) -> Vec<MirrorReport> {
    mirrors
        .iter()
        .map(|location| match Lookaside::parse_mirror(location) {
            Ok(mirror) => {
                let name = mirror.describe();
                let images = Some(signatures.len() as u64);
                let id = report::mirror_task(&name);
                let task = Task::images(progress, &id, &name, images);
                // On the process-wide runtime (`crate::net`), with the
                // connections the mirror's client already holds.
                crate::net::block_on(upload_one(&mirror, signatures, dry_run, &task))
            }
            Err(e) => failed_all(location, signatures, e.to_string()),
        })
        .collect()
}

fn failed_all(mirror: &str, signatures: &[Signatures], error: String) -> MirrorReport {
    MirrorReport {
        mirror: mirror.to_string(),
        images: signatures.len() as u64,
        failed: vec![Failed {
            image: "*".into(),
            error,
        }],
        ..MirrorReport::default()
    }
}

/// What one image's signatures did on one mirror: (uploaded, present).
async fn one_image(
    mirror: &Lookaside,
    s: &Signatures,
    dry_run: bool,
) -> Result<(u64, u64), StoreError> {
    if dry_run {
        let existing = mirror.existing(&s.repository_path, &s.digest).await?;
        let present = s
            .blobs
            .iter()
            .filter(|b| {
                existing
                    .iter()
                    .any(|f| matches!(&f.content, Fetched::Blob(x) if x == *b))
            })
            .count() as u64;
        return Ok((s.blobs.len() as u64 - present, present));
    }
    let put = mirror
        .put_missing(&s.repository_path, &s.digest, &s.blobs)
        .await?;
    Ok((put.uploaded.len() as u64, put.present.len() as u64))
}

async fn upload_one(
    mirror: &Lookaside,
    signatures: &[Signatures],
    dry_run: bool,
    task: &Task<'_>,
) -> MirrorReport {
    let name = mirror.describe();
    let mut report = MirrorReport {
        mirror: name.clone(),
        images: signatures.len() as u64,
        ..MirrorReport::default()
    };
    let mut results = futures_util::stream::iter(
        signatures
            .iter()
            .map(|s| async move { (s, one_image(mirror, s, dry_run).await) }),
    )
    .buffer_unordered(CONCURRENT_IMAGES);
    while let Some((s, result)) = results.next().await {
        match result {
            Ok((uploaded, present)) => {
                report.signatures_uploaded += uploaded;
                report.signatures_present += present;
            }
            Err(e) => report.failed.push(Failed {
                image: format!("{}@{}", s.image, s.digest),
                error: e.to_string(),
            }),
        }
        task.advance(1);
    }
    report.failed.sort_by(|a, b| a.image.cmp(&b.image));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_unpublished_only_when_every_registry_failed_it() {
        let failed = |image: &str, error: &str| Failed {
            image: image.into(),
            error: error.into(),
        };
        let a = RegistryReport {
            registry: "a/ns".into(),
            failed: vec![failed("core-x", "500"), failed("core-y", "401")],
            ..RegistryReport::default()
        };
        let b = RegistryReport {
            registry: "b/ns".into(),
            failed: vec![failed("core-x", "reset")],
            ..RegistryReport::default()
        };
        let skip = unpublished(&[a.clone(), b]);
        assert_eq!(skip.keys().collect::<Vec<_>>(), ["core-x"]);
        assert!(skip["core-x"].contains("a/ns: 500") && skip["core-x"].contains("b/ns: reset"));
        assert_eq!(unpublished(&[a]).len(), 2);
        assert!(
            unpublished(&[]).is_empty(),
            "a mirror-only run skips nothing"
        );
    }
}
