//! Owns: the verdict on ONE signature blob for one image, through the
//! verifier of `sign::verify` (cryptography, signer, payload, digest,
//! identity), plus recognising StageX's legacy payload (signatures made by
//! `sign.sh` before mid-2025: a JSON array, type "pgp container image
//! signature", bare-hex digest, untagged identity), which containers/image
//! rejects: reported as `legacy-format`, accepted only when asked.
//!
//! The legacy check lives here until `sign::verify` grows its own
//! `allow_legacy` option; then this module only maps that result. Pure.
use serde::Serialize;

use crate::sign::keyring::Keyring;
use crate::sign::reference::DockerReference;
use crate::sign::verify::{check_payload, verify_blob, Expected, Rejection};

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

/// Code of a legacy-format signature.
pub const LEGACY_FORMAT: &str = "legacy-format";

/// Judges `blob` as a signature of `expected`.
pub fn judge(keyring: &Keyring, blob: &[u8], expected: &Expected, allow_legacy: bool) -> Verdict {
    let verified = match verify_blob(keyring, blob) {
        Ok(v) => v,
        Err(rejection) => return Verdict::rejected(&rejection),
    };
    let signer = verified.signer.to_hex();
    match check_payload(&verified.payload, expected) {
        Ok(_) => Verdict::Valid { signer },
        Err(rejection @ Rejection::Payload(_)) => match legacy(&verified.payload) {
            Some(old) if allow_legacy => judge_legacy(&old, expected, signer),
            Some(_) => Verdict::Rejected {
                code: LEGACY_FORMAT.to_string(),
                reason: "legacy StageX payload (JSON array, \"pgp container image signature\"): \
                         skopeo and podman reject it; re-sign the image, or pass --allow-legacy"
                    .to_string(),
            },
            None => Verdict::rejected(&rejection),
        },
        Err(rejection) => Verdict::rejected(&rejection),
    }
}

/// The two fields of a legacy payload that can be checked.
struct Legacy {
    digest_hex: String,
    identity: String,
}

fn legacy(payload: &[u8]) -> Option<Legacy> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let [one] = value.as_array()?.as_slice() else {
        return None;
    };
    let critical = one.get("critical")?;
    if critical.get("type")?.as_str()? != "pgp container image signature" {
        return None;
    }
    let digest = critical
        .get("image")?
        .get("docker-manifest-digest")?
        .as_str()?;
    Some(Legacy {
        digest_hex: digest.strip_prefix("sha256:").unwrap_or(digest).to_string(),
        identity: critical
            .get("identity")?
            .get("docker-reference")?
            .as_str()?
            .to_string(),
    })
}

/// With `--allow-legacy`: the digest must still be this image's and the
/// (untagged) identity its repository.
fn judge_legacy(old: &Legacy, expected: &Expected, signer: String) -> Verdict {
    if old.digest_hex != expected.digest.hex() {
        return Verdict::Rejected {
            code: "digest-mismatch".into(),
            reason: format!(
                "legacy signature of manifest sha256:{}, not this image ({})",
                old.digest_hex, expected.digest
            ),
        };
    }
    let same_repository = DockerReference::parse(&old.identity)
        .is_ok_and(|r| r.repository() == expected.reference.repository());
    if !same_repository {
        return Verdict::Rejected {
            code: "identity-mismatch".into(),
            reason: format!(
                "legacy signature for {}, not {}",
                old.identity,
                expected.reference.repository()
            ),
        };
    }
    Verdict::Valid { signer }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Digest;

    #[test]
    fn legacy_payloads_are_recognised_and_checked() {
        let d = Digest::of_bytes(b"m");
        let text = format!(
            r#"[{{"critical":{{"identity":{{"docker-reference":"stagex/core-bash"}},"image":{{"docker-manifest-digest":"{}"}},"type":"pgp container image signature"}},"optional":null}}]"#,
            d.hex()
        );
        let old = legacy(text.as_bytes()).unwrap();
        let expected = Expected {
            digest: d.clone(),
            reference: DockerReference::parse(&format!("stagex/core-bash@{d}")).unwrap(),
        };
        assert!(judge_legacy(&old, &expected, "F".into()).is_valid());
        let other = Expected {
            digest: Digest::of_bytes(b"n"),
            ..expected.clone()
        };
        assert!(!judge_legacy(&old, &other, "F".into()).is_valid());
        let elsewhere = Expected {
            reference: DockerReference::parse(&format!("stagex/core-zsh@{d}")).unwrap(),
            ..expected
        };
        assert!(!judge_legacy(&old, &elsewhere, "F".into()).is_valid());
        assert!(legacy(br#"{"critical":{}}"#).is_none());
    }
}
