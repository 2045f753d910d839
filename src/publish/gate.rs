//! Owns: the release gate. Every per-platform manifest of every release
//! image must carry valid signatures by at least `threshold` DISTINCT
//! trusted primary keys, as counted by the verifier (never a file count:
//! two files by one maintainer count once, a forged or unknown-key file
//! counts zero). The error lists every image short of the quorum and who
//! did sign it, so the release manager knows whom to ask.
//!
//! Must not: push, or decide anything from file names.
use serde::Serialize;
use thiserror::Error;

use super::release::ReleaseImage;
use crate::lookaside::Lookaside;
use crate::sign::check::{verify_images, ImageReport};
use crate::sign::keyring::Keyring;
use crate::sign::verify::VerifyOptions;

/// One image below the quorum.
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

#[derive(Debug, Error)]
#[error(
    "{} of {total} image manifest(s) miss the quorum of {threshold} distinct trusted signers (signatures from {lookaside}); nothing was pushed:\n{}",
    short.len(),
    short.iter().map(describe).collect::<Vec<_>>().join("\n")
)]
pub struct GateError {
    pub short: Vec<ShortImage>,
    pub total: usize,
    pub threshold: usize,
    pub lookaside: String,
}

fn describe(s: &ShortImage) -> String {
    let platform = s
        .platform
        .as_deref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let mut text = format!(
        "  - {}{platform} {}: {}/{} signer(s)",
        s.image, s.digest, s.valid_signers, s.threshold
    );
    text += &if s.signed_by.is_empty() {
        ", signed by nobody trusted".to_string()
    } else {
        format!(", signed by {}", s.signed_by.join(", "))
    };
    if let Some(e) = &s.error {
        text += &format!("; lookaside error: {e}");
    }
    for r in &s.rejected {
        text += &format!("\n      rejected {r}");
    }
    text
}

/// What passed the gate.
#[derive(Clone, Debug, Serialize)]
pub struct GatePassed {
    pub manifests: usize,
    pub reports: Vec<ImageReport>,
}

/// Verifies every target of every image; `Err` lists each one short.
pub fn check(
    keyring: &Keyring,
    lookaside: &Lookaside,
    images: &[ReleaseImage],
    threshold: usize,
) -> Result<GatePassed, GateError> {
    let targets: Vec<_> = images.iter().flat_map(|i| i.targets.clone()).collect();
    // A release is gated on today's format: legacy payloads never count here.
    let reports = verify_images(
        keyring,
        lookaside,
        &targets,
        threshold,
        &VerifyOptions::default(),
    );
    let short: Vec<ShortImage> = reports.iter().filter(|r| !r.quorum).map(short_of).collect();
    if short.is_empty() {
        Ok(GatePassed {
            manifests: reports.len(),
            reports,
        })
    } else {
        Err(GateError {
            short,
            total: reports.len(),
            threshold,
            lookaside: lookaside.describe(),
        })
    }
}

fn short_of(r: &ImageReport) -> ShortImage {
    ShortImage {
        image: r.image.clone(),
        platform: r.platform.clone(),
        digest: r.digest.clone(),
        valid_signers: r.valid_signers,
        threshold: r.threshold,
        signed_by: r
            .signers
            .iter()
            .map(|s| match &s.name {
                Some(name) => format!("{} ({name})", s.fingerprint),
                None => s.fingerprint.clone(),
            })
            .collect(),
        rejected: r
            .invalid
            .iter()
            .map(|i| format!("{}: {}", i.file, i.reason))
            .collect(),
        error: r.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_each_short_image_and_its_signers() {
        let err = GateError {
            short: vec![ShortImage {
                image: "core-x".into(),
                platform: Some("linux/amd64".into()),
                digest: "sha256:ab".into(),
                valid_signers: 1,
                threshold: 2,
                signed_by: vec!["ABCD (Alice)".into()],
                rejected: vec!["signature-2: unknown key".into()],
                error: None,
            }],
            total: 3,
            threshold: 2,
            lookaside: "signatures".into(),
        };
        let text = err.to_string();
        for want in [
            "1 of 3",
            "core-x (linux/amd64) sha256:ab: 1/2",
            "signed by ABCD (Alice)",
            "rejected signature-2: unknown key",
            "nothing was pushed",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
    }
}
