//! Owns: `digests/<stage>.txt` exactly as StageX writes it: one line per
//! built package, `<manifest sha256 hex> <stage>-<name>`, sorted by name,
//! where the digest is the per-platform image manifest's. Both sides: the
//! write side (format, scan `out/`, write) and THE read side
//! (`read_release`: a file or a directory of them; reproduce-before-sign,
//! publish, preseed and `--deps-from` use it), plus the pure comparison of
//! `out/` with a release (`check`). Formatting and comparing are pure;
//! scanning reads `out/`. Must not fetch or build anything.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::image::OutDir;
use crate::oci::layout::write_atomic;
use crate::oci::{Digest, Platform};

/// `<stage>` -> sorted `(<stage>-<name>, digest)`.
pub type DigestsByStage = BTreeMap<String, Vec<(String, Digest)>>;

/// The text of one stage's file.
pub fn format_stage(entries: &[(String, Digest)]) -> String {
    let mut sorted: Vec<&(String, Digest)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(name, digest)| format!("{} {name}\n", digest.hex()))
        .collect()
}

/// Every built package under `out_root` (`OutDir::images`, ids
/// `<stage>-<name>`), grouped by stage.
pub fn scan(out_root: &Path, platform: &Platform) -> Result<DigestsByStage> {
    let out = OutDir::open(out_root);
    let mut by_stage: DigestsByStage = BTreeMap::new();
    for id in out.images()? {
        let Some((stage, _)) = id.split_once('-') else {
            continue;
        };
        let manifest = out
            .manifest_digest(&id, platform)
            .with_context(|| format!("reading {}", out.path(&id).display()))?;
        by_stage
            .entry(stage.to_string())
            .or_default()
            .push((id.clone(), manifest.digest));
    }
    for entries in by_stage.values_mut() {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(by_stage)
}

/// Writes `digests_dir/<stage>.txt` for every stage found; returns the files.
pub fn write(digests: &DigestsByStage, digests_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(digests_dir)
        .with_context(|| format!("creating {}", digests_dir.display()))?;
    let mut written = Vec::new();
    for (stage, entries) in digests {
        let path = digests_dir.join(format!("{stage}.txt"));
        write_atomic(&path, format_stage(entries).as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// A release's digests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DigestsError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason} (expected `<sha256 hex> <stage>-<name>`)")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{first} and {second} both list {name} with different digests")]
    Conflict {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{0}: no digests/<stage>.txt file in it")]
    Empty(PathBuf),
}

/// Parses the text of one digests file (pure): `<name> -> digest`. Blank
/// lines are skipped; anything else that is not `<64 hex> <stage>-<name>`
/// is an error naming the line.
pub fn parse_release(path: &Path, text: &str) -> Result<BTreeMap<String, Digest>, DigestsError> {
    let mut found = BTreeMap::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: &str| DigestsError::Line {
            path: path.to_path_buf(),
            line: at + 1,
            reason: reason.to_string(),
        };
        let (hex, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("no package name"))?;
        let name = name.trim();
        let digest = Digest::from_hex(hex).map_err(|e| bad(&format!("{e:#}")))?;
        if !valid_id(name) {
            return Err(bad(&format!("{name:?} is not a <stage>-<name> id")));
        }
        if found.insert(name.to_string(), digest).is_some() {
            return Err(bad(&format!("{name} is listed twice")));
        }
    }
    Ok(found)
}

fn valid_id(name: &str) -> bool {
    name.split_once('-')
        .is_some_and(|(stage, rest)| !stage.is_empty() && !rest.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

/// The digests of a release: `path` is one `<stage>.txt` file or a
/// directory whose `*.txt` files are read (sorted). Every package id once.
pub fn read_release(path: &Path) -> Result<BTreeMap<String, Digest>, DigestsError> {
    let io = |e| DigestsError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let files = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let file = entry.map_err(io)?.path();
            if file.extension().is_some_and(|e| e == "txt") && file.is_file() {
                files.push(file);
            }
        }
        if files.is_empty() {
            return Err(DigestsError::Empty(path.to_path_buf()));
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut all: BTreeMap<String, (Digest, PathBuf)> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| DigestsError::Io {
            path: file.clone(),
            source: e,
        })?;
        for (name, digest) in parse_release(&file, &text)? {
            if let Some((other, first)) = all.get(&name) {
                if *other != digest {
                    return Err(DigestsError::Conflict {
                        name,
                        first: first.clone(),
                        second: file,
                    });
                }
                continue;
            }
            all.insert(name, (digest, file.clone()));
        }
    }
    Ok(all.into_iter().map(|(n, (d, _))| (n, d)).collect())
}

/// How one package of `out/` compares with the release.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckStatus {
    Match {
        digest: Digest,
    },
    Mismatch {
        expected: Digest,
        actual: Digest,
    },
    /// Listed in the release, not in `out/`.
    Missing {
        expected: Digest,
    },
    /// In `out/`, not listed in the release.
    Extra {
        actual: Digest,
    },
}

/// One package's line of `digests --check`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckEntry {
    pub package: String,
    #[serde(flatten)]
    pub status: CheckStatus,
}

/// Compares the release with what `out/` holds (pure), sorted by package.
pub fn check(release: &BTreeMap<String, Digest>, out: &DigestsByStage) -> Vec<CheckEntry> {
    let built: BTreeMap<&String, &Digest> = out.values().flatten().map(|(n, d)| (n, d)).collect();
    let mut names: Vec<&String> = release.keys().chain(built.keys().copied()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let status = match (release.get(name), built.get(name)) {
                (Some(e), Some(a)) if e == *a => CheckStatus::Match { digest: e.clone() },
                (Some(e), Some(a)) => CheckStatus::Mismatch {
                    expected: e.clone(),
                    actual: (*a).clone(),
                },
                (Some(e), None) => CheckStatus::Missing {
                    expected: e.clone(),
                },
                (None, Some(a)) => CheckStatus::Extra {
                    actual: (*a).clone(),
                },
                (None, None) => unreachable!("every name comes from one side"),
            };
            CheckEntry {
                package: name.clone(),
                status,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_lines_parse_and_bad_lines_are_named() {
        let a = Digest::of_bytes(b"a");
        let text = format!("{} core-busybox\n\n{} user-jq\n", a.hex(), a.hex());
        let got = parse_release(Path::new("d/core.txt"), &text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["user-jq"], a);
        let err = parse_release(Path::new("d/core.txt"), "abc core-x\n").unwrap_err();
        assert!(err.to_string().starts_with("d/core.txt:1:"), "{err}");
        let err =
            parse_release(Path::new("d/core.txt"), &format!("{} ../x\n", a.hex())).unwrap_err();
        assert!(err.to_string().contains("not a <stage>-<name>"), "{err}");
        // What format_stage writes, read_release reads back.
        let written = format_stage(&[("core-a".into(), a.clone())]);
        assert_eq!(
            parse_release(Path::new("x"), &written).unwrap()["core-a"],
            a
        );
    }

    #[test]
    fn check_reports_match_mismatch_missing_extra() {
        let d = |s: &str| Digest::of_bytes(s.as_bytes());
        let release: BTreeMap<String, Digest> = [
            ("core-a".to_string(), d("a")),
            ("core-b".to_string(), d("b")),
            ("core-c".to_string(), d("c")),
        ]
        .into();
        let out: DigestsByStage = [(
            "core".to_string(),
            vec![
                ("core-a".to_string(), d("a")),
                ("core-b".to_string(), d("B")),
                ("core-z".to_string(), d("z")),
            ],
        )]
        .into();
        let got: Vec<(String, CheckStatus)> = check(&release, &out)
            .into_iter()
            .map(|e| (e.package, e.status))
            .collect();
        assert_eq!(
            got,
            vec![
                ("core-a".into(), CheckStatus::Match { digest: d("a") }),
                (
                    "core-b".into(),
                    CheckStatus::Mismatch {
                        expected: d("b"),
                        actual: d("B")
                    }
                ),
                ("core-c".into(), CheckStatus::Missing { expected: d("c") }),
                ("core-z".into(), CheckStatus::Extra { actual: d("z") }),
            ]
        );
    }

    #[test]
    fn lines_are_hex_space_name_sorted_by_name() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let text = format_stage(&[
            ("core-zlib".into(), a.clone()),
            ("core-busybox".into(), b.clone()),
        ]);
        assert_eq!(
            text,
            format!("{} core-busybox\n{} core-zlib\n", b.hex(), a.hex())
        );
    }
}
