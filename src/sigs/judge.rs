//! Owns: the verdict on ONE signature blob for one image, as data a
//! sync state can keep: `sign::verify` decides (cryptography, signer,
//! payload — StageX's legacy form included, counted only with
//! `allow_legacy` —, digest, identity); this module only maps its answer.
//! Pure.
use serde::Serialize;

use crate::lookaside::http::Read;
use crate::sign::keyring::Keyring;
use crate::sign::preverify;
use crate::sign::verify::{verify_signature, Expected, Rejection, VerifyOptions};

/// What one blob is worth for one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// A valid signature by this trusted primary key (upper-case hex).
    Valid { signer: String },
    /// Not copied: a stable code and a sentence saying why.
    Rejected { code: String, reason: String },
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid { .. })
    }

    pub fn rejected(rejection: &Rejection) -> Verdict {
        Verdict::Rejected {
            code: rejection.code().to_string(),
            reason: rejection.to_string(),
        }
    }
}

/// Judges `blob` as a signature of `expected`.
pub fn judge(keyring: &Keyring, blob: &[u8], expected: &Expected, allow_legacy: bool) -> Verdict {
    let options = VerifyOptions {
        allow_legacy,
        ..VerifyOptions::default()
    };
    match verify_signature(keyring, blob, expected, &options) {
        Ok((verified, _)) => Verdict::Valid {
            signer: verified.signer.to_hex(),
        },
        Err(rejection) => Verdict::rejected(&rejection),
    }
}

/// Runs the fast pre-verification pass (`sign::preverify`) over the blobs
/// among `reads` about to be judged: it only fills sequoia's signature
/// cache, so every `judge` after it gives the same verdict, sooner.
pub fn preverify<'a>(keyring: &Keyring, reads: impl IntoIterator<Item = &'a Read>) {
    let blobs: Vec<&[u8]> = reads
        .into_iter()
        .filter_map(|read| match read {
            Read::Found { body, .. } => Some(body.as_slice()),
            Read::NotModified | Read::TooLarge(_) => None,
        })
        .collect();
    if !blobs.is_empty() {
        preverify::preverify(keyring, &blobs);
    }
}
