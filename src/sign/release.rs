//! Owns: the release's committed digests as `sign` and `verify` read them
//! (`digests/<stage>.txt`, one `<manifest hex> <stage>-<name>` per line, as
//! StageX writes it): loading a file or a directory of them, the
//! reproduce-before-sign gate (an out/ image is signed only when its digest
//! is the committed one: a release signature means "I reproduced this"),
//! and verification targets built from the digests alone (no out/, no
//! registry; `load_targets`, the one loader behind `verify --digests`,
//! `release status` and `release notes`). The gate is pure; parsing and reading are
//! `release::digests`'s (the one reader of that format). It does not write
//! digests.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use super::image::{is_reference, ImageTarget};
use crate::oci::digest::Digest;
use crate::release::digests;
pub use crate::release::digests::ReleaseEntry;

/// Every committed digest of a release.
#[derive(Clone, Debug, Default)]
pub struct ReleaseDigests {
    entries: Vec<ReleaseEntry>,
    by_name: BTreeMap<String, usize>,
}

/// What the gate says about one out/ image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// The digest is the committed one: sign.
    Reproduced,
    /// Committed with another digest: not reproduced, do not sign.
    Mismatch { committed: Digest, source: String },
    /// Not in the digests at all.
    Missing,
}

impl ReleaseDigests {
    /// From entries; one name listed twice with different digests is an
    /// error (`digests::unique`).
    pub fn from_entries(list: Vec<ReleaseEntry>) -> Result<ReleaseDigests> {
        let entries = digests::unique(list)?;
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(ReleaseDigests { entries, by_name })
    }

    /// Reads files, or every `*.txt` in directories (sorted), through
    /// `digests::read_entries`.
    pub fn load(paths: &[PathBuf]) -> Result<ReleaseDigests> {
        ReleaseDigests::from_entries(digests::read_entries(paths)?)
    }

