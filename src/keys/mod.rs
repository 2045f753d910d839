//! Owns: the trusted keys directory (`keys/`) as data that must stay
//! fresh: listing what each certificate is, checking it against the rules a
//! release depends on, refreshing certificates from keyservers (merging only
//! what is new and validly bound, never another primary, never a key that
//! is not already trusted) and adding a new maintainer. `describe`, `check`,
//! `merge` and `wkd` are pure; `dir` and `fetch` are the I/O edges.
pub mod check;
pub mod describe;
pub mod dir;
pub mod fetch;
pub mod merge;
pub mod wkd;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::{Cert, Fingerprint};
use serde::Serialize;

use describe::{summarize, KeySummary};
use dir::KeysDirError;
use fetch::{FetchError, KeySource};
use merge::Changes;

/// Key sources used when neither `--from` nor `keyservers` in stagex.toml
/// name any: the keyserver StageX's maintainers publish to, then WKD.
pub const DEFAULT_SOURCES: [&str; 2] = ["https://keys.openpgp.org", "wkd"];

/// One key file as listed.
#[derive(Debug, Serialize)]
pub struct ListedFile {
    pub file: PathBuf,
    pub certificates: Vec<KeySummary>,
}

/// Every key file of `dir` and what its certificates are at `now`.
pub fn list(dir: &Path, now: SystemTime) -> Result<Vec<ListedFile>, KeysDirError> {
    Ok(dir::read_dir(dir)?
        .into_iter()
        .map(|file| ListedFile {
            certificates: file.certs.iter().map(|c| summarize(c, now)).collect(),
            file: file.path,
        })
        .collect())
}

/// What happened to one trusted certificate in a refresh.
#[derive(Debug, Serialize)]
pub struct Refreshed {
    pub fingerprint: String,
    pub file: PathBuf,
    pub changes: Changes,
    /// One line per source that gave nothing usable (unreachable, not
    /// found, another primary): never a failure of the others.
    pub problems: Vec<String>,
}

/// Why a refresh could not start.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Dir(#[from] KeysDirError),
    #[error(transparent)]
    Source(#[from] FetchError),
    #[error("{0} is not a trusted key in {1}: refresh only updates trusted keys (add a new one with `stagex keys add`)")]
    NotTrusted(String, String),
}

/// Refreshes every certificate of `dir` (or only `only`, fingerprints of
/// trusted primaries) from `sources`, in order, merging what each gives.
pub fn refresh(
    dir: &Path,
    only: &[String],
    sources: &[KeySource],
    now: SystemTime,
) -> Result<Vec<Refreshed>, RefreshError> {
    let files = dir::read_dir(dir)?;
    let wanted = wanted_primaries(&files, only, dir)?;
    let mut dead_sources = BTreeSet::new();
    let mut report = Vec::new();
    for file in files {
        let mut certs = Vec::new();
        for cert in file.certs {
            if !wanted
                .as_ref()
                .is_none_or(|w| w.contains(&cert.fingerprint()))
            {
                certs.push(cert);
                continue;
            }
            let (merged, refreshed) =
                refresh_one(cert, &file.path, sources, &mut dead_sources, now);
            certs.push(merged);
            report.push(refreshed);
        }
        if report
            .iter()
            .any(|r| r.file == file.path && !r.changes.is_empty())
        {
            dir::write_certs(&file.path, &certs)?;
        }
    }
    Ok(report)
}

/// The primaries `only` names, each checked to be trusted; None for all.
fn wanted_primaries(
    files: &[dir::KeyFileCerts],
    only: &[String],
    dir: &Path,
) -> Result<Option<BTreeSet<Fingerprint>>, RefreshError> {
    if only.is_empty() {
        return Ok(None);
    }
    let trusted: BTreeSet<Fingerprint> = files
        .iter()
        .flat_map(|f| f.certs.iter().map(Cert::fingerprint))
        .collect();
    let mut wanted = BTreeSet::new();
    for text in only {
        let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let hex = hex.strip_prefix("0x").unwrap_or(&hex);
        let found = trusted
            .iter()
            .find(|f| f.to_hex().eq_ignore_ascii_case(hex));
        match found {
            Some(fingerprint) => wanted.insert(fingerprint.clone()),
            None => {
                return Err(RefreshError::NotTrusted(
                    text.clone(),
                    dir.display().to_string(),
                ))
            }
        };
    }
    Ok(Some(wanted))
}

