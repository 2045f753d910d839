//! Owns: what a release IS: the images listed in `digests/*.txt`, each
//! read from `out/<stage>-<name>/` and checked to hold exactly the listed
//! manifest (and every blob to hash to its name: `OutDir::check_blobs`),
//! with everything a push needs (the root descriptor, every manifest
//! child-first, every blob once, the version) and what the gate must
//! verify (the per-platform manifests and their signed identity).
//!
//! Must not: touch the network or decide about signatures; out/ is read
//! through `image::out_dir::OutDir`, once: the root, manifests, blobs and
//! targets come from what the check read (`image::checked`; the walk
//! here only orders what a push sends). Every index and manifest a push
//! sends is carried as the exact bytes the check hashed (`documents`):
//! `out/<id>` rewritten after the check cannot make one go missing. Only
//! configs and layers (large, streamed) are read again from `layout`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use thiserror::Error;

use crate::image::checked::is_document;
use crate::image::out_dir::OutDir;
use crate::image::{CheckedError, CheckedImage, CheckedImages, IntegrityError};
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::release::digests::{read_entries, DigestsError};
use crate::sign::image::{ImageTarget, Resolver};

/// One line of a digests file (the one reader: `release::digests`).
pub use crate::release::digests::ReleaseEntry as Listed;

/// One image of the release, ready to push.
#[derive(Clone, Debug)]
pub struct ReleaseImage {
    pub name: String,
    /// `out/<name>`: configs and layers are streamed from it at push time
    /// (the check hashed them; the upload re-hashes what it reads and the
    /// registry refuses bytes that do not match the digest). Indexes and
    /// manifests are never read from it again: see `documents`.
    pub layout: Layout,
    /// What `out/<name>/index.json` points at (an index or a manifest).
    pub root: Descriptor,
    /// The manifest digest `digests/*.txt` lists.
    pub listed: Digest,
    /// Every manifest and index under `root`, children before parents,
    /// `root` last.
    pub manifests: Vec<Descriptor>,
    /// The exact bytes the check hashed of every entry of `manifests`, by
    /// digest: what a push sends, whatever `out/` holds by then.
    pub documents: BTreeMap<Digest, Vec<u8>>,
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

    /// The checked bytes of the index or manifest `digest` (one of
    /// `manifests`); None for anything else.
    pub fn document(&self, digest: &Digest) -> Option<&[u8]> {
        self.documents.get(digest).map(Vec::as_slice)
    }
}

#[derive(Debug, Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Digests(#[from] DigestsError),
    #[error(
        "out/ does not match digests/*.txt, nothing was pushed:\n{}\n(rebuild or `stagex preseed` the images, or fix the digests files)",
        .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")
    )]
    Mismatch(Vec<ImageMismatch>),
    /// Not a `source`: the message says it, and callers print the chain.
    #[error("{0}\n(nothing was pushed)")]
    Integrity(IntegrityError),
}

/// Reads every `*.txt` in `dir` (sorted by file name), each image once.
pub fn read_digests(dir: &Path) -> Result<Vec<Listed>, ReleaseError> {
    Ok(read_entries(&[dir.to_path_buf()])?)
}

/// Loads every listed image from `resolver.out`, checking out/ against the
/// list; every mismatch is collected before failing.
pub fn load(listed: &[Listed], resolver: &Resolver<'_>) -> Result<Vec<ReleaseImage>, ReleaseError> {
    let checked = check_blobs(listed, resolver)?;
    load_checked(listed, &checked, resolver)
}

