//! Owns: THE quorum gate. Every image manifest given must carry valid
//! signatures by at least `threshold` DISTINCT trusted primary keys, as
//! counted by the verifier (`check::verify_images`: two files by one key
//! count once, a forged or unknown-key file counts zero, an unreadable
//! store fails the image). `stagex verify`, the pallet input gate and
//! publish's release gate all call `check` and render its typed outcome;
//! none of them counts signers itself.
//!
//! Must not: print, parse flags, or decide from file names.
use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use super::check::{verify_images, ImageReport};
use super::image::ImageTarget;
use super::trust::Trust;
use super::verify::VerifyOptions;

/// Every image passed: the per-image evidence (valid signers, rejected
/// files), for reports and for whoever copies the signatures on.
#[derive(Clone, Debug, Serialize)]
pub struct Passed {
    pub reports: Vec<ImageReport>,
}

/// One image below the quorum, and why: who did sign, which files were
/// rejected, whether the store could be read.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ShortImage {
    pub image: String,
    pub platform: Option<String>,
    pub digest: String,
    pub valid_signers: usize,
    pub threshold: usize,
    /// `FINGERPRINT (name)` of each distinct valid signer.
    pub signed_by: Vec<String>,
    /// `signature-N: reason` of each rejected file.
    pub rejected: Vec<String>,
    /// The lookaside could not be read.
    pub error: Option<String>,
}

impl ShortImage {
    fn of(report: &ImageReport) -> ShortImage {
        ShortImage {
            image: report.image.clone(),
            platform: report.platform.clone(),
            digest: report.digest.clone(),
            valid_signers: report.valid_signers,
            threshold: report.threshold,
            signed_by: report
                .signers
                .iter()
                .map(|s| match &s.name {
                    Some(name) => format!("{} ({name})", s.fingerprint),
                    None => s.fingerprint.clone(),
                })
                .collect(),
            rejected: report
                .invalid
                .iter()
                .map(|i| format!("{}: {}", i.file, i.reason))
                .collect(),
            error: report.error.clone(),
        }
    }

    /// `  - IMAGE (PLATFORM) DIGEST: N/T signer(s), signed by ...`, then
    /// one `rejected signature-N: reason` line per rejected file.
    pub fn describe(&self) -> String {
        let platform = self
            .platform
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        let mut text = format!(
            "  - {}{platform} {}: {}/{} signer(s)",
            self.image, self.digest, self.valid_signers, self.threshold
        );
        text += &if self.signed_by.is_empty() {
            ", signed by nobody trusted".to_string()
        } else {
            format!(", signed by {}", self.signed_by.join(", "))
        };
        if let Some(e) = &self.error {
            text += &format!("; lookaside error: {e}");
        }
        for r in &self.rejected {
            text += &format!("\n      rejected {r}");
        }
        text
    }
}

/// Some image missed the quorum. Carries every report (the passing ones
/// too: `stagex verify` prints them all) beside the short ones.
#[derive(Clone, Debug, Error)]
#[error("{}:\n{}", self.headline(), self.details())]
pub struct QuorumMissed {
    pub short: Vec<ShortImage>,
    pub reports: Vec<ImageReport>,
    pub threshold: usize,
    /// The trusted keys directory.
    pub keys: PathBuf,
    /// Where the signatures were read.
    pub lookaside: String,
}

impl QuorumMissed {
    /// `N of M image manifest(s) miss the quorum of T distinct trusted
    /// signers (signatures from L)`.
    pub fn headline(&self) -> String {
        format!(
            "{} of {} image manifest(s) miss the quorum of {} distinct trusted signers (signatures from {})",
            self.short.len(),
            self.reports.len(),
            self.threshold,
            self.lookaside
        )
    }

    /// One `ShortImage::describe` per short image, a line each.
    pub fn details(&self) -> String {
        let lines: Vec<String> = self.short.iter().map(ShortImage::describe).collect();
        lines.join("\n")
    }
}