/// Merges what every live source has for `cert`. A source that could not
/// be reached is skipped for the keys after it (one line each), so a dead
/// server costs one timeout, not one per key.
fn refresh_one(
    cert: Cert,
    file: &Path,
    sources: &[KeySource],
    dead_sources: &mut BTreeSet<String>,
    now: SystemTime,
) -> (Cert, Refreshed) {
    let original = cert.clone();
    let emails = emails_of(&cert);
    let mut merged = cert;
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    for source in sources {
        let label = source.label();
        if dead_sources.contains(&label) {
            problems.push(format!(
                "{label}: skipped (unreachable earlier in this run)"
            ));
            continue;
        }
        match fetch::fetch(source, &merged.fingerprint(), &emails) {
            Ok(fetched) => {
                let outcome = merge_all(merged, fetched, now, &label);
                merged = outcome.cert;
                problems.extend(outcome.problems);
                refused.extend(outcome.refused);
            }
            Err(FetchError::Net(error)) if !error.is_not_found() => {
                dead_sources.insert(label);
                problems.push(error.to_string());
            }
            Err(error) => problems.push(error.to_string()),
        }
    }
    // The whole difference, measured once against the trusted copy.
    let mut changes = merge::merge(&original, merged.clone(), now)
        .map(|(_, changes)| changes)
        .unwrap_or_default();
    changes.refused = refused;
    let refreshed = Refreshed {
        fingerprint: original.fingerprint().to_hex(),
        file: file.to_path_buf(),
        changes,
        problems,
    };
    (merged, refreshed)
}

/// What one source's certificates did to the trusted one.
struct Merged {
    cert: Cert,
    problems: Vec<String>,
    refused: Vec<String>,
}

/// Merges each fetched certificate with the trusted primary; one with
/// another primary is refused with a line.
fn merge_all(trusted: Cert, fetched: Vec<Cert>, now: SystemTime, label: &str) -> Merged {
    let mut outcome = Merged {
        cert: trusted,
        problems: Vec::new(),
        refused: Vec::new(),
    };
    for candidate in fetched {
        match merge::merge(&outcome.cert, candidate, now) {
            Ok((next, changes)) => {
                outcome.refused.extend(changes.refused);
                outcome.cert = next;
            }
            Err(error) => outcome.problems.push(format!("{label}: {error}")),
        }
    }
    outcome
}

fn emails_of(cert: &Cert) -> Vec<String> {
    cert.userids()
        .filter_map(|u| {
            let text = String::from_utf8_lossy(u.userid().value()).into_owned();
            wkd::email_of(&text).map(str::to_string)
        })
        .collect()
}

/// A maintainer added to the trusted keys.
#[derive(Debug, Serialize)]
pub struct Added {
    pub file: PathBuf,
    pub certificate: KeySummary,
}

/// Why a key could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Dir(#[from] KeysDirError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{what} holds {count} certificates: add one maintainer at a time")]
    Several { what: String, count: usize },
    #[error(
        "{fingerprint} is already trusted, in {file}: use `stagex keys refresh {fingerprint}`"
    )]
    AlreadyTrusted { fingerprint: String, file: String },
    #[error("{path} is not a certificate stagex can read ({detail}), so it could hide the key being added: export it again with `gpg --export --armor FPR` or move it out of the keys directory, then add again")]
    BrokenKeyFile { path: String, detail: String },
    #[error("{path} already exists and is not a key file (a directory or a link?); it was not replaced: move it out of the keys directory, then add again")]
    NameTaken { path: String },
    #[error("{what}: {detail}")]
    NotACertificate { what: String, detail: String },
    #[error("no source had the certificate {fingerprint}: {problems}")]
    NotFetched {
        fingerprint: String,
        problems: String,
    },
}

