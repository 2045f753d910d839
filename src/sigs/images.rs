//! Owns: WHICH images a sync or an audit looks at. A lookaside has no
//! listing, so the set comes from StageX's `digests/<stage>.txt` files
//! (`<manifest hex> <stage>-<name>`), from the per-platform manifests of a
//! local `out/`, or, for a directory lookaside, from walking its tree
//! (`<repository path>@sha256=<hex>/`). Each image is a `sign::image::
//! ImageTarget` (the one "manifest whose signatures matter" type) whose
//! reference is the repository in the identity namespace, by digest
//! (containers/image's pull-by-digest rule: any signed tag of that
//! repository counts).
//!
//! Pure apart from reading those files; no network.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::oci::digest::Digest;
use crate::release::digests;
use crate::sign::image::ImageTarget;
use crate::sign::reference::DockerReference;

/// `stagex/core-x@sha256:<hex>` (for messages and reports).
pub fn label(image: &ImageTarget) -> String {
    format!("{}@{}", image.repository_path, image.digest)
}

/// The key of an image in state files: its lookaside directory.
pub fn key(image: &ImageTarget) -> String {
    crate::lookaside::signature_dir(&image.repository_path, &image.digest)
}

/// Every image of `--digests` arguments: files, or directories whose
/// `*.txt` files are read (sorted).
pub fn from_digests(paths: &[PathBuf], namespace: &str) -> Result<Vec<ImageTarget>> {
    ImageTarget::from_entries(namespace, &digests::read_entries(paths)?)
}

/// Every `<repository path>@sha256=<hex>` directory under a lookaside
/// tree. Directories whose name is not a valid repository path are skipped
/// (returned apart, for the report).
pub fn walk(root: &Path, namespace: &str) -> Result<(Vec<ImageTarget>, Vec<String>)> {
    if !root.is_dir() {
        bail!(
            "{}: not a directory (a directory lookaside source is walked to find its images)",
            root.display()
        );
    }
    let domain = DockerReference::parse(&format!("{}/x", namespace.trim_end_matches('/')))
        .with_context(|| format!("identity namespace {namespace:?}"))?
        .domain;
    let (mut images, mut skipped) = (Vec::new(), Vec::new());
    let mut walker = walkdir::WalkDir::new(root).sort_by_file_name().into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.with_context(|| format!("walking {}", root.display()))?;
        if !entry.file_type().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        let Some((repo_name, hex)) = name.split_once("@sha256=") else {
            continue;
        };
        walker.skip_current_dir();
        let parent = entry
            .path()
            .parent()
            .and_then(|p| p.strip_prefix(root).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = if parent.is_empty() {
            repo_name.to_string()
        } else {
            format!("{parent}/{repo_name}")
        };
        match Digest::from_hex(hex).and_then(|d| {
            let reference = DockerReference::parse(&format!("{domain}/{path}@{d}"))?;
            Ok(ImageTarget::by_digest(&path, d, reference))
        }) {
            Ok(image) if image.reference.path == path => images.push(image),
            _ => skipped.push(entry.path().display().to_string()),
        }
    }
    Ok((images, skipped))
}

/// Sorted by lookaside directory, each image once (the first seen wins).
pub fn dedup(images: Vec<ImageTarget>) -> Vec<ImageTarget> {
    let mut by_key: BTreeMap<String, ImageTarget> = BTreeMap::new();
    for image in images {
        by_key.entry(key(&image)).or_insert(image);
    }
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A digests file's text as images, the way `from_digests` reads
    /// each file (`origin` names it in errors).
    fn parse_digests(text: &str, namespace: &str, origin: &str) -> Result<Vec<ImageTarget>> {
        ImageTarget::from_entries(namespace, &digests::parse_entries(Path::new(origin), text)?)
    }

    #[test]
    fn digests_lines_become_images_by_repository() {
        let a = Digest::of_bytes(b"a");
        let text = format!("# core\n{} core-busybox\n\n", a.hex());
        let images = parse_digests(&text, "stagex", "core.txt").unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].repository_path, "stagex/core-busybox");
        assert_eq!(
            images[0].reference.to_string(),
            format!("docker.io/stagex/core-busybox@{a}")
        );
        let signed = DockerReference::parse("stagex/core-busybox:1.37.0").unwrap();
        assert!(images[0].reference.matches_signed(&signed));
        let err = parse_digests("zz core-x\n", "stagex", "core.txt").unwrap_err();
        assert!(format!("{err:#}").contains("core.txt:1"), "{err:#}");
        assert!(parse_digests(&format!("{} a b\n", a.hex()), "stagex", "f").is_err());
        let local = parse_digests(
            &format!("{} core-x\n", a.hex()),
            "127.0.0.1:5000/stagex",
            "f",
        )
        .unwrap();
        assert_eq!(local[0].repository_path, "stagex/core-x");
        assert_eq!(local[0].reference.domain, "127.0.0.1:5000");
    }

    #[test]
    fn walking_finds_signature_directories_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        for p in [
            format!("stagex/core-x@sha256={}", a.hex()),
            format!("stagex/core-x@sha256={}", b.hex()),
            format!("other/deep/y@sha256={}", a.hex()),
            "stagex/Bad@sha256=00".to_string(),
            "stagex/no-digest".to_string(),
        ] {
            std::fs::create_dir_all(dir.path().join(p)).unwrap();
        }
        let (images, skipped) = walk(dir.path(), "stagex").unwrap();
        let labels: Vec<String> = images.iter().map(|i| i.repository_path.clone()).collect();
        assert_eq!(labels, ["other/deep/y", "stagex/core-x", "stagex/core-x"]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(dedup([images.clone(), images].concat()).len(), 3);
    }
}
