//! Verifying images against a lookaside and a keyring: fetch every
//! signature file, check each one (in parallel over all cores), and sum up
//! per image which trusted maintainers signed, which files are bad and why,
//! which are hidden behind a gap, and whether the quorum is met (the one
//! count, `quorum::quorum_met`). `gate` turns the reports into the one
//! pass-or-short verdict that verify, the pallet inputs and publish use.
use std::collections::BTreeMap;

use serde::Serialize;

use super::image::ImageTarget;
use super::keyring::Keyring;
use super::preverify;
use super::quorum::quorum_met;
use super::verify::{verify_signature, Expected, Rejection, VerifyOptions};
use crate::lookaside::{Fetched, Listing, Lookaside, SignatureFile, StoreError};
use rayon::prelude::*;

/// The verdict for one image manifest.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ImageReport {
    pub image: String,
    pub platform: Option<String>,
    pub digest: String,
    /// The identity signatures must match.
    pub reference: String,
    /// Distinct trusted signers with valid signatures (sorted by fingerprint).
    pub signers: Vec<SignerEntry>,
    pub invalid: Vec<InvalidEntry>,
    /// Files after a gap in the numbering (or, when `capped`, past the
    /// cap): no reader sees them.
    pub hidden: Vec<String>,
    /// The cap of signatures per image was reached: `hidden` lists the
    /// files past it (there is no gap).
    pub capped: bool,
    /// The store could not be read (the image fails).
    pub error: Option<String>,
    pub valid_signers: usize,
    pub threshold: usize,
    pub quorum: bool,
    /// The bytes of every valid file, in the store's order: exactly what
    /// was verified (publish copies these to mirrors, never a re-read).
    #[serde(skip)]
    pub accepted: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SignerEntry {
    /// Primary key fingerprint (upper-case hex).
    pub fingerprint: String,
    /// First user id of the certificate.
    pub name: Option<String>,
    /// Files signed by this key (two or more still count once).
    pub files: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InvalidEntry {
    pub file: String,
    /// Stable reason code (`bad-signature`, `unknown-key`, ...).
    pub code: String,
    pub reason: String,
    /// The trusted primary the signature was made by, when the reason
    /// names its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn rejection_of(file: &SignatureFile) -> Option<Rejection> {
    match &file.content {
        Fetched::Blob(_) => None,
        Fetched::TooLarge(n) => Some(Rejection::TooLarge(*n as usize)),
        Fetched::SoftNotFound => Some(Rejection::SoftNotFound),
        // Only a conditional request is answered so; verify sends none.
        Fetched::NotModified => Some(Rejection::Malformed(
            "304 Not Modified to a request that was not conditional".into(),
        )),
    }
}

/// Verifies every target; never fails as a whole (errors go into reports).
/// `options` chooses the identity rule and whether legacy StageX payloads
/// count (`VerifyOptions::default()` is containers/image's strictness).
pub fn verify_images(
    keyring: &Keyring,
    lookaside: &Lookaside,
    targets: &[ImageTarget],
    threshold: usize,
    options: &VerifyOptions,
) -> Vec<ImageReport> {
    let images: Vec<(&str, &crate::oci::digest::Digest)> = targets
        .iter()
        .map(|t| (t.repository_path.as_str(), &t.digest))
        .collect();
    let fetched = lookaside.read_many(&images);
    // One job per signature file; results land back by index.
    let jobs: Vec<(usize, &SignatureFile)> = fetched
        .iter()
        .enumerate()
        .filter_map(|(i, set)| set.as_ref().ok().map(|s| (i, s)))
        .flat_map(|(i, set)| set.files.iter().map(move |f| (i, f)))
        .collect();
    let expected: Vec<Expected> = targets
        .iter()
        .map(|t| Expected {
            digest: t.digest.clone(),
            reference: t.reference.clone(),
        })
        .collect();
    let check =
        |(i, file): &(usize, &SignatureFile)| -> Result<sequoia_openpgp::Fingerprint, Rejection> {
            if let Some(r) = rejection_of(file) {
                return Err(r);
            }
            let Fetched::Blob(blob) = &file.content else {
                unreachable!()
            };
            verify_signature(keyring, blob, &expected[*i], options).map(|(v, _)| v.signer)
        };
    // The public-key arithmetic the fast way first (see `preverify`): it
    // only fills sequoia's cache, every signature is still verified in full
    // below.
    let blobs: Vec<&[u8]> = jobs
        .iter()
        .filter_map(|(_, file)| match &file.content {
            Fetched::Blob(blob) => Some(blob.as_slice()),
            _ => None,
        })
        .collect();
    preverify::preverify(keyring, &blobs);
    let results: Vec<_> = jobs.par_iter().map(check).collect();
    let mut reports: Vec<ImageReport> = targets
        .iter()
        .zip(&fetched)
        .map(|(target, set)| blank_report(target, set, threshold))
        .collect();
    let mut signers: Vec<BTreeMap<sequoia_openpgp::Fingerprint, Vec<String>>> =
        vec![BTreeMap::new(); targets.len()];
    for ((i, file), result) in jobs.iter().zip(results) {
        match result {
            Ok(fpr) => {
                signers[*i].entry(fpr).or_default().push(file.name.clone());
                if let Fetched::Blob(blob) = &file.content {
                    reports[*i].accepted.push(blob.clone());
                }
            }
            Err(reason) => reports[*i].invalid.push(InvalidEntry {
                file: file.name.clone(),
                code: reason.code().to_string(),
                reason: reason.to_string(),
                key: reason.key().map(|k| {
                    keyring
                        .primary_of(&k.into())
                        .unwrap_or_else(|| k.clone())
                        .to_hex()
                }),
            }),
        }
    }
    for (report, signers) in reports.iter_mut().zip(signers) {
        count_signers(report, signers, keyring);
    }
    reports
}

/// The report of `target` before its signatures are judged: what the
/// store read found (hidden files, a cap, an error), no signer yet.
fn blank_report(
    target: &ImageTarget,
    set: &Result<Listing, StoreError>,
    threshold: usize,
) -> ImageReport {
    ImageReport {
        image: target.name.clone(),
        platform: target.platform.clone(),
        digest: target.digest.to_string(),
        reference: target.reference.to_string(),
        signers: Vec::new(),
        invalid: Vec::new(),
        hidden: set.as_ref().map(|s| s.hidden_names()).unwrap_or_default(),
        capped: set.as_ref().is_ok_and(|s| s.capped()),
        error: set.as_ref().err().map(|e| format!("{e:#}")),
        valid_signers: 0,
        threshold,
        quorum: false,
        accepted: Vec::new(),
    }
}

/// Fills in `report`'s distinct signers (each with the files that count
/// for it) and whether they meet its threshold.
fn count_signers(
    report: &mut ImageReport,
    signers: BTreeMap<sequoia_openpgp::Fingerprint, Vec<String>>,
    keyring: &Keyring,
) {
    report.quorum = report.error.is_none() && quorum_met(signers.keys(), report.threshold);
    report.valid_signers = signers.len();
    report.signers = signers
        .into_iter()
        .map(|(fpr, files)| SignerEntry {
            name: keyring.label(&fpr),
            fingerprint: fpr.to_hex(),
            files,
        })
        .collect();
}

/// What a whole release looks like: images meeting / missing the quorum,
/// how many images each signer covers, invalid signatures by reason code.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub images: usize,
    pub quorum_met: usize,
    pub quorum_missed: usize,
    /// Images whose signatures could not be read.
    pub errors: usize,
    /// Valid signatures counted (each signer once per image).
    pub signatures_counted: usize,
    /// Files signed by a key that already signed the same image.
    pub duplicate_signatures: usize,
    /// Primary fingerprint -> images it validly signed.
    pub images_per_signer: BTreeMap<String, usize>,
    /// Number of distinct signers -> images with that many.
    pub images_by_signer_count: BTreeMap<usize, usize>,
    /// Reason code -> invalid signature files.
    pub invalid_by_reason: BTreeMap<String, usize>,
    /// Files after a gap in the numbering.
    pub hidden_files: usize,
    /// Files past the cap of signatures per image.
    pub capped_files: usize,
}

/// Sums up reports (pure).
pub fn summarize(reports: &[ImageReport]) -> Summary {
    let mut summary = Summary {
        images: reports.len(),
        ..Summary::default()
    };
    for r in reports {
        if r.quorum {
            summary.quorum_met += 1;
        } else {
            summary.quorum_missed += 1;
        }
        summary.errors += usize::from(r.error.is_some());
        summary.signatures_counted += r.signers.len();
        *summary
            .images_by_signer_count
            .entry(r.valid_signers)
            .or_default() += 1;
        for s in &r.signers {
            *summary
                .images_per_signer
                .entry(s.fingerprint.clone())
                .or_default() += 1;
            summary.duplicate_signatures += s.files.len().saturating_sub(1);
        }
        for i in &r.invalid {
            *summary.invalid_by_reason.entry(i.code.clone()).or_default() += 1;
        }
        if r.capped {
            summary.capped_files += r.hidden.len();
        } else {
            summary.hidden_files += r.hidden.len();
        }
    }
    summary
}
