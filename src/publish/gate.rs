//! Owns: publish's use of the one quorum gate (`sign::gate`): every
//! per-platform manifest of every release image must pass it, or nothing
//! leaves the machine. The error lists every image short of the quorum and
//! who did sign it, so the release manager knows whom to ask.
//!
//! Must not: push, or count signers itself (`sign::gate` does).
use thiserror::Error;

use super::release::ReleaseImage;
use crate::sign::gate::{self, QuorumMissed};
use crate::sign::image::ImageTarget;
use crate::sign::trust::Trust;
use crate::sign::verify::VerifyOptions;

pub use crate::sign::gate::{Passed as GatePassed, ShortImage};

/// The release missed the quorum; nothing was pushed.
#[derive(Debug, Error)]
#[error("{}; nothing was pushed:\n{}", .0.headline(), .0.details())]
pub struct GateError(pub QuorumMissed);

/// Gates every target of every image.
pub fn check(trust: &Trust, images: &[ReleaseImage]) -> Result<GatePassed, GateError> {
    let targets: Vec<ImageTarget> = images
        .iter()
        .flat_map(|i| i.targets.iter().cloned())
        .collect();
    // A release is gated on today's format: legacy payloads never count here.
    gate::check(trust, &VerifyOptions::default(), &targets).map_err(GateError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_each_short_image_and_its_signers() {
        let short = ShortImage {
            image: "core-x".into(),
            platform: Some("linux/amd64".into()),
            digest: "sha256:ab".into(),
            valid_signers: 1,
            threshold: 2,
            signed_by: vec!["ABCD (Alice)".into()],
            rejected: vec!["signature-2: unknown key".into()],
            error: None,
        };
        let passing = crate::sign::check::ImageReport {
            image: "core-y".into(),
            platform: None,
            digest: "sha256:cd".into(),
            reference: "stagex/core-y".into(),
            signers: vec![],
            invalid: vec![],
            hidden: vec![],
            capped: false,
            error: None,
            valid_signers: 2,
            threshold: 2,
            quorum: true,
            accepted: vec![],
        };
        let err = GateError(QuorumMissed {
            short: vec![short],
            reports: vec![passing.clone(), passing.clone(), passing],
            threshold: 2,
            keys: "keys".into(),
            lookaside: "signatures".into(),
        });
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
