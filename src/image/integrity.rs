//! Owns: checking that the images of `out/` are what their names say
//! before a command vouches for them (`verify`, `sign`, `publish` and its
//! dry run, `digests` and `digests --check`): every blob reachable from
//! `index.json` (indexes, manifests, configs, layers) hashes to the digest
//! it is named by and has the size its descriptor declares. Indexes and
//! manifests are read and hashed whole (they are small and parsed anyway);
//! configs and layers are streamed through SHA-256 on every core, or
//! skipped when `image::verdicts` knows the unchanged file already hashed
//! to its name. A bad blob is ONE error naming the image, the blob, both
//! digests and the fix. A good check returns what it walked
//! (`image::checked`): the indexes and manifests as hashed, so that no
//! caller reads them a second time.
//!
//! Must not write to `out/` or decide what a command does with a bad
//! image.
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use super::checked::{self, CheckedDocument, CheckedImage, CheckedImages, MAX_DEPTH};
use super::out_dir::OutDir;
use super::verdicts::{self, FileStamp, Verdicts};
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::manifest::AnyManifest;
use crate::oci::media_type;

/// The largest index or manifest read (what registries accept).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Bytes read at once while hashing.
const READ_BUFFER: usize = 1 << 20;

/// What a blob is to its image (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobRole {
    Index,
    Manifest,
    Config,
    Layer,
    Other,
}

impl std::fmt::Display for BlobRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlobRole::Index => "index",
            BlobRole::Manifest => "manifest",
            BlobRole::Config => "config",
            BlobRole::Layer => "layer",
            BlobRole::Other => "blob",
        })
    }
}

/// Why an image of `out/` is not vouched for.
#[derive(Debug, Error)]
pub enum IntegrityError {
    #[error("image {image}: {role} blob {expected} is corrupt: its {actual_size} bytes hash to {actual} (expected {expected}, {declared_size} bytes) in {}; rebuild it (`stagex build {image}`), or run `stagex preseed` again", path.display())]
    Corrupt {
        image: String,
        role: BlobRole,
        path: PathBuf,
        expected: Digest,
        actual: Digest,
        declared_size: u64,
        actual_size: u64,
    },
    #[error("image {image}: {role} blob {expected} holds {actual_size} bytes but its descriptor declares {declared_size} (the bytes hash to {expected}) in {}; rebuild it (`stagex build {image}`), or run `stagex preseed` again", path.display())]
    Size {
        image: String,
        role: BlobRole,
        path: PathBuf,
        expected: Digest,
        declared_size: u64,
        actual_size: u64,
    },
    #[error("image {image}: {role} blob {digest} is missing ({}); rebuild it (`stagex build {image}`), or run `stagex preseed` again", path.display())]
    Missing {
        image: String,
        role: BlobRole,
        digest: Digest,
        path: PathBuf,
    },
    #[error("image {image}: {role} blob {digest} changed while it was being checked ({}); run the command again when nothing writes to out/", path.display())]
    Changed {
        image: String,
        role: BlobRole,
        digest: Digest,
        path: PathBuf,
    },
    #[error("image {image}: no build output in {} (run `stagex build {image}` first, or `stagex preseed`)", path.display())]
    NotBuilt { image: String, path: PathBuf },
    // The causes below are in the message, not a `source`: callers print
    // the chain, which would say them twice.
    #[error("image {image}: reading {}: {error}", path.display())]
    Io {
        image: String,
        path: PathBuf,
        error: io::Error,
    },
    #[error("image {image}: {reason:#}")]
    Layout {
        image: String,
        reason: anyhow::Error,
    },
}

/// What a check did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Images checked.
    pub images: usize,
    /// Indexes and manifests read and hashed.
    pub manifests: usize,
    /// Configs and layers hashed in this check.
    pub hashed: usize,
    /// Configs and layers whose unchanged file already had a verdict.
    pub reused: usize,
    /// Bytes hashed (configs and layers).
    pub bytes_hashed: u64,
}

