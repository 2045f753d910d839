//! Owns: what one certificate IS, as a user compares it out of band: primary
//! fingerprint and user ID, algorithm and size, creation, expiry, revocation
//! (hard or soft, and when), and its signing-capable subkeys with their own
//! expiry. Pure: a `Cert` and a moment in, a `KeySummary` out.
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::packet::key::{KeyParts, KeyRole};
use openpgp::packet::Key;
use openpgp::policy::StandardPolicy;
use openpgp::types::{RevocationStatus, RevocationType};
use openpgp::Cert;
use serde::Serialize;

/// One certificate, summarized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeySummary {
    pub fingerprint: String,
    /// The primary user ID (`Name <mail>`), if any is validly bound.
    pub user_id: Option<String>,
    pub user_ids: Vec<String>,
    /// `RSA-4096`, `EdDSA-256`, ...
    pub algorithm: String,
    /// Bits of the primary key, when the algorithm says.
    pub bits: Option<usize>,
    pub created: String,
    /// When the primary key expires, if it does.
    pub expires: Option<String>,
    #[serde(skip)]
    pub expires_at: Option<SystemTime>,
    pub expired: bool,
    pub revoked: Option<Revocation>,
    pub signing_subkeys: Vec<SubkeySummary>,
    /// The primary key itself may sign.
    pub primary_signs: bool,
    /// No self-signature this tool accepts binds the primary key (e.g.
    /// SHA-1 only): nothing made by it can verify.
    pub unusable: Option<String>,
}

/// A revocation of the whole certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Revocation {
    /// `hard` (compromised, or no reason: every signature is void) or
    /// `soft` (superseded, retired: signatures made before it stay valid).
    pub kind: &'static str,
    pub when: String,
    pub reason: String,
}

/// A subkey that may sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubkeySummary {
    pub fingerprint: String,
    pub algorithm: String,
    pub expires: Option<String>,
    pub expired: bool,
    pub revoked: bool,
}

impl KeySummary {
    /// True when something of this certificate can sign at `now`.
    pub fn can_sign_now(&self) -> bool {
        self.unusable.is_none()
            && self.revoked.is_none()
            && !self.expired
            && (self.primary_signs
                || self
                    .signing_subkeys
                    .iter()
                    .any(|s| !s.expired && !s.revoked))
    }
}

/// Summarizes `cert` as of `now`.
pub fn summarize(cert: &Cert, now: SystemTime) -> KeySummary {
    let policy = StandardPolicy::new();
    let primary = cert.primary_key().key();
    let mut summary = KeySummary {
        fingerprint: cert.fingerprint().to_hex(),
        user_id: None,
        user_ids: Vec::new(),
        algorithm: algorithm(primary),
        bits: primary.mpis().bits(),
        created: date(primary.creation_time()),
        expires: None,
        expires_at: None,
        expired: false,
        revoked: None,
        signing_subkeys: Vec::new(),
        primary_signs: false,
        unusable: None,
    };
    match cert.with_policy(&policy, now) {
        Ok(valid) => fill_from_valid(&mut summary, &valid),
        Err(error) => summary.unusable = Some(error.to_string()),
    }
    summary
}

fn fill_from_valid(summary: &mut KeySummary, valid: &ValidCert) {
    summary.user_id = valid
        .primary_userid()
        .ok()
        .map(|u| text(u.userid().value()));
    summary.user_ids = valid.userids().map(|u| text(u.userid().value())).collect();
    let primary = valid.primary_key();
    summary.expires_at = primary.key_expiration_time();
    summary.expires = summary.expires_at.map(date);
    summary.expired = primary.alive().is_err();
    summary.primary_signs = primary.for_signing();
    summary.revoked = revocation(valid.revocation_status());
    summary.signing_subkeys = valid
        .keys()
        .subkeys()
        .for_signing()
        .map(|key| SubkeySummary {
            fingerprint: key.key().fingerprint().to_hex(),
            algorithm: algorithm(key.key()),
            expires: key.key_expiration_time().map(date),
            expired: key.alive().is_err(),
            revoked: matches!(key.revocation_status(), RevocationStatus::Revoked(_)),
        })
        .collect();
}

fn revocation(status: RevocationStatus) -> Option<Revocation> {
    let RevocationStatus::Revoked(signatures) = status else {
        return None;
    };
    let signature = signatures.first()?;
    let (kind, reason) = match signature.reason_for_revocation() {
        Some((code, message)) => (
            code.revocation_type(),
            format!(
                "{code}{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", text(message))
                }
            ),
        ),
        None => (RevocationType::Hard, "no reason given".to_string()),
    };
    Some(Revocation {
        kind: match kind {
            RevocationType::Hard => "hard",
            RevocationType::Soft => "soft",
        },
        when: signature
            .signature_creation_time()
            .map(date)
            .unwrap_or_default(),
        reason,
    })
}

/// `RSA-4096`, `EdDSA-256`: the algorithm and, where known, its size.
fn algorithm<P: KeyParts, R: KeyRole>(key: &Key<P, R>) -> String {
    match key.mpis().bits() {
        Some(bits) => format!("{}-{bits}", key.pk_algo()),
        None => key.pk_algo().to_string(),
    }
}

/// A UTC date as users read it in a report.
pub fn date(time: SystemTime) -> String {
    DateTime::<Utc>::from(time)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
