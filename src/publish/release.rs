//! Owns: what a release IS: the images listed in `digests/*.txt`, each
//! read from `out/<stage>-<name>/` and checked to hold exactly the listed
//! manifest, with everything a push needs (the root descriptor, every
//! manifest child-first, every blob once, the version) and what the gate
//! must verify (the per-platform manifests and their signed identity).
//!
//! Must not: touch the network or decide about signatures; out/ is read
//! through `image::out_dir::OutDir` (the layout walk here only orders what
//! a push sends).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::image::out_dir::OutDir;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::manifest::AnyManifest;
use crate::sign::image::{ImageTarget, Resolver};

/// One line of a digests file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub digest: Digest,
    /// `digests/<stage>.txt:<line>` (for messages).
    pub source: String,
}

/// One image of the release, ready to push.
#[derive(Clone, Debug)]
pub struct ReleaseImage {
    pub name: String,
    pub layout: Layout,
    /// What `out/<name>/index.json` points at (an index or a manifest).
    pub root: Descriptor,
    /// The manifest digest `digests/*.txt` lists.
    pub listed: Digest,
    /// Every manifest and index under `root`, children before parents,
    /// `root` last.
    pub manifests: Vec<Descriptor>,
    /// Configs and layers, each once.
    pub blobs: Vec<Descriptor>,
    /// The per-platform manifests the quorum is checked on.
    pub targets: Vec<ImageTarget>,
    /// The `<version>` tag.
    pub version: String,
}

impl ReleaseImage {
    /// Bytes of every blob (configs and layers).
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

#[derive(Debug, Error)]
pub enum ReleaseError {
    #[error("no digests file in {0} (run `stagex digests` and commit digests/*.txt)")]
    NoDigests(PathBuf),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_line}: {problem} (expected `<64 hex> <stage>-<name>`)")]
    BadLine {
        source_line: String,
        problem: String,
    },
    #[error("{name} is listed twice ({first} and {second})")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "out/ does not match digests/*.txt, nothing was pushed:\n{}\n(rebuild or `stagex preseed` the images, or fix the digests files)",
        .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")
    )]
    Mismatch(Vec<String>),
}

/// Reads every `*.txt` in `dir` (sorted by file name).
pub fn read_digests(dir: &Path) -> Result<Vec<Listed>, ReleaseError> {
    let entries = std::fs::read_dir(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ReleaseError::NoDigests(dir.to_path_buf()),
        _ => ReleaseError::Read {
            path: dir.to_path_buf(),
            source,
        },
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ReleaseError::NoDigests(dir.to_path_buf()));
    }
    let mut listed: Vec<Listed> = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| ReleaseError::Read {
            path: path.clone(),
            source,
        })?;
        for item in parse_digests(&text, &path.display().to_string())? {
            if let Some(first) = listed.iter().find(|l| l.name == item.name) {
                return Err(ReleaseError::Duplicate {
                    name: item.name,
                    first: first.source.clone(),
                    second: item.source,
                });
            }
            listed.push(item);
        }
    }
    Ok(listed)
}

/// Parses one digests file (pure). Blank lines are skipped.
pub fn parse_digests(text: &str, file: &str) -> Result<Vec<Listed>, ReleaseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let source = format!("{file}:{}", i + 1);
        let bad = |problem: &str| ReleaseError::BadLine {
            source_line: source.clone(),
            problem: problem.to_string(),
        };
        let mut parts = line.split_whitespace();
        let (Some(hex), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not two fields"));
        };
        let digest = Digest::from_hex(hex).map_err(|e| bad(&format!("{e:#}")))?;
        let valid_name = name
            .split_once('-')
            .is_some_and(|(s, n)| !s.is_empty() && !n.is_empty())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if !valid_name {
            return Err(bad(&format!("{name:?} is not a <stage>-<name> image name")));
        }
        out.push(Listed {
            name: name.to_string(),
            digest,
            source,
        });
    }
    Ok(out)
}