/// One config or layer to check.
struct Leaf {
    image: String,
    role: BlobRole,
    descriptor: Descriptor,
    path: PathBuf,
}

enum LeafOutcome {
    Hashed(u64),
    Reused,
}

/// The verdicts of this process (`verdicts::default_path`), loaded once.
pub fn process_verdicts() -> &'static Verdicts {
    static VERDICTS: OnceLock<Verdicts> = OnceLock::new();
    VERDICTS.get_or_init(|| Verdicts::open(verdicts::default_path()))
}

/// Checks every blob of images `ids` of `out` (see the module header)
/// and returns what it walked: every index and manifest as hashed, to
/// resolve targets from (`image::checked`); the first bad blob, in the
/// order of `ids`, is the error. New verdicts are saved to `verdicts`'
/// file (a failure to save only costs time).
pub fn check(
    out: &OutDir,
    ids: &[String],
    verdicts: &Verdicts,
) -> Result<CheckedImages, IntegrityError> {
    let mut report = IntegrityReport {
        images: ids.len(),
        ..IntegrityReport::default()
    };
    let mut images = Vec::new();
    let mut leaves = Vec::new();
    for id in ids {
        let (image, image_leaves) = walk_image(out, id)?;
        report.manifests += image.documents.len();
        leaves.extend(image_leaves);
        images.push(image);
    }
    // One leaf per task: a leaf is a whole blob to hash, sizes vary a lot.
    let outcomes: Vec<_> = leaves
        .par_iter()
        .with_max_len(1)
        .map(|leaf| check_leaf(leaf, verdicts))
        .collect();
    let _ = verdicts.save();
    for outcome in outcomes {
        match outcome? {
            LeafOutcome::Hashed(bytes) => {
                report.hashed += 1;
                report.bytes_hashed += bytes;
            }
            LeafOutcome::Reused => report.reused += 1,
        }
    }
    Ok(CheckedImages { report, images })
}

/// `check`, counts only.
pub fn check_images(
    out: &OutDir,
    ids: &[String],
    verdicts: &Verdicts,
) -> Result<IntegrityReport, IntegrityError> {
    check(out, ids, verdicts).map(|checked| checked.report)
}

/// Every index and manifest of `id`, each read once and hashed; its
/// configs and layers are listed, not hashed (`check` hashes them).
pub fn read_documents(out: &OutDir, id: &str) -> Result<CheckedImage, IntegrityError> {
    Ok(walk_image(out, id)?.0)
}

/// Reads and checks every index and manifest of `id`; returns them and
/// the configs and layers they name (each once).
fn walk_image(out: &OutDir, id: &str) -> Result<(CheckedImage, Vec<Leaf>), IntegrityError> {
    if !out.is_built(id) {
        return Err(IntegrityError::NotBuilt {
            image: id.to_string(),
            path: out.path(id),
        });
    }
    let layout = out.layout(id).map_err(|e| layout_error(id, e))?;
    let index = layout.read_index().map_err(|e| layout_error(id, e))?;
    let mut walk = Walk {
        id,
        layout: &layout,
        image: CheckedImage {
            id: id.to_string(),
            path: out.path(id),
            entries: index.manifests.clone(),
            documents: BTreeMap::new(),
            blobs: Vec::new(),
        },
        leaves: Vec::new(),
        seen: BTreeSet::new(),
    };
    let mut pending: Vec<(Descriptor, usize)> =
        index.manifests.into_iter().rev().map(|d| (d, 0)).collect();
    while let Some((descriptor, depth)) = pending.pop() {
        pending.extend(walk.visit(descriptor, depth)?);
    }
    Ok((walk.image, walk.leaves))
}

fn layout_error(image: &str, reason: anyhow::Error) -> IntegrityError {
    IntegrityError::Layout {
        image: image.to_string(),
        reason,
    }
}

