//! Owns: the verdict on ONE signature blob for one image, as data a
//! sync state can keep: `sign::verify` decides (cryptography, signer,
//! payload — StageX's legacy form included, counted only with
//! `allow_legacy` —, digest, identity); this module only maps its answer,
//! with the rejection's stable code as a typed `Code` (the words of the
//! JSON and the state file are its serde names). Pure.
use serde::{Deserialize, Serialize};

use crate::sign::keyring::Keyring;
use crate::sign::verify::{verify_signature, Expected, Rejection, VerifyOptions};

/// What one blob is worth for one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// A valid signature by this trusted primary key (upper-case hex).
    Valid { signer: String },
    /// Not copied: a stable code and a sentence saying why.
    Rejected { code: Code, reason: String },
}

/// Declares `Code` from one table: each variant's word is both its serde
/// name (the JSON and the state file) and `as_str`.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $word:literal,)*) => {
        /// The stable code of a rejected file, as `stagex verify` names it
        /// (`Rejection::code`), plus `error` for a file that could not be
        /// judged.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Code {
            $($(#[$doc])* #[serde(rename = $word)] $variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The word (the serde name).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $word,)*
                }
            }
        }
    };
}

codes! {
    Empty => "empty",
    TooLarge => "too-large",
    Armored => "armored",
    NotOpenPgp => "not-openpgp",
    Detached => "detached",
    Malformed => "malformed",
    Encrypted => "encrypted",
    SignatureCount => "signature-count",
    NotV4 => "not-v4",
    UnknownKey => "unknown-key",
    KeyExpired => "key-expired",
    KeyNotYetValid => "key-not-yet-valid",
    KeyRevoked => "key-revoked",
    KeyRevokedSoft => "key-revoked-soft",
    BadKey => "bad-key",
    BadSignature => "bad-signature",
    Payload => "payload",
    DigestMismatch => "digest-mismatch",
    InvalidIdentity => "invalid-identity",
    IdentityMismatch => "identity-mismatch",
    LegacyFormat => "legacy-format",
    SoftNotFound => "soft-404",
    /// Not a verdict on the bytes: they could not be judged.
    Error => "error",
}

impl Code {
    /// The code of a rejection.
    pub fn of(rejection: &Rejection) -> Code {
        match rejection {
            Rejection::Empty => Code::Empty,
            Rejection::TooLarge(_) => Code::TooLarge,
            Rejection::Armored => Code::Armored,
            Rejection::NotOpenPgp(_) => Code::NotOpenPgp,
            Rejection::Detached => Code::Detached,
            Rejection::Malformed(_) | Rejection::Shape(_) => Code::Malformed,
            Rejection::Encrypted => Code::Encrypted,
            Rejection::SignatureCount(_) => Code::SignatureCount,
            Rejection::NotV4(_) => Code::NotV4,
            Rejection::UnknownKey(_) => Code::UnknownKey,
            Rejection::KeyExpired { .. } => Code::KeyExpired,
            Rejection::KeyNotYetValid { .. } => Code::KeyNotYetValid,
            Rejection::KeyRevoked { .. } => Code::KeyRevoked,
            Rejection::KeyRevokedSoft { .. } => Code::KeyRevokedSoft,
            Rejection::BadKey(..) => Code::BadKey,
            Rejection::BadSignature(_) => Code::BadSignature,
            Rejection::Payload(_) => Code::Payload,
            Rejection::DigestMismatch { .. } => Code::DigestMismatch,
            Rejection::InvalidIdentity(_) => Code::InvalidIdentity,
            Rejection::IdentityMismatch { .. } => Code::IdentityMismatch,
            Rejection::LegacyFormat { .. } => Code::LegacyFormat,
            Rejection::SoftNotFound => Code::SoftNotFound,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid { .. })
    }

    pub fn rejected(rejection: &Rejection) -> Verdict {
        Verdict::Rejected {
            code: Code::of(rejection),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_words_verify_uses_and_state_files_hold() {
        for rejection in [
            Rejection::Empty,
            Rejection::TooLarge(9),
            Rejection::NotOpenPgp(0x2d),
            Rejection::Shape("x".into()),
            Rejection::NotV4(3),
            Rejection::UnknownKey("K".into()),
            Rejection::SoftNotFound,
            Rejection::LegacyFormat { signed: "s".into() },
        ] {
            let code = Code::of(&rejection);
            assert_eq!(code.as_str(), rejection.code());
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", rejection.code())
            );
        }
        // A state file written with string codes loads, byte for byte.
        let old = r#"{"verdict":"rejected","code":"unknown-key","reason":"r"}"#;
        let verdict: Verdict = serde_json::from_str(old).unwrap();
        assert_eq!(
            verdict,
            Verdict::Rejected {
                code: Code::UnknownKey,
                reason: "r".into()
            }
        );
        assert_eq!(serde_json::to_string(&verdict).unwrap(), old);
        for &code in Code::ALL {
            let word = format!("\"{code}\"");
            assert_eq!(serde_json::to_string(&code).unwrap(), word);
            assert_eq!(serde_json::from_str::<Code>(&word).unwrap(), code);
        }
    }
}
