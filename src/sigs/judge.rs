//! Owns: the verdict on ONE signature blob for one image, as data a
//! sync state can keep: `sign::verify` decides (cryptography, signer,
//! payload — StageX's legacy form included, counted only with
//! `allow_legacy` —, digest, identity); this module only maps its answer.
//! Pure.
use serde::Serialize;

use crate::sign::keyring::Keyring;
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