/// One image's walk: the snapshot so far and the leaves to hash.
struct Walk<'w> {
    id: &'w str,
    layout: &'w Layout,
    image: CheckedImage,
    leaves: Vec<Leaf>,
    /// The configs and layers already taken in.
    seen: BTreeSet<Digest>,
}

impl Walk<'_> {
    /// Takes in one descriptor; returns the children still to visit, in
    /// the order to push them (the first child last).
    fn visit(
        &mut self,
        descriptor: Descriptor,
        depth: usize,
    ) -> Result<Vec<(Descriptor, usize)>, IntegrityError> {
        let role = match &descriptor.media_type {
            m if media_type::is_index(m) => BlobRole::Index,
            m if media_type::is_manifest(m) => BlobRole::Manifest,
            _ => {
                self.add_leaf(BlobRole::Other, descriptor);
                return Ok(Vec::new());
            }
        };
        if self.image.documents.contains_key(&descriptor.digest) {
            return Ok(Vec::new());
        }
        if depth > MAX_DEPTH {
            return Err(layout_error(
                self.id,
                anyhow::anyhow!(
                    "image index nesting deeper than {MAX_DEPTH} levels at {}",
                    descriptor.digest
                ),
            ));
        }
        let bytes = read_manifest_blob(self.id, self.layout, role, &descriptor)?;
        let parsed = AnyManifest::parse(&bytes, Some(&descriptor.media_type)).map_err(|e| {
            layout_error(self.id, e.context(format!("{role} {}", descriptor.digest)))
        })?;
        let mut children = Vec::new();
        let mut config_platform = None;
        match &parsed {
            AnyManifest::Image(image) => {
                if descriptor.platform.is_none() {
                    config_platform = read_config_platform(self.layout, &image.config);
                }
                self.add_leaf(BlobRole::Config, image.config.clone());
                for layer in &image.layers {
                    self.add_leaf(BlobRole::Layer, layer.clone());
                }
            }
            AnyManifest::Index(index) => {
                children.extend(index.manifests.iter().rev().map(|d| (d.clone(), depth + 1)))
            }
        }
        let document = CheckedDocument {
            descriptor: descriptor.clone(),
            bytes,
            parsed,
            config_platform,
        };
        self.image.documents.insert(descriptor.digest, document);
        Ok(children)
    }

    fn add_leaf(&mut self, role: BlobRole, descriptor: Descriptor) {
        if !self.seen.insert(descriptor.digest.clone()) {
            return;
        }
        self.image.blobs.push(descriptor.clone());
        self.leaves.push(Leaf {
            image: self.id.to_string(),
            role,
            path: self.layout.blob_path(&descriptor.digest),
            descriptor,
        });
    }
}

/// The platform a config declares, from bytes that hash to its name
/// (anything else is `None`: the config's own check names the problem).
fn read_config_platform(layout: &Layout, config: &Descriptor) -> Option<Platform> {
    if config.size > MAX_MANIFEST_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    File::open(layout.blob_path(&config.digest))
        .ok()?
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    (Digest::of_bytes(&bytes) == config.digest).then(|| checked::config_platform(&bytes))?
}

