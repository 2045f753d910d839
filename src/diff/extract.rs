//! Owns: `--files DIR` (both versions of each regular file whose content
//! differs, side by side: `DIR/A/<scope>/<path>` and `DIR/B/<scope>/<path>`)
//! and `--diffoscope` (diffoscope run on the first few of those pairs,
//! through `crate::child`: a time limit, its output live on stagex's
//! streams, nothing kept in the temp directory).
//!
//! Paths come from the one tar walk (normalized, never `..`); every
//! component is checked again here, `DIR/A` and `DIR/B` must be new (no
//! planted symlink can be followed), and each file is written to a temp
//! file and renamed into place.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::scan::compression_of;
use super::{ChangedFile, DiffError};
use crate::child::{Deadline, Output, Supervised};
use crate::layer::entries::{EntryType, LayerTar};
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::store::Store;

/// How many changed files `--diffoscope` looks at.
pub const DIFFOSCOPE_FILES: usize = 3;

/// The directory name of a scope (`linux/amd64 layer 0` ->
/// `linux_amd64_layer_0`).
fn scope_dir(scope: &str) -> String {
    let name: String = scope
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "image".to_string()
    } else {
        name
    }
}

/// `root/relative`, where `relative` must be plain components only.
fn safe_join(root: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (plain && !relative.is_empty()).then(|| root.join(rel))
}

/// Creates the parents of `path` below `root`, refusing any component
/// that exists as something other than a real directory.
fn make_parents(root: &Path, path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(root);
    let mut at = root.to_path_buf();
    for component in parent
        .strip_prefix(root)
        .unwrap_or(Path::new(""))
        .components()
    {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory",
                    at.display()
                )))
            }
            Err(_) => fs::create_dir(&at)?,
        }
    }
    Ok(())
}

/// Writes `reader` to `path` through a temp file beside it.
fn write_file(root: &Path, path: &Path, mut reader: impl io::Read) -> io::Result<()> {
    make_parents(root, path)?;
    let dir = path.parent().unwrap_or(root);
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    io::copy(&mut reader, &mut temp)?;
    temp.flush()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Streams `layer` once and writes each wanted path to `root/<dir>/path`.
fn extract_layer_files(
    store: &Store,
    layer: &Descriptor,
    wanted: &BTreeMap<String, String>,
    root: &Path,
) -> anyhow::Result<()> {
    let blob = store.layout().open_blob(&layer.digest, Some(layer.size))?;
    let mut tar = LayerTar::new(blob, compression_of(layer)?)?;
    for entry in tar.entries()? {
        let entry = entry?;
        if entry.kind != EntryType::File {
            continue;
        }
        let Some(dir) = wanted.get(&entry.path) else {
            continue;
        };
        let target = safe_join(&root.join(dir), &entry.path).ok_or_else(|| {
            anyhow::anyhow!("unsafe path /{} in layer {}", entry.path, layer.digest)
        })?;
        write_file(root, &target, entry)?;
    }
    Ok(())
}

/// Extracts both versions of every changed file under `dir`; returns the
/// pairs (A's file, B's file).
pub fn extract_changed(
    store: &Store,
    changed: &[ChangedFile],
    dir: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>, DiffError> {
    let error = |reason: String| DiffError::Files {
        dir: dir.display().to_string(),
        reason,
    };
    fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
    let (root_a, root_b) = (dir.join("A"), dir.join("B"));
    for root in [&root_a, &root_b] {
        fs::create_dir(root).map_err(|e| {
            error(format!(
                "cannot create {} ({e}): give a new or empty directory",
                root.display()
            ))
        })?;
    }
    // (side root, layer) -> path -> scope directory.
    let mut plan: BTreeMap<(PathBuf, Digest), (Descriptor, BTreeMap<String, String>)> =
        BTreeMap::new();
    let mut pairs = Vec::new();
    let mut seen = BTreeSet::new();
    for file in changed {
        let scope = scope_dir(&file.scope);
        if !seen.insert((scope.clone(), file.path.clone())) {
            continue;
        }
        for (root, layer) in [(&root_a, &file.a_layer), (&root_b, &file.b_layer)] {
            plan.entry((root.clone(), layer.digest.clone()))
                .or_insert_with(|| (layer.clone(), BTreeMap::new()))
                .1
                .insert(file.path.clone(), scope.clone());
        }
        let pair = (
            safe_join(&root_a.join(&scope), &file.path),
            safe_join(&root_b.join(&scope), &file.path),
        );
        if let (Some(a), Some(b)) = pair {
            pairs.push((a, b));
        }
    }
    for ((root, _), (layer, wanted)) in &plan {
        extract_layer_files(store, layer, wanted, root).map_err(|e| error(format!("{e:#}")))?;
    }
    Ok(pairs)
}

/// The `diffoscope` on PATH, if installed.
pub fn find_diffoscope() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("diffoscope"))
        .find(|candidate| candidate.is_file())
}