/// Loads every listed image from `resolver.out`, checking out/ against the
/// list; every mismatch is collected before failing.
pub fn load(listed: &[Listed], resolver: &Resolver<'_>) -> Result<Vec<ReleaseImage>, ReleaseError> {
    let mut images = Vec::new();
    let mut problems = Vec::new();
    for item in listed {
        match load_one(item, resolver) {
            Ok(image) => images.push(image),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(images)
    } else {
        Err(ReleaseError::Mismatch(problems))
    }
}

fn load_one(item: &Listed, resolver: &Resolver<'_>) -> Result<ReleaseImage, String> {
    let out = OutDir::open(resolver.out);
    let fail = |e: anyhow::Error| format!("{} ({}): {e:#}", item.name, item.source);
    let layout = out.layout(&item.name).map_err(fail)?;
    let root = out.top(&item.name).map_err(fail)?;
    let (manifests, blobs) = walk(&layout, &root).map_err(fail)?;
    let platform_manifests: BTreeSet<Digest> = out
        .manifests(&item.name)
        .map_err(fail)?
        .into_iter()
        .map(|m| m.descriptor.digest)
        .collect();
    if !platform_manifests.contains(&item.digest) {
        return Err(format!(
            "{} ({}): out/{} holds {}, the list says sha256:{}",
            item.name,
            item.source,
            item.name,
            platform_manifests
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            item.digest.hex()
        ));
    }
    let targets = resolver.resolve(&item.name).map_err(fail)?;
    let version = targets
        .iter()
        .find_map(|t| t.reference.tag.clone())
        .ok_or_else(|| format!("{}: no version to tag it with", item.name))?;
    Ok(ReleaseImage {
        name: item.name.clone(),
        layout,
        root,
        listed: item.digest.clone(),
        manifests,
        blobs,
        targets,
        version,
    })
}

/// Manifests (children first, root last) and blobs under `root`.
fn walk(layout: &Layout, root: &Descriptor) -> anyhow::Result<(Vec<Descriptor>, Vec<Descriptor>)> {
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    visit(layout, root, 0, &mut seen, &mut manifests, &mut blobs)?;
    Ok((manifests, blobs))
}

fn visit(
    layout: &Layout,
    node: &Descriptor,
    depth: usize,
    seen: &mut BTreeSet<Digest>,
    manifests: &mut Vec<Descriptor>,
    blobs: &mut Vec<Descriptor>,
) -> anyhow::Result<()> {
    if depth > 8 {
        anyhow::bail!("index nesting deeper than 8 levels at {}", node.digest);
    }
    if !seen.insert(node.digest.clone()) {
        return Ok(());
    }
    match layout.read_manifest(node)?.0 {
        AnyManifest::Index(index) => {
            for child in &index.manifests {
                visit(layout, child, depth + 1, seen, manifests, blobs)?;
            }
        }
        AnyManifest::Image(image) => {
            for blob in std::iter::once(&image.config).chain(&image.layers) {
                if seen.insert(blob.digest.clone()) {
                    if !layout.has_blob(&blob.digest) {
                        anyhow::bail!("blob {} is missing from the layout", blob.digest);
                    }
                    blobs.push(blob.clone());
                }
            }
        }
    }
    manifests.push(node.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stagex_digest_lines_strictly() {
        let a = "ab".repeat(32);
        let got = parse_digests(&format!("{a} core-busybox\n\n{a} user-x\n"), "core.txt").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].source, "core.txt:3");
        assert_eq!(got[0].name, "core-busybox");
        for bad in [
            "zz core-x",
            &a,
            &format!("{a} core-x extra"),
            &format!("{a} ../x"),
            &format!("{a} nodash"),
        ] {
            let err = parse_digests(bad, "f.txt").unwrap_err().to_string();
            assert!(err.contains("f.txt:1"), "{err}");
        }
    }
}