/// The bytes of an index or manifest, checked against its descriptor.
/// One larger than a registry takes is hashed (a corrupt one is named as
/// such), never read into memory.
fn read_manifest_blob(
    image: &str,
    layout: &Layout,
    role: BlobRole,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, IntegrityError> {
    let path = layout.blob_path(&descriptor.digest);
    let io_error = |error| open_error(image, role, descriptor, &path, error);
    let mut file = File::open(&path).map_err(io_error)?;
    let length = file.metadata().map_err(io_error)?.len();
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if length > MAX_MANIFEST_BYTES {
        let mut hasher = HashState::with_prefix(&bytes);
        hasher.consume(&mut file).map_err(io_error)?;
        let (actual, size) = hasher.finish();
        judge(image, role, descriptor, &path, actual, size)?;
        return Err(IntegrityError::Layout {
            image: image.to_string(),
            reason: anyhow::anyhow!(
                "{role} {} is {length} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have",
                descriptor.digest
            ),
        });
    }
    let size = bytes.len() as u64;
    judge(
        image,
        role,
        descriptor,
        &path,
        Digest::of_bytes(&bytes),
        size,
    )?;
    Ok(bytes)
}

/// A blob that could not be opened or read.
fn open_error(
    image: &str,
    role: BlobRole,
    descriptor: &Descriptor,
    path: &std::path::Path,
    error: io::Error,
) -> IntegrityError {
    if error.kind() == io::ErrorKind::NotFound {
        IntegrityError::Missing {
            image: image.to_string(),
            role,
            digest: descriptor.digest.clone(),
            path: path.to_path_buf(),
        }
    } else {
        IntegrityError::Io {
            image: image.to_string(),
            path: path.to_path_buf(),
            error,
        }
    }
}

/// `Ok` when the bytes found are the ones the descriptor names.
fn judge(
    image: &str,
    role: BlobRole,
    descriptor: &Descriptor,
    path: &std::path::Path,
    actual: Digest,
    actual_size: u64,
) -> Result<(), IntegrityError> {
    if actual != descriptor.digest {
        return Err(IntegrityError::Corrupt {
            image: image.to_string(),
            role,
            path: path.to_path_buf(),
            expected: descriptor.digest.clone(),
            actual,
            declared_size: descriptor.size,
            actual_size,
        });
    }
    if actual_size != descriptor.size {
        return Err(IntegrityError::Size {
            image: image.to_string(),
            role,
            path: path.to_path_buf(),
            expected: actual,
            declared_size: descriptor.size,
            actual_size,
        });
    }
    Ok(())
}

/// Checks one config or layer: its verdict when the file is unchanged,
/// else its bytes.
fn check_leaf(leaf: &Leaf, verdicts: &Verdicts) -> Result<LeafOutcome, IntegrityError> {
    let Leaf {
        image,
        role,
        descriptor,
        path,
    } = leaf;
    let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m)));
    let (mut file, metadata) = opened.map_err(|e| open_error(image, *role, descriptor, path, e))?;
    let before = FileStamp::of(&metadata);
    if before.size == descriptor.size
        && verdicts.lookup(&before).as_ref() == Some(&descriptor.digest)
    {
        return Ok(LeafOutcome::Reused);
    }
    let started = SystemTime::now();
    let io_error = |error| IntegrityError::Io {
        image: image.clone(),
        path: path.clone(),
        error,
    };
    let (actual, size) = hash(&mut file).map_err(io_error)?;
    let after = FileStamp::of(&file.metadata().map_err(io_error)?);
    if after != before {
        return Err(IntegrityError::Changed {
            image: image.clone(),
            role: *role,
            digest: descriptor.digest.clone(),
            path: path.clone(),
        });
    }
    judge(image, *role, descriptor, path, actual.clone(), size)?;
    verdicts.record(before, actual, path, started);
    Ok(LeafOutcome::Hashed(size))
}

/// The SHA-256 digest and length of everything `reader` yields.
fn hash(reader: &mut impl Read) -> io::Result<(Digest, u64)> {
    let mut state = HashState::with_prefix(&[]);
    state.consume(reader)?;
    Ok(state.finish())
}

/// SHA-256 over bytes read in large pieces, counting them.
struct HashState {
    hasher: Sha256,
    total: u64,
}

impl HashState {
    fn with_prefix(prefix: &[u8]) -> HashState {
        HashState {
            hasher: Sha256::new_with_prefix(prefix),
            total: prefix.len() as u64,
        }
    }

    /// Hashes everything `reader` still yields.
    fn consume(&mut self, reader: &mut impl Read) -> io::Result<()> {
        let mut buffer = vec![0u8; READ_BUFFER];
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.hasher.update(&buffer[..n]);
            self.total += n as u64;
        }
    }

    fn finish(self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher), self.total)
    }
}