/// The env var holding diffoscope's time limit per pair of files.
pub const DIFFOSCOPE_TIMEOUT_ENV: &str = "STAGEX_DIFFOSCOPE_TIMEOUT";
/// Its default: generous, diffoscope unpacks archives inside archives.
pub const DIFFOSCOPE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn diffoscope_error(error: impl std::fmt::Display) -> DiffError {
    DiffError::Diffoscope(error.to_string())
}

/// diffoscope's time limit (`$STAGEX_DIFFOSCOPE_TIMEOUT`, else 30 min).
fn diffoscope_deadline() -> Result<Deadline, DiffError> {
    Deadline::from_env(DIFFOSCOPE_TIMEOUT_ENV, DIFFOSCOPE_TIMEOUT).map_err(diffoscope_error)
}

/// The `diffoscope` on PATH, or the error that says how to get it; its
/// time limit is checked too, so that a bad one fails before the diff.
pub fn require_diffoscope() -> Result<PathBuf, DiffError> {
    diffoscope_deadline()?;
    find_diffoscope().ok_or_else(|| {
        DiffError::Diffoscope(
            "diffoscope is not installed (Debian package `diffoscope`); install it, or use \
             --files DIR and compare the two versions yourself"
                .to_string(),
        )
    })
}

/// Runs diffoscope on the first `DIFFOSCOPE_FILES` pairs, each with
/// `$STAGEX_DIFFOSCOPE_TIMEOUT`. Its report goes live to stagex's stdout
/// (`to_stderr`: to stderr, stagex's stdout being JSON) and its own
/// stderr to stagex's stderr, as it writes them; no file is kept.
pub fn run_diffoscope(pairs: &[(PathBuf, PathBuf)], to_stderr: bool) -> Result<(), DiffError> {
    let program = require_diffoscope()?;
    let label = program.display().to_string();
    let supervised = Supervised {
        program: &label,
        output: if to_stderr {
            Output::Stderr
        } else {
            Output::Inherit
        },
        deadline: diffoscope_deadline()?,
    };
    for (a, b) in pairs.iter().take(DIFFOSCOPE_FILES) {
        // What stagex printed so far comes before diffoscope's report.
        io::stdout()
            .flush()
            .map_err(|e| diffoscope_error(format!("writing to stdout: {e}")))?;
        let status = supervised
            .run(Command::new(&program).arg(a).arg(b))
            .map_err(diffoscope_error)?;
        // diffoscope exits 1 when the files differ (expected here).
        if status.code().is_none_or(|code| code > 1) {
            return Err(DiffError::Diffoscope(format!(
                "{label} {} {} failed: {status}; what it printed is above",
                a.display(),
                b.display(),
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_join() {
        let root = Path::new("/x");
        assert_eq!(
            safe_join(root, "usr/bin/sh"),
            Some(PathBuf::from("/x/usr/bin/sh"))
        );
        assert_eq!(safe_join(root, "../etc/passwd"), None);
        assert_eq!(safe_join(root, "/etc/passwd"), None);
        assert_eq!(safe_join(root, "a/./b"), Some(PathBuf::from("/x/a/b")));
        assert_eq!(safe_join(root, ""), None);
        assert_eq!(scope_dir("linux/amd64 layer 0"), "linux_amd64_layer_0");
    }
}