    pub fn entries(&self) -> &[ReleaseEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&ReleaseEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The reproduce-before-sign rule for one target: a package from out/
    /// must carry its committed digest; an image reference's digest must
    /// be committed under some name.
    pub fn gate(&self, target: &ImageTarget) -> Gate {
        if is_reference(&target.name) {
            return match self.entries.iter().any(|e| e.digest == target.digest) {
                true => Gate::Reproduced,
                false => Gate::Missing,
            };
        }
        match self.get(&target.name) {
            Some(e) if e.digest == target.digest => Gate::Reproduced,
            Some(e) => Gate::Mismatch {
                committed: e.digest.clone(),
                source: e.source.clone(),
            },
            None => Gate::Missing,
        }
    }

    /// One verification target per entry: `<namespace>/<name>@sha256:<hex>`
    /// (looked up by digest, so any signed tag of the repository matches
    /// under `matchRepoDigestOrExact`).
    pub fn targets(&self, namespace: &str) -> Result<Vec<ImageTarget>> {
        ImageTarget::from_entries(namespace, &self.entries)
    }

    /// The verification targets of a whole release, from its digests files
    /// or directories alone (as `targets`). A name listed twice with
    /// different digests, or no entry at all, is an error. The one loader
    /// behind `verify --digests` and `release status` / `notes`.
    pub fn load_targets(
        paths: &[PathBuf],
        namespace: &str,
    ) -> Result<Vec<ImageTarget>, ReleaseTargetsError> {
        let entries = digests::unique(digests::read_entries(paths)?)?;
        if entries.is_empty() {
            let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(ReleaseTargetsError::Empty(named.join(", ")));
        }
        ImageTarget::from_entries(namespace, &entries).map_err(ReleaseTargetsError::Target)
    }
}

/// Why a release's digests gave no verification targets.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseTargetsError {
    #[error(transparent)]
    Digests(#[from] digests::DigestsError),
    #[error("{0}: the digests list no image, so there is nothing to verify (pass the release's digests/ or digests/<stage>.txt files)")]
    Empty(String),
    /// An entry whose name makes no image reference (its `file:line` first).
    #[error("{0:#}")]
    Target(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::reference::DockerReference;
    use std::path::Path;

    fn parse(text: &str, file: &str) -> Result<Vec<ReleaseEntry>> {
        Ok(digests::parse_entries(Path::new(file), text)?)
    }

    fn target(name: &str, digest: &Digest) -> ImageTarget {
        let text = match is_reference(name) {
            true => name.to_string(),
            false => format!("stagex/{name}:1"),
        };
        let reference = DockerReference::parse(&text).unwrap();
        ImageTarget {
            name: name.to_string(),
            digest: digest.clone(),
            platform: None,
            identity: reference.to_string(),
            repository_path: reference.path.clone(),
            reference,
        }
    }

    #[test]
    fn gate_signs_only_reproduced_images() {
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        let text = format!("{} core-a\n\n{} core-b\n", a.hex(), b.hex());
        let release = ReleaseDigests::from_entries(parse(&text, "core.txt").unwrap()).unwrap();
        assert_eq!(release.gate(&target("core-a", &a)), Gate::Reproduced);
        assert_eq!(
            release.gate(&target("core-b", &a)),
            Gate::Mismatch {
                committed: b.clone(),
                source: "core.txt:3".into()
            }
        );
        assert_eq!(release.gate(&target("core-c", &a)), Gate::Missing);
        let by_ref = target(&format!("stagex/core-a@{a}"), &a);
        assert_eq!(release.gate(&by_ref), Gate::Reproduced);
        let t = release.targets("stagex").unwrap();
        assert_eq!(
            t[0].reference.to_string(),
            format!("docker.io/stagex/core-a@{a}")
        );
        assert_eq!(t[1].repository_path, "stagex/core-b");
    }

    #[test]
    fn digests_entries_become_targets_by_repository() {
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        let text = format!("{} core-a\n{} core-b\n", a.hex(), b.hex());
        let release = ReleaseDigests::from_entries(parse(&text, "core.txt").unwrap()).unwrap();
        let local = release.targets("127.0.0.1:5000/stagex/").unwrap();
        assert_eq!(local[1].identity, "127.0.0.1:5000/stagex/core-b");
        let t = &ReleaseDigests::from_entries(parse(&text, "core.txt").unwrap())
            .unwrap()
            .targets("stagex")
            .unwrap()[0];
        // By digest: any signed tag of the repository counts, and the
        // identity a new signature would carry is the repository.
        assert_eq!(t.identity, "docker.io/stagex/core-a");
        let signed = DockerReference::parse("stagex/core-a:1.0").unwrap();
        assert!(t.reference.matches_signed(&signed));
        let release = ReleaseDigests::from_entries(parse(&text, "x.txt").unwrap()).unwrap();
        let err = release.targets("Not A/Namespace").unwrap_err();
        assert!(format!("{err:#}").contains("x.txt:1"), "{err:#}");
    }

    #[test]
    fn load_targets_reads_files_and_refuses_a_release_listing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = Digest::of_bytes(b"a");
        let core = dir.path().join("core.txt");
        std::fs::write(&core, format!("{} core-a\n", a.hex())).unwrap();
        let targets = ReleaseDigests::load_targets(&[dir.path().to_path_buf()], "stagex").unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].repository_path, "stagex/core-a");
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing yet\n").unwrap();
        let err = ReleaseDigests::load_targets(std::slice::from_ref(&empty), "stagex").unwrap_err();
        assert!(matches!(err, ReleaseTargetsError::Empty(_)), "{err}");
        assert!(err.to_string().contains("empty.txt"), "{err}");
        let err = ReleaseDigests::load_targets(&[core], "Not A/Namespace").unwrap_err();
        assert!(err.to_string().contains("core.txt:1"), "{err}");
    }

    #[test]
    fn malformed_and_conflicting_lines_name_their_place() {
        let err = parse("abc core-a\n", "x.txt").unwrap_err();
        assert!(format!("{err:#}").contains("x.txt:1"), "{err:#}");
        assert!(parse(&format!("{} \n", "ab".repeat(32)), "x.txt").is_err());
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        let mut list = parse(&format!("{} core-a\n", a.hex()), "one.txt").unwrap();
        list.extend(parse(&format!("{} core-a\n", b.hex()), "two.txt").unwrap());
        let err = ReleaseDigests::from_entries(list).unwrap_err().to_string();
        assert!(
            err.contains("one.txt:1") && err.contains("two.txt:1"),
            "{err}"
        );
    }
}
