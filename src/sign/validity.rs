//! Owns: whether a key could make a signature AT THE TIME the signature was
//! made, as OpenPGP means it (and as gpg and sequoia apply it):
//! - a signature made while the certificate and the signing (sub)key were
//!   alive stays valid after they expire; one made after expiry is not;
//! - a HARD revocation (key compromised, or no reason given) invalidates
//!   every signature of the key, whenever made;
//! - a SOFT revocation (superseded, retired) invalidates only signatures
//!   made after it.
//!
//! gpg REPLACES a key's self-signature when the key is extended, so an
//! extended certificate often has no binding as old as the signatures the
//! key made before. Like gpg, such a key is then judged by its earliest
//! binding newer than the signature, the expiry still compared with the
//! signature's time (`binding_time`).
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
    let Some(when) = binding_time(cert, key, signed) else {
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
                "key {key} has no valid binding to {primary} (re-export the certificate with gpg --export)"
            )),
        };
    };
    let valid = match cert.with_policy(&policy, when) {
        Ok(valid) => valid,
        Err(e) => return KeyVerdict::Invalid(format!("{e:#}")),
    };
    let expired = |at: Option<SystemTime>| at.is_some_and(|e| e <= signed);
    if expired(valid.primary_key().key_expiration_time()) {
        return KeyVerdict::Expired {
            key: primary,
            subkey: false,
            expired: valid.primary_key().key_expiration_time(),
            signed,
        };
    }
    let Some(ka) = valid.keys().key_handle(key.clone()).next() else {
        return KeyVerdict::Invalid(format!("key {key} is not bound to {primary}"));
    };
    let subkey = !ka.primary();
    if let RevocationStatus::Revoked(revocations) = ka.revocation_status() {
        return revoked(key.clone(), subkey, &revocations, signed);
    }
    if ka.key().creation_time() > signed {
        return KeyVerdict::NotYetValid {
            key: key.clone(),
            created: ka.key().creation_time(),
            signed,
        };
    }
    if expired(ka.key_expiration_time()) {
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

/// When to read `key`'s bindings for a signature made at `signed`: then,
/// if the key was bound then; else the earliest later self-signature time
/// at which it is (the key was extended and gpg dropped the older binding).
fn binding_time(cert: &Cert, key: &Fingerprint, signed: SystemTime) -> Option<SystemTime> {
    let policy = StandardPolicy::new();
    let bound_at = |t: SystemTime| {
        cert.with_policy(&policy, t)
            .ok()
            .is_some_and(|v| v.keys().key_handle(key.clone()).next().is_some())
    };
    if bound_at(signed) {
        return Some(signed);
    }
    let mut times: Vec<SystemTime> = cert
        .primary_key()
        .self_signatures()
        .chain(cert.userids().flat_map(|u| u.self_signatures()))
        .chain(cert.keys().subkeys().flat_map(|k| k.self_signatures()))
        .filter_map(|s| s.signature_creation_time())
        .filter(|t| *t > signed)
        .collect();
    times.sort();
    times.dedup();
    times.into_iter().find(|t| bound_at(*t))
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
