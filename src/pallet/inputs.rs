//! Owns: the quorum gate on a pallet's inputs: every pinned package
//! manifest must carry valid signatures by `threshold` distinct trusted
//! maintainers, or nothing is written. Also the rule for when the gate is
//! skipped (`--no-verify`, or no trusted keys when no flag asked for it).
//!
//! It must not parse flags or print: `cli/pallet.rs` gathers the trust
//! settings, this decides and reports.
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::resolve::Pinned;
use crate::sign::check::{verify_images, ImageReport};
use crate::sign::image::Resolver;
use crate::sign::keyring::Keyring;
use crate::sign::trust::Trust;

/// Whether and how the pinned inputs were verified.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// `verified`, `skipped (--no-verify)`, or `skipped (no trusted keys in DIR)`.
    pub status: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageReport>,
}

impl Verification {
    fn skipped(why: String) -> Verification {
        Verification {
            status: format!("skipped ({why})"),
            images: vec![],
        }
    }
}

/// What the gate needs once it is decided to run: the one `Trust`, and
/// the resolver naming pinned inputs in the identity namespace.
pub struct InputTrust<'a> {
    pub trust: Trust,
    pub resolver: Resolver<'a>,
}

/// The keyring the gate runs with, or `None` when it is skipped: a keys
/// directory that does not exist or holds no key file (only a README, say)
/// skips it unless a trust flag asked for verification (`asked`), in which
/// case it is an error. Any other failure to load the keys (an unreadable
/// directory, a malformed key file) is an error naming the file: a broken
/// key must never silently turn the gate off.
pub fn gate_keyring(keys: &Path, asked: bool) -> Result<Option<Keyring>> {
    if Keyring::key_files(keys)?.is_empty() {
        if !asked {
            return Ok(None);
        }
        bail!(
            "{}: no trusted certificates; add maintainer keys (gpg --export FPR > {}/NAME.asc) or pass --no-verify",
            keys.display(),
            keys.display()
        );
    }
    Ok(Some(Keyring::load_dir(keys)?))
}

/// The report of a gate that did not run.
pub fn not_verified(no_verify: bool, keys: &Path) -> Verification {
    if no_verify {
        Verification::skipped("--no-verify".into())
    } else {
        Verification::skipped(format!("no trusted keys in {}", keys.display()))
    }
}

/// Checks every pinned input (each manifest once) against the quorum;
/// an error lists every input that misses it.
pub fn verify_inputs(trust: &InputTrust<'_>, pinned: &[Pinned]) -> Result<Verification> {
    let mut seen = BTreeSet::new();
    let mut targets = Vec::new();
    for pin in pinned {
        if seen.insert(pin.manifest.clone()) {
            let reference = format!(
                "{}/{}@{}",
                trust.resolver.namespace.trim_end_matches('/'),
                pin.name,
                pin.manifest
            );
            let mut found = trust.resolver.resolve(&reference)?;
            for t in &mut found {
                t.platform = Some(pin.platform.clone());
            }
            targets.extend(found);
        }
    }
    let images = verify_images(
        &trust.trust.keyring,
        &trust.trust.lookaside,
        &targets,
        trust.trust.threshold,
        &trust.trust.options,
    );
    let missed: Vec<String> = images
        .iter()
        .filter(|r| !r.quorum)
        .map(|r| {
            format!(
                "{} ({}/{} signers{})",
                r.image,
                r.valid_signers,
                r.threshold,
                r.error
                    .as_ref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !missed.is_empty() {
        bail!(
            "{} input(s) miss the quorum of {} distinct trusted signers (keys {}, signatures from {}): {}; nothing was written (--no-verify to compose anyway)",
            missed.len(),
            trust.trust.threshold,
            trust.trust.keys.display(),
            trust.trust.lookaside.describe(),
            missed.join(", ")
        );
    }
    Ok(Verification {
        status: "verified".into(),
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
