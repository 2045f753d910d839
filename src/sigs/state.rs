//! Owns: the small state file of `stagex sigs sync` that makes a run with
//! nothing new cheap: per image, each source file's validators (ETag,
//! Last-Modified), content hash and verdict, and whether the destination
//! held every valid one after the last run. It is only a cache: a missing,
//! unreadable or foreign state (other keys, other options) means a full
//! run, never a wrong one; it is written atomically.
//!
//! Default place: `$XDG_CACHE_HOME/stagex/sigs-sync/<hash of from+to>.json`
//! (else `~/.cache/...`). No network; no UI.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::judge::Verdict;
use crate::lookaside::fetch::Validators;
use crate::oci::digest::Digest;

const VERSION: u32 = 1;

/// The whole state of one (source, destination) pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// What the verdicts depend on (keys, options); a change voids them.
    pub trust: String,
    /// By image key (`<repository path>@sha256=<hex>`).
    pub images: BTreeMap<String, ImageState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageState {
    /// The identity the verdicts were given for.
    #[serde(default)]
    pub reference: String,
    /// The source's files, in order.
    pub files: Vec<FileState>,
    /// The destination held every valid file after the last run.
    pub synced: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    #[serde(flatten)]
    pub validators: Validators,
    /// sha256 of the bytes.
    pub sha256: String,
    pub verdict: Verdict,
}

impl State {
    /// Loads `path` if it exists and was made under the same `trust`;
    /// anything else gives an empty state (a full run).
    pub fn load(path: &Path, trust: &str) -> State {
        let empty = State::empty(trust);
        let Ok(bytes) = std::fs::read(path) else {
            return empty;
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) if state.version == VERSION && state.trust == trust => state,
            _ => empty,
        }
    }

    /// No knowledge: every image gets a full run.
    pub fn empty(trust: &str) -> State {
        State {
            version: VERSION,
            trust: trust.to_string(),
            images: BTreeMap::new(),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self)?;
        crate::oci::layout::write_atomic(path, &bytes)
    }
}

/// The default state file for syncing `from` to `to`.
pub fn default_path(from: &str, to: &str) -> Option<PathBuf> {
    let cache = crate::store::user_cache_dir()?;
    let key = Digest::of_bytes(format!("{from}\n{to}").as_bytes());
    Some(
        cache
            .join("sigs-sync")
            .join(format!("{}.json", &key.hex()[..16])),
    )
}

/// A fingerprint of everything a verdict depends on (the trusted
/// certificates and options; the identity is kept per image).
pub fn trust_key(signers: &[String], options: &str) -> String {
    let mut sorted = signers.to_vec();
    sorted.sort();
    Digest::of_bytes(format!("{}\n{options}", sorted.join(",")).as_bytes())
        .hex()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_foreign_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.json");
        let trust = trust_key(&["B".into(), "A".into()], "legacy=false");
        assert_eq!(trust, trust_key(&["A".into(), "B".into()], "legacy=false"));
        let mut state = State::load(&path, &trust);
        assert!(state.images.is_empty());
        state.images.insert(
            "stagex/x@sha256=00".into(),
            ImageState {
                reference: "docker.io/stagex/x@sha256:00".into(),
                files: vec![FileState {
                    validators: Validators {
                        etag: Some("\"e\"".into()),
                        last_modified: None,
                    },
                    sha256: "ab".into(),
                    verdict: Verdict::Valid { signer: "A".into() },
                }],
                synced: true,
            },
        );
        state.save(&path).unwrap();
        assert_eq!(State::load(&path, &trust), state);
        assert!(State::load(&path, "other").images.is_empty());
        std::fs::write(&path, b"{broken").unwrap();
        assert!(State::load(&path, &trust).images.is_empty());
    }
}
