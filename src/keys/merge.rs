//! Owns: the rule by which a certificate fetched from a keyserver may change
//! a trusted one: same primary fingerprint or nothing; everything the local
//! copy has is kept; new subkeys and user IDs only with a binding signature
//! this tool accepts; new signatures (extended expiry, revocations) kept as
//! sequoia canonicalizes them. And what changed, in words. Pure.
use std::collections::BTreeSet;
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::policy::StandardPolicy;
use openpgp::Cert;
use serde::Serialize;

use super::describe::{summarize, KeySummary};

/// Why a fetched certificate was not merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MergeError {
    #[error("the server sent the certificate {got} for {wanted}: refused (a certificate with another primary key is never merged into a trusted one)")]
    OtherPrimary { wanted: String, got: String },
    #[error("merging the certificate {fingerprint}: {detail}")]
    Sequoia { fingerprint: String, detail: String },
}

/// What a merge changed in a trusted certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// `old -> new` expiry of the primary key (`never` for none).
    pub expiry: Option<String>,
    pub new_subkeys: Vec<String>,
    pub new_user_ids: Vec<String>,
    /// `hard`/`soft` revocation newly in effect.
    pub revoked: Option<String>,
    /// New subkeys or user IDs left out: no valid binding signature.
    pub refused: Vec<String>,
    /// Other new signatures (certifications, refreshed bindings).
    pub new_signatures: usize,
}

impl Changes {
    /// True when the certificate did not change (refusals change nothing).
    pub fn is_empty(&self) -> bool {
        Changes {
            refused: Vec::new(),
            ..self.clone()
        } == Changes::default()
    }

    /// One line per change, for the report.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(expiry) = &self.expiry {
            lines.push(format!("expiry {expiry}"));
        }
        lines.extend(
            self.new_subkeys
                .iter()
                .map(|k| format!("new signing-capable or other subkey {k}")),
        );
        lines.extend(self.new_user_ids.iter().map(|u| format!("new user ID {u}")));
        if let Some(kind) = &self.revoked {
            lines.push(format!("REVOKED ({kind})"));
        }
        lines.extend(
            self.refused
                .iter()
                .map(|r| format!("not merged (no valid binding signature): {r}")),
        );
        if self.new_signatures > 0 {
            lines.push(format!("{} new signature(s)", self.new_signatures));
        }
        lines
    }
}

/// Merges `fetched` into `trusted`, as described in this module's header.
pub fn merge(
    trusted: &Cert,
    fetched: Cert,
    now: SystemTime,
) -> Result<(Cert, Changes), MergeError> {
    if fetched.fingerprint() != trusted.fingerprint() {
        return Err(MergeError::OtherPrimary {
            wanted: trusted.fingerprint().to_hex(),
            got: fetched.fingerprint().to_hex(),
        });
    }
    let fingerprint = trusted.fingerprint().to_hex();
    let merged = trusted
        .clone()
        .merge_public(fetched)
        .map_err(|e| MergeError::Sequoia {
            fingerprint: fingerprint.clone(),
            detail: e.to_string(),
        })?;
    let (merged, refused) = drop_unbound(trusted, merged, now);
    let merged = drop_new_bad_signatures(trusted, merged).map_err(|e| MergeError::Sequoia {
        fingerprint: fingerprint.clone(),
        detail: e.to_string(),
    })?;
    let changes = changes(trusted, &merged, refused, now);
    Ok((merged, changes))
}

/// Keeps every subkey and user ID `trusted` had, and the new ones only
/// when a binding signature this tool accepts binds them.
fn drop_unbound(trusted: &Cert, merged: Cert, now: SystemTime) -> (Cert, Vec<String>) {
    let policy = StandardPolicy::new();
    let had_keys: BTreeSet<_> = trusted
        .keys()
        .subkeys()
        .map(|k| k.key().fingerprint())
        .collect();
    let had_uids: BTreeSet<_> = trusted
        .userids()
        .map(|u| u.userid().value().to_vec())
        .collect();
    let (bound_keys, bound_uids) = match merged.with_policy(&policy, now) {
        Ok(valid) => (
            valid
                .keys()
                .subkeys()
                .map(|k| k.key().fingerprint())
                .collect::<BTreeSet<_>>(),
            valid
                .userids()
                .map(|u| u.userid().value().to_vec())
                .collect::<BTreeSet<_>>(),
        ),
        Err(_) => (BTreeSet::new(), BTreeSet::new()),
    };
    let mut refused = Vec::new();
    let merged = merged.retain_subkeys(|key| {
        let fingerprint = key.key().fingerprint();
        let keep = had_keys.contains(&fingerprint) || bound_keys.contains(&fingerprint);
        if !keep {
            refused.push(format!("subkey {}", fingerprint.to_hex()));
        }
        keep
    });
    let merged = merged.retain_userids(|uid| {
        let keep =
            had_uids.contains(uid.userid().value()) || bound_uids.contains(uid.userid().value());
        if !keep {
            refused.push(format!(
                "user ID {}",
                String::from_utf8_lossy(uid.userid().value())
            ));
        }
        keep
    });
    (merged, refused)
}

/// Signatures sequoia could not verify (it keeps them aside as "bad") are
/// dropped when they came from the server: they would only be inert bytes
/// in a file people review. The trusted copy's own are kept.
fn drop_new_bad_signatures(trusted: &Cert, merged: Cert) -> openpgp::Result<Cert> {
    let had: Vec<&openpgp::packet::Signature> = trusted.bad_signatures().collect();
    let new_bad: Vec<openpgp::packet::Signature> = merged
        .bad_signatures()
        .filter(|s| !had.contains(s))
        .cloned()
        .collect();
    if new_bad.is_empty() {
        return Ok(merged);
    }
    let packets = merged
        .into_packets()
        .filter(|p| !matches!(p, openpgp::Packet::Signature(s) if new_bad.contains(s)));
    Cert::from_packets(packets)
}

fn changes(before: &Cert, after: &Cert, refused: Vec<String>, now: SystemTime) -> Changes {
    let old = summarize(before, now);
    let new = summarize(after, now);
    let had_keys: BTreeSet<_> = before
        .keys()
        .subkeys()
        .map(|k| k.key().fingerprint().to_hex())
        .collect();
    let had_uids: BTreeSet<_> = before
        .userids()
        .map(|u| u.userid().value().to_vec())
        .collect();
    Changes {
        expiry: (old.expires != new.expires).then(|| format!("{} -> {}", shown(&old), shown(&new))),
        new_subkeys: after
            .keys()
            .subkeys()
            .map(|k| k.key().fingerprint().to_hex())
            .filter(|k| !had_keys.contains(k))
            .collect(),
        new_user_ids: after
            .userids()
            .filter(|u| !had_uids.contains(u.userid().value()))
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect(),
        revoked: match (&old.revoked, &new.revoked) {
            (None, Some(revocation)) => Some(revocation.kind.to_string()),
            _ => None,
        },
        refused,
        new_signatures: signature_count(after).saturating_sub(signature_count(before)),
    }
}

fn shown(summary: &KeySummary) -> &str {
    summary.expires.as_deref().unwrap_or("never")
}

fn signature_count(cert: &Cert) -> usize {
    cert.clone()
        .into_packets()
        .filter(|p| matches!(p, openpgp::Packet::Signature(_)))
        .count()
}
