//! Owns: whether a key could make a signature AT THE TIME the signature was
//! made, as OpenPGP means it (and as gpg and sequoia apply it):
//! - a signature made while the certificate and the signing (sub)key were
//!   alive stays valid after they expire; one made after expiry is not;
//! - a HARD revocation (key compromised, or no reason given) invalidates
//!   every signature of the key, whenever made;
//! - a SOFT revocation (superseded, retired) invalidates only signatures
//!   made after it.
//!
//! The verdict carries both dates for the message. Pure (no clock, no I/O):
//! it never judges the key's state "now".
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::packet::Signature;
use openpgp::policy::StandardPolicy;
use openpgp::types::{RevocationStatus, RevocationType};
use openpgp::{Cert, Fingerprint};

/// Why a key could not make a signature at its creation time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Alive, not revoked, signing-capable at that time.
    Valid,
    /// The certificate (`subkey: false`) or the signing subkey had expired.
    Expired {
        key: Fingerprint,
        subkey: bool,
        expired: Option<SystemTime>,
        signed: SystemTime,
    },
    /// Signed before the key existed or before the subkey was bound.
    NotYetValid {
        key: Fingerprint,
        created: SystemTime,
        signed: SystemTime,
    },
    /// Revoked: `hard` ones count at any time, soft ones from `revoked` on.
    Revoked {
        key: Fingerprint,
        subkey: bool,
        hard: bool,
        reason: String,
        revoked: Option<SystemTime>,
        signed: SystemTime,
    },
    /// Rejected by the policy for another reason (weak algorithm, not
    /// signing-capable, no valid binding).
    Invalid(String),
}

/// Judges `key` (a primary or subkey fingerprint of `cert`) at `signed`.
pub fn key_verdict_at(cert: &Cert, key: &Fingerprint, signed: SystemTime) -> KeyVerdict {
    let policy = StandardPolicy::new();
    let primary = cert.fingerprint();
    if let RevocationStatus::Revoked(revocations) = cert.revocation_status(&policy, signed) {
        return revoked(primary, false, &revocations, signed);
    }
    let created = cert.primary_key().key().creation_time();
    if signed < created {
        return KeyVerdict::NotYetValid {
            key: primary,
            created,
            signed,
        };
    }
    let valid = match cert.with_policy(&policy, signed) {
        Ok(valid) => valid,
        Err(e) => return KeyVerdict::Invalid(format!("{e:#}")),
    };
    if valid.alive().is_err() {
        return KeyVerdict::Expired {
            key: primary,
            subkey: false,
            expired: valid.primary_key().key_expiration_time(),
            signed,
        };
    }
    let Some(ka) = valid.keys().key_handle(key.clone()).next() else {
        let created = cert
            .keys()
            .key_handle(key.clone())
            .next()
            .map(|k| k.key().creation_time());
        return match created {
            Some(created) if signed < created => KeyVerdict::NotYetValid {
                key: key.clone(),
                created,
                signed,
            },
            _ => KeyVerdict::Invalid(format!(
                "key {key} has no valid binding to {primary} at the signature's time"
            )),
        };
    };
    let subkey = !ka.primary();
    if let RevocationStatus::Revoked(revocations) = ka.revocation_status() {
        return revoked(key.clone(), subkey, &revocations, signed);
    }
    if ka.alive().is_err() {
        return KeyVerdict::Expired {
            key: key.clone(),
            subkey,
            expired: ka.key_expiration_time(),
            signed,
        };
    }
    if !ka.for_signing() {
        return KeyVerdict::Invalid(format!("key {key} is not signing-capable"));
    }
    KeyVerdict::Valid
}

/// The verdict for revocation signatures in force at `signed`: hard if
/// any of them is hard.
fn revoked(
    key: Fingerprint,
    subkey: bool,
    revocations: &[&Signature],
    signed: SystemTime,
) -> KeyVerdict {
    let hard_one = revocations.iter().find(|r| is_hard(r));
    let chosen = hard_one.or(revocations.first());
    let reason = chosen
        .and_then(|r| r.reason_for_revocation())
        .map(|(code, message)| {
            let message = String::from_utf8_lossy(message);
            if message.trim().is_empty() {
                code.to_string()
            } else {
                format!("{code}: {}", message.trim())
            }
        })
        .unwrap_or_else(|| "no reason given".to_string());
    KeyVerdict::Revoked {
        key,
        subkey,
        hard: hard_one.is_some(),
        reason,
        revoked: chosen.and_then(|r| r.signature_creation_time()),
        signed,
    }
}

/// No reason, or a reason of the hard kind (compromised, unspecified...).
fn is_hard(revocation: &Signature) -> bool {
    revocation
        .reason_for_revocation()
        .is_none_or(|(code, _)| code.revocation_type() == RevocationType::Hard)
}
