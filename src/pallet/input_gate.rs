//! Owns: the quorum gate on a pallet's inputs: every pinned package
//! manifest must carry valid signatures by `threshold` distinct trusted
//! maintainers, or nothing is written. Also the rule for when the gate is
//! skipped (`--no-verify`, or no trusted keys when no flag asked for it).
//!
//! It must not parse flags, print, or count signers: `cli/pallet.rs`
//! gathers the trust settings, `sign::gate` counts, this decides and reports.
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};
use thiserror::Error;

use super::resolve::Pinned;
use crate::sign::check::ImageReport;
use crate::sign::gate::{self, QuorumMissed, ShortImage};
use crate::sign::image::ImageTarget;
use crate::sign::keyring::Keyring;
use crate::sign::trust::Trust;

/// An error of a module that still reports through `anyhow` (the keyring,
/// reference parsing), kept whole: its message names the file or reference.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the inputs may not be composed.
#[derive(Debug, Error)]
pub enum InputsError {
    /// A trust flag asked for verification, but the keys directory holds no key.
    #[error(
        "{}: no trusted certificates; add maintainer keys (gpg --export FPR > {}/NAME.asc) or pass --no-verify",
        .keys.display(),
        .keys.display()
    )]
    NoKeys { keys: PathBuf },
    /// The keys could not be listed or loaded (the message names the file).
    #[error(transparent)]
    Keys(Cause),
    /// A pinned input has no valid reference in the namespace.
    #[error(transparent)]
    Reference(Cause),
    #[error(
        "{} input(s) miss the quorum of {} distinct trusted signers (keys {}, signatures from {}): {}; nothing was written (--no-verify to compose anyway)",
        .0.short.len(),
        .0.threshold,
        .0.keys.display(),
        .0.lookaside,
        .0.short.iter().map(missed_input).collect::<Vec<_>>().join(", ")
    )]
    QuorumMissed(QuorumMissed),
}

/// `REFERENCE (N/T signers[, lookaside error])`.
fn missed_input(short: &ShortImage) -> String {
    let error = short
        .error
        .as_ref()
        .map(|e| format!(", {e}"))
        .unwrap_or_default();
    format!(
        "{} ({}/{} signers{error})",
        short.image, short.valid_signers, short.threshold
    )
}

/// Whether the pinned inputs were verified, or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputStatus {
    Verified,
    /// `--no-verify`.
    SkippedNoVerify,
    /// The keys directory holds no key and no trust flag asked for one.
    SkippedNoKeys(PathBuf),
}

impl fmt::Display for InputStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputStatus::Verified => f.write_str("verified"),
            InputStatus::SkippedNoVerify => f.write_str("skipped (--no-verify)"),
            InputStatus::SkippedNoKeys(keys) => {
                write!(f, "skipped (no trusted keys in {})", keys.display())
            }
        }
    }
}

/// Reports say the status in words (`verified`, `skipped (...)`).
impl Serialize for InputStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Whether and how the pinned inputs were verified.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub status: InputStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageReport>,
}

/// The keyring the gate runs with, or `None` when it is skipped: a keys
/// directory that does not exist or holds no key file (only a README, say)
/// skips it unless a trust flag asked for verification (`asked`), in which
/// case it is an error. Any other failure to load the keys (an unreadable
/// directory, a malformed key file) is an error naming the file: a broken
/// key must never silently turn the gate off.
pub fn gate_keyring(keys: &Path, asked: bool) -> Result<Option<Keyring>, InputsError> {
    let files = Keyring::key_files(keys).map_err(|e| InputsError::Keys(e.into()))?;
    if files.is_empty() {
        return match asked {
            false => Ok(None),
            true => Err(InputsError::NoKeys {
                keys: keys.to_path_buf(),
            }),
        };
    }
    let keyring = Keyring::load_dir(keys).map_err(|e| InputsError::Keys(e.into()))?;
    Ok(Some(keyring))
}

/// The report of a gate that did not run.
pub fn not_verified(no_verify: bool, keys: &Path) -> Verification {
    let status = match no_verify {
        true => InputStatus::SkippedNoVerify,
        false => InputStatus::SkippedNoKeys(keys.to_path_buf()),
    };
    Verification {
        status,
        images: vec![],
    }
}