/// The one gate: verifies every target against `trust` (its keyring,
/// threshold and lookaside) under `options` (legacy payloads, identity
/// rule), and passes only when every target meets the quorum.
pub fn check(
    trust: &Trust,
    options: &VerifyOptions,
    targets: &[ImageTarget],
) -> Result<Passed, QuorumMissed> {
    let reports = verify_images(
        &trust.keyring,
        &trust.lookaside,
        targets,
        trust.threshold,
        options,
    );
    let short: Vec<ShortImage> = reports
        .iter()
        .filter(|r| !r.quorum)
        .map(ShortImage::of)
        .collect();
    if short.is_empty() {
        return Ok(Passed { reports });
    }
    Err(QuorumMissed {
        short,
        reports,
        threshold: trust.threshold,
        keys: trust.keys.clone(),
        lookaside: trust.lookaside.describe(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sequoia_openpgp::cert::prelude::*;
    use sequoia_openpgp::types::KeyFlags;

    use super::*;
    use crate::lookaside::{signature_dir, Lookaside};
    use crate::oci::digest::Digest;
    use crate::sign::keyring::Keyring;
    use crate::sign::payload::Payload;
    use crate::sign::signer::{KeyFileSigner, PayloadSigner};

    fn signer(name: &str) -> KeyFileSigner {
        let (cert, _) = CertBuilder::new()
            .add_userid(format!("{name} <{name}@example.org>"))
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
            .generate()
            .unwrap();
        KeyFileSigner::from_cert(cert).unwrap()
    }

    fn target(name: &str, salt: &str) -> ImageTarget {
        let digest = Digest::of_bytes(salt.as_bytes());
        ImageTarget::in_namespace("stagex", name, digest).unwrap()
    }

    /// Writes `blobs` as `signature-1..N` of `target` under `root`.
    fn write_signatures(root: &Path, target: &ImageTarget, blobs: &[Vec<u8>]) {
        let dir = root.join(signature_dir(&target.repository_path, &target.digest));
        std::fs::create_dir_all(&dir).unwrap();
        for (n, blob) in blobs.iter().enumerate() {
            std::fs::write(dir.join(format!("signature-{}", n + 1)), blob).unwrap();
        }
    }

    fn sign(signer: &KeyFileSigner, target: &ImageTarget) -> Vec<u8> {
        let payload = Payload {
            // Any tag of the repository signs a digest reference.
            docker_reference: format!("{}:1.0", target.identity),
            manifest_digest: target.digest.clone(),
            creator: None,
            timestamp: None,
        };
        signer.sign(&payload.to_bytes()).unwrap()
    }

    fn trust(root: &Path, trusted: &[&KeyFileSigner], threshold: usize) -> Trust {
        let mut keyring = Keyring::default();
        for s in trusted {
            keyring.add_cert(s.cert().clone(), "test".into());
        }
        Trust {
            keys: root.join("keys"),
            keyring,
            threshold,
            lookaside: Lookaside::parse(root.to_str().unwrap()).unwrap(),
            options: VerifyOptions::default(),
        }
    }

    #[test]
    fn distinct_keys_count_duplicates_once_and_forgeries_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let (alice, bob) = (signer("alice"), signer("bob"));
        let twice = target("core-twice", "a");
        let forged = target("core-forged", "b");
        let met = target("core-met", "c");
        write_signatures(
            tmp.path(),
            &twice,
            &[sign(&alice, &twice), sign(&alice, &twice)],
        );
        let mut broken = sign(&bob, &forged);
        let n = broken.len();
        broken[n - 5] ^= 0xff;
        let genuine = sign(&alice, &forged);
        write_signatures(tmp.path(), &forged, &[genuine.clone(), broken]);
        write_signatures(tmp.path(), &met, &[sign(&alice, &met), sign(&bob, &met)]);
        let trust = trust(tmp.path(), &[&alice, &bob], 2);
        let targets = [twice, forged, met.clone()];

        let missed = check(&trust, &VerifyOptions::default(), &targets).unwrap_err();
        let short: Vec<(&str, usize, usize)> = missed
            .short
            .iter()
            .map(|s| (s.image.as_str(), s.valid_signers, s.rejected.len()))
            .collect();
        assert_eq!(
            short,
            [("core-twice", 1, 0), ("core-forged", 1, 1)],
            "{missed}"
        );
        assert_eq!(missed.reports.len(), 3, "every report, the passing one too");
        // What publish copies to mirrors: the verified bytes, not the forgery.
        assert_eq!(missed.reports[1].accepted, [genuine]);
        assert_eq!(missed.reports[0].accepted.len(), 2, "both of alice's files");
        let text = missed.to_string();
        assert!(
            text.contains("2 of 3 image manifest(s) miss the quorum of 2"),
            "{text}"
        );
        assert!(text.contains("rejected signature-2"), "{text}");

        let passed = check(&trust, &VerifyOptions::default(), &[met]).unwrap();
        assert_eq!(passed.reports[0].valid_signers, 2);
    }

    #[test]
    fn an_unsigned_image_is_short_and_says_nobody_trusted_signed() {
        let tmp = tempfile::tempdir().unwrap();
        let alice = signer("alice");
        let trust = trust(tmp.path(), &[&alice], 1);
        let missed =
            check(&trust, &VerifyOptions::default(), &[target("core-x", "x")]).unwrap_err();
        assert_eq!(missed.short[0].valid_signers, 0);
        assert!(missed.details().contains("signed by nobody trusted"));
    }
}
