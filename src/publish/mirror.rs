//! Owns: step 4 of a release, the signatures to every mirror. For every
//! per-platform manifest of the release, the signature files the gate found
//! VALID (by trusted keys; rejected files are never spread) are read from
//! the local lookaside and handed to the mirror writer
//! (`lookaside::mirror`, shared with `stagex sigs sync`), which uploads
//! only what the mirror lacks by content, contiguously, never replacing a
//! file, and reads back what it wrote. Images go to a mirror 16 at a time;
//! `--dry-run` only reads the mirror and counts what would be uploaded.
//!
//! Must not: decide validity (the gate did) or write anything itself.
use futures_util::StreamExt;

use super::release::ReleaseImage;
use super::report::{Event, Failed, MirrorReport, Observer};
use crate::lookaside::mirror::{Mirror, MirrorError};
use crate::lookaside::{Fetched, Lookaside, SignatureSet};
use crate::oci::digest::Digest;
use crate::sign::check::ImageReport;

/// Images uploaded to one mirror at once.
const CONCURRENT_IMAGES: usize = 16;

/// The valid signatures of one manifest, in their local order.
#[derive(Clone, Debug)]
pub struct Signatures {
    pub image: String,
    pub repository_path: String,
    pub digest: Digest,
    pub blobs: Vec<Vec<u8>>,
}

/// Reads the files the gate accepted (`reports`, in the order of the
/// images' targets) from `lookaside`.
pub fn collect(
    lookaside: &Lookaside,
    images: &[ReleaseImage],
    reports: &[ImageReport],
) -> Result<Vec<Signatures>, String> {
    let targets: Vec<_> = images.iter().flat_map(|i| i.targets.iter()).collect();
    let keys: Vec<(&str, &Digest)> = targets
        .iter()
        .map(|t| (t.repository_path.as_str(), &t.digest))
        .collect();
    let sets = lookaside.read_many(&keys);
    let mut out = Vec::new();
    for ((target, report), set) in targets.iter().zip(reports).zip(sets) {
        let set: SignatureSet =
            set.map_err(|e| format!("re-reading signatures of {}: {e:#}", target.name))?;
        let valid: Vec<&str> = report
            .signers
            .iter()
            .flat_map(|s| s.files.iter().map(String::as_str))
            .collect();
        let blobs = set
            .files
            .into_iter()
            .filter(|f| valid.contains(&f.name.as_str()))
            .filter_map(|f| match f.content {
                Fetched::Blob(b) => Some(b),
                _ => None,
            })
            .collect();
        out.push(Signatures {
            image: target.name.clone(),
            repository_path: target.repository_path.clone(),
            digest: target.digest.clone(),
            blobs,
        });
    }
    Ok(out)
}

/// Uploads (or, `dry_run`, plans) every image's signatures to every mirror.
pub fn upload_all(
    mirrors: &[String],
    signatures: &[Signatures],
    dry_run: bool,
    observer: &dyn Observer,
) -> Vec<MirrorReport> {
    mirrors
        .iter()
        .map(|location| match Mirror::parse(location) {
            Ok(mirror) => {
                observer.event(Event::MirrorStarted {
                    mirror: mirror.describe(),
                    images: signatures.len(),
                });
                // On the process-wide runtime (`crate::net`), with the
                // connections the mirror's client already holds.
                crate::net::block_on(upload_one(&mirror, signatures, dry_run, observer))
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
    mirror: &Mirror,
    s: &Signatures,
    dry_run: bool,
) -> Result<(u64, u64), MirrorError> {
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
    mirror: &Mirror,
    signatures: &[Signatures],
    dry_run: bool,
    observer: &dyn Observer,
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
        observer.event(Event::MirrorImageDone {
            mirror: name.clone(),
            image: s.image.clone(),
        });
    }
    report.failed.sort_by(|a, b| a.image.cmp(&b.image));
    report
}