/// The manifests to gate: each pinned manifest once, as
/// `<namespace>/<name>@<manifest>` on its platform.
fn input_targets(namespace: &str, pinned: &[Pinned]) -> Result<Vec<ImageTarget>, InputsError> {
    let namespace = namespace.trim_end_matches('/');
    let mut seen = BTreeSet::new();
    let mut targets = Vec::new();
    for pin in pinned.iter().filter(|p| seen.insert(p.manifest.clone())) {
        let mut target = ImageTarget::in_namespace(namespace, &pin.name, pin.manifest.clone())
            .map_err(|e| InputsError::Reference(e.into()))?;
        target.name = format!("{namespace}/{}@{}", pin.name, pin.manifest);
        target.platform = Some(pin.platform.clone());
        targets.push(target);
    }
    Ok(targets)
}

/// Checks every pinned input (each manifest once, named in `namespace`)
/// through the one quorum gate; the error lists every input that misses it.
pub fn verify_inputs(
    trust: &Trust,
    namespace: &str,
    pinned: &[Pinned],
) -> Result<Verification, InputsError> {
    let targets = input_targets(namespace, pinned)?;
    let passed = gate::check(trust, &trust.options, &targets).map_err(InputsError::QuorumMissed)?;
    Ok(Verification {
        status: InputStatus::Verified,
        images: passed.reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quorum_error_names_each_input_the_keys_and_the_way_out() {
        let short = ShortImage {
            image: "stagex/core-b@sha256:ab".into(),
            platform: Some("linux/amd64".into()),
            digest: "sha256:ab".into(),
            valid_signers: 1,
            threshold: 2,
            signed_by: vec!["ABCD (Alice)".into()],
            rejected: vec![],
            error: Some("connection refused".into()),
        };
        let err = InputsError::QuorumMissed(QuorumMissed {
            short: vec![short],
            reports: vec![],
            threshold: 2,
            keys: "maintainers".into(),
            lookaside: "signatures".into(),
        });
        let text = err.to_string();
        for want in [
            "1 input(s) miss the quorum of 2",
            "keys maintainers, signatures from signatures",
            "stagex/core-b@sha256:ab (1/2 signers, connection refused)",
            "nothing was written (--no-verify to compose anyway)",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
    }

    #[test]
    fn statuses_read_as_words_in_reports() {
        let json = serde_json::to_value(not_verified(false, Path::new("keys"))).unwrap();
        assert_eq!(json["status"], "skipped (no trusted keys in keys)");
        let json = serde_json::to_value(not_verified(true, Path::new("keys"))).unwrap();
        assert_eq!(json["status"], "skipped (--no-verify)");
        assert_eq!(InputStatus::Verified.to_string(), "verified");
    }

    #[test]
    fn a_missing_keys_directory_skips_the_gate_unless_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("keys");
        assert!(gate_keyring(&keys, false).unwrap().is_none());
        let err = format!("{:#}", gate_keyring(&keys, true).unwrap_err());
        assert!(err.contains(&keys.display().to_string()), "{err}");
    }

    #[test]
    fn a_keys_directory_with_only_a_readme_skips_the_gate_unless_asked() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("README.md"), "maintainer keys go here").unwrap();
        assert!(gate_keyring(tmp.path(), false).unwrap().is_none());
        let err = format!("{:#}", gate_keyring(tmp.path(), true).unwrap_err());
        assert!(err.contains("no trusted certificates"), "{err}");
        assert!(err.contains("--no-verify"), "{err}");
    }

    #[test]
    fn a_malformed_key_file_is_an_error_naming_it_not_a_skip() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("alice.asc");
        std::fs::write(&bad, "-----BEGIN PGP PUBLIC KEY BLOCK-----\ngarbage\n").unwrap();
        for asked in [false, true] {
            let err = format!("{:#}", gate_keyring(tmp.path(), asked).unwrap_err());
            assert!(err.contains(&bad.display().to_string()), "{err}");
        }
    }
}
