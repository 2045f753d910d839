//! Owns: reading one release of a StageX tree, from a directory or a git
//! ref of the repository, into a `Snapshot`: every package image with its
//! version and defining package, and the committed digests. A git ref is
//! exported with `git archive` into a temp dir (the tar crate's unpack:
//! no entry may leave it) and read like a directory.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::oci::digest::Digest;
use crate::package::load::PackageTree;
use crate::release::digests;
use crate::settings::Settings;

/// One release of the tree, as the notes compare it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The ref or directory it was read from.
    pub label: String,
    pub packages: BTreeMap<String, SnapshotPackage>,
    pub digests: BTreeMap<String, Digest>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPackage {
    pub version: Option<String>,
    /// The defining package of a subpackage.
    pub origin: Option<String>,
}

/// Where a release is read from.
pub enum TreeRef {
    Dir(PathBuf),
    Git { repo: PathBuf, rev: String },
}

impl TreeRef {
    /// An existing directory, else a git ref of `repo`.
    pub fn parse(text: &str, repo: &Path) -> TreeRef {
        let path = Path::new(text);
        if path.is_dir() {
            TreeRef::Dir(path.to_path_buf())
        } else {
            TreeRef::Git {
                repo: repo.to_path_buf(),
                rev: text.to_string(),
            }
        }
    }

    pub fn is_git(&self) -> bool {
        matches!(self, TreeRef::Git { .. })
    }
}

/// Reads the release `tree` names.
pub fn read(tree: &TreeRef) -> Result<Snapshot> {
    match tree {
        TreeRef::Dir(dir) => read_dir(dir, &dir.display().to_string()),
        TreeRef::Git { repo, rev } => {
            let temp = tempfile::tempdir().context("creating a temp dir for git archive")?;
            export_to(repo, rev, temp.path())?;
            read_dir(temp.path(), rev)
        }
    }
}

/// Reads a checkout (its stagex.toml's `packages` and `digests`).
fn read_dir(root: &Path, label: &str) -> Result<Snapshot> {
    let settings = Settings::load(root)?;
    let packages_dir = root.join(&settings.packages);
    let tree = PackageTree::load(&packages_dir)
        .with_context(|| format!("reading the packages of {label}"))?;
    let digests_dir = root.join(&settings.digests);
    let digests = if digests_dir.exists() {
        digests::read_release(&digests_dir)
            .with_context(|| format!("reading the digests of {label}"))?
    } else {
        BTreeMap::new()
    };
    let packages = tree
        .packages
        .into_iter()
        .map(|(id, p)| {
            (
                id,
                SnapshotPackage {
                    version: p.version,
                    origin: p.origin,
                },
            )
        })
        .collect();
    Ok(Snapshot {
        label: label.to_string(),
        packages,
        digests,
    })
}

/// `git archive REV` of `repo`, unpacked into `into`.
pub fn export_to(repo: &Path, rev: &str, into: &Path) -> Result<()> {
    if rev.starts_with('-') {
        bail!("{rev:?} is neither a directory nor a git ref");
    }
    let errors = tempfile::NamedTempFile::new().context("a temporary file for git's errors")?;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", rev])
        .stdout(Stdio::piped())
        // A file, not a pipe: unread while the tar streams, a full stderr
        // pipe would stop git and this read with it.
        .stderr(
            errors
                .reopen()
                .context("a temporary file for git's errors")?,
        )
        .spawn()
        .context("running git (needed to read a release from a git ref)")?;
    let stdout = child.stdout.take().context("git archive's output")?;
    let unpacked = tar::Archive::new(stdout).unpack(into);
    let status = child.wait().context("waiting for git archive")?;
    if !status.success() {
        let stderr = std::fs::read_to_string(errors.path()).unwrap_or_default();
        bail!(
            "{rev:?} is neither a directory nor a git ref of {}: {}",
            repo.display(),
            stderr.trim()
        );
    }
    unpacked.with_context(|| format!("unpacking git archive {rev}"))
}

/// Commit authors (`Name <mail>`) between two refs, most commits first.
pub fn authors(repo: &Path, from: &str, to: &str) -> Result<Vec<(String, usize)>> {
    if let Some(option) = [from, to].into_iter().find(|r| r.starts_with('-')) {
        bail!("{option:?} is not a git ref");
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "log",
            "--no-merges",
            "--format=%aN <%aE>",
            &format!("{from}..{to}"),
            "--",
        ])
        .output()
        .context("running git log")?;
    if !output.status.success() {
        bail!(
            "git log {from}..{to}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    let mut authors: Vec<(String, usize)> = counts.into_iter().collect();
    authors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(authors)
}