/// `load` from what a check read: the manifests, blobs and targets of
/// each image are the ones `checked` hashed, whatever `out/` holds now.
pub fn load_checked(
    listed: &[Listed],
    checked: &CheckedImages,
    resolver: &Resolver<'_>,
) -> Result<Vec<ReleaseImage>, ReleaseError> {
    let mut images = Vec::new();
    let mut problems = Vec::new();
    for item in listed {
        match load_one(item, checked, resolver) {
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

/// Every blob of every listed image that is built hashes to its name
/// (all at once, on every core); the ones not built are reported by
/// `load_one` with the rest of the mismatches.
fn check_blobs(listed: &[Listed], resolver: &Resolver<'_>) -> Result<CheckedImages, ReleaseError> {
    let out = OutDir::open(resolver.out);
    let built: Vec<String> = listed
        .iter()
        .filter(|item| out.is_built(&item.name))
        .map(|item| item.name.clone())
        .collect();
    out.check_blobs(&built).map_err(ReleaseError::Integrity)
}

/// Why one listed image cannot be pushed as listed.
#[derive(Debug, thiserror::Error)]
pub enum ImageMismatch {
    /// out/ lacks the image, or it cannot be read or resolved.
    #[error("{name} ({source_file}): {error:#}")]
    Unreadable {
        name: String,
        source_file: String,
        error: anyhow::Error,
    },
    /// out/ holds other platform manifests than the list says.
    #[error(
        "{name} ({source_file}): out/{name} holds {}, the list says sha256:{listed}",
        .held.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    )]
    OtherDigest {
        name: String,
        source_file: String,
        held: BTreeSet<Digest>,
        listed: String,
    },
    #[error("{name}: no version to tag it with")]
    NoVersion { name: String },
}

fn load_one(
    item: &Listed,
    checked: &CheckedImages,
    resolver: &Resolver<'_>,
) -> Result<ReleaseImage, ImageMismatch> {
    let out = OutDir::open(resolver.out);
    let fail = |error: anyhow::Error| ImageMismatch::Unreadable {
        name: item.name.clone(),
        source_file: item.source.to_string(),
        error,
    };
    let layout = out.layout(&item.name).map_err(fail)?;
    let image = checked.get(&item.name).ok_or_else(|| {
        fail(anyhow::anyhow!(
            "out/{} was not built when out/ was checked; run the command again when nothing writes to out/",
            item.name
        ))
    })?;
    let root = image.top().map_err(|e| fail(e.into()))?.clone();
    let (manifests, blobs) = walk(image, &root).map_err(|e| fail(e.into()))?;
    let documents = checked_bytes(image, &manifests).map_err(|e| fail(e.into()))?;
    let platform_manifests: BTreeSet<Digest> = image
        .manifests()
        .map_err(|e| fail(e.into()))?
        .into_iter()
        .map(|m| m.descriptor.digest)
        .collect();
    if !platform_manifests.contains(&item.digest) {
        return Err(ImageMismatch::OtherDigest {
            name: item.name.clone(),
            source_file: item.source.to_string(),
            held: platform_manifests,
            listed: item.digest.hex().to_string(),
        });
    }
    let targets = resolver.package_targets(image).map_err(fail)?;
    let version = targets
        .iter()
        .find_map(|t| t.reference.tag.clone())
        .ok_or_else(|| ImageMismatch::NoVersion {
            name: item.name.clone(),
        })?;
    Ok(ReleaseImage {
        name: item.name.clone(),
        layout,
        root,
        listed: item.digest.clone(),
        manifests,
        documents,
        blobs,
        targets,
        version,
    })
}

/// The bytes the check hashed of each of `manifests`, by digest.
fn checked_bytes(
    image: &CheckedImage,
    manifests: &[Descriptor],
) -> Result<BTreeMap<Digest, Vec<u8>>, CheckedError> {
    manifests
        .iter()
        .map(|m| Ok((m.digest.clone(), image.document(m)?.bytes.clone())))
        .collect()
}

/// Manifests (children first, root last) and blobs under `root`, from
/// the check's snapshot (every blob in it was found and hashed).
fn walk(
    image: &CheckedImage,
    root: &Descriptor,
) -> Result<(Vec<Descriptor>, Vec<Descriptor>), CheckedError> {
    let (mut manifests, blobs): (Vec<Descriptor>, Vec<Descriptor>) =
        image.reachable(root)?.into_iter().partition(is_document);
    // `reachable` lists parents before children: reversed, each manifest
    // comes after everything it references, the root last.
    manifests.reverse();
    Ok((manifests, blobs))
}