/// Adds `cert` to `dir` as `<FINGERPRINT>.asc`; refused when that primary
/// is already trusted under any file name, when a key file of `dir` cannot
/// be read (it could hide that primary), or when the name is taken. The
/// file is created exclusively: an entry already there is never replaced.
pub fn add(dir: &Path, cert: Cert, now: SystemTime) -> Result<Added, AddError> {
    let fingerprint = cert.fingerprint();
    if let Some(file) = trusted_in(dir, &fingerprint)? {
        return Err(AddError::AlreadyTrusted {
            fingerprint: fingerprint.to_hex(),
            file: file.display().to_string(),
        });
    }
    let path = dir.join(format!("{}.asc", fingerprint.to_hex()));
    let cert = cert.strip_secret_key_material();
    match dir::write_new_certs(&path, std::slice::from_ref(&cert)) {
        Ok(()) => Ok(Added {
            file: path,
            certificate: summarize(&cert, now),
        }),
        // Another `keys add` of the same key won the race.
        Err(KeysDirError::Exists { .. }) if holds(&path, &fingerprint) => {
            Err(AddError::AlreadyTrusted {
                fingerprint: fingerprint.to_hex(),
                file: path.display().to_string(),
            })
        }
        Err(KeysDirError::Exists { path }) => Err(AddError::NameTaken { path }),
        Err(error) => Err(error.into()),
    }
}

/// The key file of `dir` that holds `fingerprint`, if any; every key file
/// must parse, since a broken one could be hiding it.
fn trusted_in(dir: &Path, fingerprint: &Fingerprint) -> Result<Option<PathBuf>, AddError> {
    let files = dir::read_dir(dir).map_err(|error| match error {
        KeysDirError::NotACertificate { path, detail } => AddError::BrokenKeyFile { path, detail },
        other => AddError::Dir(other),
    })?;
    Ok(files
        .into_iter()
        .find(|file| file.certs.iter().any(|c| c.fingerprint() == *fingerprint))
        .map(|file| file.path))
}

fn holds(path: &Path, fingerprint: &Fingerprint) -> bool {
    dir::read_file(path)
        .is_ok_and(|file| file.certs.iter().any(|c| c.fingerprint() == *fingerprint))
}

/// The one certificate in the file at `path`.
pub fn cert_from_file(path: &Path) -> Result<Cert, AddError> {
    let bytes = std::fs::read(path).map_err(|e| AddError::NotACertificate {
        what: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut certs = dir::parse(&bytes).map_err(|e| AddError::NotACertificate {
        what: path.display().to_string(),
        detail: e.to_string(),
    })?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        count => Err(AddError::Several {
            what: path.display().to_string(),
            count,
        }),
    }
}

/// The certificate `fingerprint` from the first source that has it.
pub fn cert_from_sources(fingerprint: &str, sources: &[KeySource]) -> Result<Cert, AddError> {
    let wanted: Fingerprint = fingerprint.parse().map_err(|_| AddError::NotACertificate {
        what: fingerprint.to_string(),
        detail: "not a file and not a fingerprint (40 or 64 hex digits)".to_string(),
    })?;
    let mut problems = Vec::new();
    for source in sources.iter().filter(|s| **s != KeySource::Wkd) {
        match fetch::fetch(source, &wanted, &[]) {
            Ok(certs) => match certs.into_iter().find(|c| c.fingerprint() == wanted) {
                Some(cert) => return Ok(cert),
                None => problems.push(format!("{}: sent other certificates", source.label())),
            },
            Err(error) => problems.push(error.to_string()),
        }
    }
    Err(AddError::NotFetched {
        fingerprint: wanted.to_hex(),
        problems: problems.join("; "),
    })
}
