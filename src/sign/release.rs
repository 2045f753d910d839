//! Owns: the release's committed digests as `sign` and `verify` read them
//! (`digests/<stage>.txt`, one `<manifest hex> <stage>-<name>` per line, as
//! StageX writes it): loading a file or a directory of them, the
//! reproduce-before-sign gate (an out/ image is signed only when its digest
//! is the committed one: a release signature means "I reproduced this"),
//! and verification targets built from the digests alone (no out/, no
//! registry). Parsing and the gate are pure; only `load` reads files. It
//! does not write digests (see `build::digests`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::image::{is_reference, ImageTarget};
use super::reference::DockerReference;
use crate::oci::digest::Digest;

/// One committed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseEntry {
    /// `<stage>-<name>`.
    pub name: String,
    pub digest: Digest,
    /// `file:line`, for messages.
    pub source: String,
}

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

/// Parses one digests file's text; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Vec<ReleaseEntry>> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{source}:{}", n + 1);
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(name), None) = (fields.next(), fields.next(), fields.next()) else {
            bail!("{at}: expected `<sha256 hex> <stage>-<name>`, found {line:?}");
        };
        let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
        let digest = Digest::from_hex(hex).with_context(|| format!("{at}: bad digest"))?;
        entries.push(ReleaseEntry {
            name: name.to_string(),
            digest,
            source: at,
        });
    }
    Ok(entries)
}

impl ReleaseDigests {
    /// From entries; one name listed twice with different digests is an error.
    pub fn from_entries(list: Vec<ReleaseEntry>) -> Result<ReleaseDigests> {
        let mut release = ReleaseDigests::default();
        for entry in list {
            if let Some(&i) = release.by_name.get(&entry.name) {
                let first = &release.entries[i];
                if first.digest != entry.digest {
                    bail!(
                        "{} is listed twice with different digests ({} and {}): fix the digests files",
                        entry.name,
                        first.source,
                        entry.source
                    );
                }
                continue;
            }
            release
                .by_name
                .insert(entry.name.clone(), release.entries.len());
            release.entries.push(entry);
        }
        Ok(release)
    }

    /// Reads files, or every `*.txt` in directories (sorted).
    pub fn load(paths: &[PathBuf]) -> Result<ReleaseDigests> {
        let mut list = Vec::new();
        for path in paths {
            for file in digest_files(path)? {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                list.extend(parse(&text, &file.display().to_string())?);
            }
        }
        ReleaseDigests::from_entries(list)
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
        let namespace = namespace.trim_end_matches('/');
        self.entries
            .iter()
            .map(|e| {
                let text = format!("{namespace}/{}@{}", e.name, e.digest);
                let reference = DockerReference::parse(&text)
                    .with_context(|| format!("{}: image name {:?}", e.source, e.name))?;
                Ok(ImageTarget {
                    name: e.name.clone(),
                    digest: e.digest.clone(),
                    platform: None,
                    identity: reference.repository(),
                    repository_path: reference.path.clone(),
                    reference,
                })
            })
            .collect()
    }
}

/// A file as given, or the sorted `*.txt` files of a directory.
fn digest_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.is_file() {
            bail!(
                "{}: no such digests file or directory (pass digests/ or digests/<stage>.txt)",
                path.display()
            );
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", path.display()))?;
    files.retain(|f| f.extension().is_some_and(|x| x == "txt") && f.is_file());
    files.sort();
    if files.is_empty() {
        bail!("{}: holds no <stage>.txt digests file", path.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

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
