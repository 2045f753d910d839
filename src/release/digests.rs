//! Owns: `digests/<stage>.txt` exactly as StageX writes it: one line per
//! built package, `<manifest sha256 hex> <stage>-<name>`, sorted by name,
//! where the digest is the per-platform image manifest's. Both sides: the
//! write side (format, scan `out/`, write) and THE read side
//! (`parse_entries`, `read_entries`/`read_release`: a file or a directory
//! of them, lines kept as `file:line` for messages; sign's
//! reproduce-before-sign, `verify --digests`, `sigs`, preseed and
//! `--deps-from` all read through it), plus the pure comparison of
//! `out/` with a release (`check`). Formatting and comparing are pure;
//! scanning checks `out/` and reads the digests from what was checked. Must not fetch or build anything.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::image::{CheckedImages, OutDir};
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
/// `<stage>-<name>`), grouped by stage; every blob of every image is
/// checked against its name first (`OutDir::check_blobs`), and the
/// digests are taken from what that check read (`scan_checked`).
pub fn scan(out_root: &Path, platform: &Platform) -> Result<DigestsByStage> {
    let out = OutDir::open(out_root);
    let ids = out.images()?;
    // A digest is only written or said to match for bytes that hash to it.
    let checked = out.check_blobs(&ids)?;
    scan_checked(&checked, platform)
}

/// The digests of checked images, grouped by stage (pure: the manifests
/// are the ones the check hashed, whatever `out/` holds now).
pub fn scan_checked(checked: &CheckedImages, platform: &Platform) -> Result<DigestsByStage> {
    let mut by_stage: DigestsByStage = BTreeMap::new();
    for image in &checked.images {
        let Some((stage, _)) = image.id.split_once('-') else {
            continue;
        };
        let manifest = image
            .manifest_digest(platform)
            .with_context(|| format!("reading {}", image.path.display()))?;
        by_stage
            .entry(stage.to_string())
            .or_default()
            .push((image.id.clone(), manifest.digest));
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
    #[error("{at}: {reason} (expected `<sha256 hex> <stage>-<name>`)")]
    Line { at: String, reason: String },
    #[error("{name} is listed twice with different digests ({first} and {second}): fix the digests files")]
    Conflict {
        name: String,
        first: String,
        second: String,
    },
    #[error("{0}: no such digests file or directory (pass digests/ or digests/<stage>.txt)")]
    NotFound(PathBuf),
    #[error("{0}: no digests/<stage>.txt file in it (run `stagex digests`, or pass the files)")]
    Empty(PathBuf),
}

/// One line of a digests file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseEntry {
    /// `<stage>-<name>`.
    pub name: String,
    pub digest: Digest,
    /// `file:line`, for messages.
    pub source: String,
}

/// Parses the text of one digests file (pure), in file order. Blank lines
/// and `#` comments are skipped; the digest may carry a `sha256:` prefix;
/// anything else that is not `<64 hex> <stage>-<name>` is an error naming
/// `path:line`.
pub fn parse_entries(path: &Path, text: &str) -> Result<Vec<ReleaseEntry>, DigestsError> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        let bad = |reason: String| DigestsError::Line {
            at: at.clone(),
            reason,
        };
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(name), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad(format!("found {line:?}")));
        };
        let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
        let digest = Digest::from_hex(hex).map_err(|e| bad(format!("{e:#}")))?;
        if !valid_id(name) {
            return Err(bad(format!("{name:?} is not a <stage>-<name> id")));
        }
        entries.push(ReleaseEntry {
            name: name.to_string(),
            digest,
            source: at,
        });
    }
    Ok(entries)
}

/// Each name once (the first line kept); one name with two digests is a
/// `Conflict` naming both lines.
pub fn unique(entries: Vec<ReleaseEntry>) -> Result<Vec<ReleaseEntry>, DigestsError> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept: Vec<ReleaseEntry> = Vec::new();
    for entry in entries {
        match seen.get(&entry.name) {
            Some(&i) if kept[i].digest != entry.digest => {
                return Err(DigestsError::Conflict {
                    name: entry.name,
                    first: kept[i].source.clone(),
                    second: entry.source,
                })
            }
            Some(_) => {}
            None => {
                seen.insert(entry.name.clone(), kept.len());
                kept.push(entry);
            }
        }
    }
    Ok(kept)
}

/// Parses one file's text into `<name> -> digest` (pure; see
/// `parse_entries` and `unique`).
pub fn parse_release(path: &Path, text: &str) -> Result<BTreeMap<String, Digest>, DigestsError> {
    Ok(to_map(unique(parse_entries(path, text)?)?))
}

fn to_map(entries: Vec<ReleaseEntry>) -> BTreeMap<String, Digest> {
    entries.into_iter().map(|e| (e.name, e.digest)).collect()
}

fn valid_id(name: &str) -> bool {
    name.split_once('-')
        .is_some_and(|(stage, rest)| !stage.is_empty() && !rest.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

/// THE reader of a release's digests: each of `paths` is one
/// `<stage>.txt` file or a directory whose `*.txt` files are read
/// (sorted); every package id once, in the order read (`unique`).
pub fn read_entries(paths: &[PathBuf]) -> Result<Vec<ReleaseEntry>, DigestsError> {
    let mut entries = Vec::new();
    for path in paths {
        for file in digest_files(path)? {
            let text = std::fs::read_to_string(&file).map_err(|e| DigestsError::Io {
                path: file.clone(),
                source: e,
            })?;
            entries.extend(parse_entries(&file, &text)?);
        }
    }
    unique(entries)
}

/// `read_entries` of one file or directory, as `<name> -> digest`.
pub fn read_release(path: &Path) -> Result<BTreeMap<String, Digest>, DigestsError> {
    Ok(to_map(read_entries(&[path.to_path_buf()])?))
}

/// A file as given, or the sorted `*.txt` files of a directory.
fn digest_files(path: &Path) -> Result<Vec<PathBuf>, DigestsError> {
    if !path.is_dir() {
        if !path.is_file() {
            return Err(DigestsError::NotFound(path.to_path_buf()));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let io = |e| DigestsError::Io {
        path: path.to_path_buf(),
        source: e,
    };
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
    Ok(files)
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
        // Comments, a `sha256:` prefix and a repeated line are accepted;
        // two digests for one name, or a third field, are not.
        let text = format!("# core\nsha256:{} core-a\n{} core-a\n", a.hex(), a.hex());
        assert_eq!(parse_release(Path::new("x"), &text).unwrap()["core-a"], a);
        let b = Digest::of_bytes(b"b");
        let text = format!("{} core-a\n{} core-a\n", a.hex(), b.hex());
        let err = parse_release(Path::new("x"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("x:1") && err.contains("x:2"), "{err}");
        let text = format!("{} core-a extra\n", a.hex());
        assert!(parse_release(Path::new("x"), &text).is_err());
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
