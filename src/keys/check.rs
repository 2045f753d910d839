//! Owns: the rules `stagex keys check` applies to the trusted keys
//! directory, as findings: a key that cannot sign now (expired, revoked, no
//! valid signing key), one weaker than RSA-3072, one expiring within the
//! warning window, a file not named by its fingerprint, two files holding
//! the same primary, a file holding several certificates. Pure: summaries
//! and file names in, findings out.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::describe::KeySummary;

/// The smallest RSA key accepted for a maintainer.
pub const MIN_RSA_BITS: usize = 3072;

/// What is wrong (or about to be) with one key file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "kebab-case")]
pub enum Finding {
    Expired {
        fingerprint: String,
        on: String,
    },
    Revoked {
        fingerprint: String,
        kind: String,
        on: String,
    },
    NoSigningKey {
        fingerprint: String,
    },
    Weak {
        fingerprint: String,
        algorithm: String,
    },
    ExpiresSoon {
        fingerprint: String,
        on: String,
        days: u64,
    },
    Unusable {
        fingerprint: String,
        reason: String,
    },
    MisnamedFile {
        fingerprint: String,
    },
    DuplicatePrimary {
        fingerprint: String,
        other: String,
    },
    SeveralCertificates {
        count: usize,
    },
}

impl Finding {
    /// The sentence a user reads, with the fix.
    pub fn describe(&self) -> String {
        match self {
            Finding::Expired { fingerprint, on } => format!("{fingerprint} expired on {on}: run `stagex keys refresh {fingerprint}` (the maintainer may have extended it)"),
            Finding::Revoked { fingerprint, kind, on } => format!("{fingerprint} was revoked ({kind}) on {on}: remove it from the trusted keys or ask the maintainer for their new key"),
            Finding::NoSigningKey { fingerprint } => format!("{fingerprint} has no valid signing key: run `stagex keys refresh {fingerprint}` for a new signing subkey"),
            Finding::Weak { fingerprint, algorithm } => format!("{fingerprint} is {algorithm}, weaker than RSA-{MIN_RSA_BITS}: ask the maintainer for a stronger key"),
            Finding::ExpiresSoon { fingerprint, on, days } => format!("{fingerprint} expires on {on} (in {days} days): ask the maintainer to extend it, then `stagex keys refresh {fingerprint}`"),
            Finding::Unusable { fingerprint, reason } => format!("{fingerprint} is not usable: {reason}"),
            Finding::MisnamedFile { fingerprint } => format!("the file is not named by its fingerprint: rename it to {fingerprint}.asc"),
            Finding::DuplicatePrimary { fingerprint, other } => format!("{fingerprint} is also in {other}: keep one file per maintainer"),
            Finding::SeveralCertificates { count } => format!("the file holds {count} certificates: keep one certificate per file"),
        }
    }
}

/// One key file as read: its name and the certificates in it.
pub struct KeyFile<'a> {
    pub name: &'a str,
    pub certs: &'a [KeySummary],
}

/// Findings per file name, for every file with at least one.
pub fn check(files: &[KeyFile], now: SystemTime, warn: Duration) -> BTreeMap<String, Vec<Finding>> {
    let mut findings: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for file in files {
        let mut found = Vec::new();
        if file.certs.len() > 1 {
            found.push(Finding::SeveralCertificates {
                count: file.certs.len(),
            });
        }
        for cert in file.certs {
            found.extend(judge(cert, now, warn));
            if !named_by(file.name, &cert.fingerprint) && file.certs.len() == 1 {
                found.push(Finding::MisnamedFile {
                    fingerprint: cert.fingerprint.clone(),
                });
            }
            if let Some(other) = seen.insert(&cert.fingerprint, file.name) {
                found.push(Finding::DuplicatePrimary {
                    fingerprint: cert.fingerprint.clone(),
                    other: other.to_string(),
                });
            }
        }
        if !found.is_empty() {
            findings.insert(file.name.to_string(), found);
        }
    }
    findings
}

/// The findings about one certificate on its own.
pub fn judge(cert: &KeySummary, now: SystemTime, warn: Duration) -> Vec<Finding> {
    let fingerprint = cert.fingerprint.clone();
    if let Some(reason) = &cert.unusable {
        return vec![Finding::Unusable {
            fingerprint,
            reason: reason.clone(),
        }];
    }
    let mut found = Vec::new();
    if let Some(revocation) = &cert.revoked {
        found.push(Finding::Revoked {
            fingerprint: fingerprint.clone(),
            kind: revocation.kind.to_string(),
            on: revocation.when.clone(),
        });
    }
    if cert.expired {
        found.push(Finding::Expired {
            fingerprint: fingerprint.clone(),
            on: cert.expires.clone().unwrap_or_default(),
        });
    } else if !cert.can_sign_now() && cert.revoked.is_none() {
        found.push(Finding::NoSigningKey {
            fingerprint: fingerprint.clone(),
        });
    }
    if is_weak(cert) {
        found.push(Finding::Weak {
            fingerprint: fingerprint.clone(),
            algorithm: cert.algorithm.clone(),
        });
    }
    if let Some(days) = expires_within(cert, now, warn) {
        found.push(Finding::ExpiresSoon {
            fingerprint,
            on: cert.expires.clone().unwrap_or_default(),
            days,
        });
    }
    found
}

fn is_weak(cert: &KeySummary) -> bool {
    cert.algorithm.starts_with("RSA") && cert.bits.is_some_and(|bits| bits < MIN_RSA_BITS)
}

/// Days until the certificate (or its last live signing subkey) expires,
/// when that is within `warn` of `now` and has not happened yet.
fn expires_within(cert: &KeySummary, now: SystemTime, warn: Duration) -> Option<u64> {
    if cert.expired || cert.revoked.is_some() {
        return None;
    }
    let at = cert.expires_at?;
    let left = at.duration_since(now).ok()?;
    (left <= warn).then_some(left.as_secs() / 86_400)
}

/// `ABCD....asc`, `abcd...`, `0xABCD.pgp`: the file's stem is the
/// fingerprint, in either case.
fn named_by(file_name: &str, fingerprint: &str) -> bool {
    let stem = file_name.split('.').next().unwrap_or(file_name);
    let stem = stem.strip_prefix("0x").unwrap_or(stem);
    stem.eq_ignore_ascii_case(fingerprint)
}
