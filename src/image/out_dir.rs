//! Owns: reading `out/`, the directory of built package images (one OCI
//! layout per package, `out/<stage>-<name>/`, shaped like StageX's buildx
//! output: index.json -> image index -> one manifest per platform).
//! Listing the images, the image for a platform, the manifest digest
//! `digests/<stage>.txt` lists (for build and preseed), and the check
//! whose snapshot (`image::checked`) digests, sign/verify and publish
//! resolve from. Build, digests, sign/verify and pallet's local source all
//! read `out/` through this type and nothing else.
//!
//! It must not write: `build::image_out` stages and swaps in new layouts.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::checked::CheckedImages;
pub use super::checked::OutManifest;
use super::integrity::{self, IntegrityError};
use super::model::Image;
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::layout::Layout;
use crate::oci::manifest::AnyManifest;
use crate::oci::media_type;

/// The `out/` directory.
#[derive(Clone, Debug)]
pub struct OutDir {
    root: PathBuf,
}

impl OutDir {
    /// `out/` at `root` (it need not exist yet: nothing is built then).
    pub fn open(root: impl Into<PathBuf>) -> OutDir {
        OutDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where image `id` (`core-busybox`) lives, built or not.
    pub fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// True when `out/<id>/` holds a complete layout.
    pub fn is_built(&self, id: &str) -> bool {
        let dir = self.path(id);
        dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
    }

    /// Every built image id, sorted (staging directories, starting with
    /// `.`, are not images).
    pub fn images(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.root).with_context(|| {
            format!("reading {} (run `stagex build` first)", self.root.display())
        })?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", self.root.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !name.starts_with('.') && self.is_built(&name) {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The layout of image `id`; an error names the build to run.
    pub fn layout(&self, id: &str) -> Result<Layout> {
        let dir = self.path(id);
        Layout::open(&dir).with_context(|| {
            format!(
                "package image {id} is not built (expected {}; run `stagex build {id}`)",
                dir.display()
            )
        })
    }

    /// Checks that every blob of images `ids` (indexes, manifests,
    /// configs, layers) hashes to its name and has its declared size, with
    /// this process's verdict cache (`image::integrity`), and returns what
    /// was checked. Every command that vouches for an image of `out/`
    /// calls this first and takes what it vouches for from the result
    /// (`image::checked`), never from a second read of `out/`.
    pub fn check_blobs(&self, ids: &[String]) -> Result<CheckedImages, IntegrityError> {
        integrity::check(self, ids, integrity::process_verdicts())
    }

    /// The single entry of `out/<id>/index.json` (an index or a manifest).
    pub fn top(&self, id: &str) -> Result<Descriptor> {
        self.layout(id)?.resolve(None)
    }

    /// The image `id` holds for `platform`, read and checked once.
    pub fn image(&self, id: &str, platform: &Platform) -> Result<Image> {
        let layout = self.layout(id)?;
        let top = layout.resolve(None)?;
        let (descriptor, _, _) = layout
            .image_for_platform(&top, Some(platform))
            .with_context(|| format!("{}: no image for {platform}", self.path(id).display()))?;
        Image::load(&layout, &descriptor)
            .with_context(|| format!("reading image {id} in {}", self.path(id).display()))
    }

    /// The per-platform manifest `digests/<stage>.txt` lists for `id`: the
    /// only one, else `platform`'s.
    pub fn manifest_digest(&self, id: &str, platform: &Platform) -> Result<Descriptor> {
        let layout = self.layout(id)?;
        let top = layout.resolve(None)?;
        if media_type::is_manifest(&top.media_type) {
            return Ok(top);
        }
        match layout.read_manifest(&top)?.0 {
            AnyManifest::Index(index) if index.manifests.len() == 1 => {
                Ok(index.manifests[0].clone())
            }
            _ => Ok(layout.image_for_platform(&top, Some(platform))?.0),
        }
    }

    /// Every per-platform manifest of `id` (attestations skipped), each
    /// once, sorted by digest (`CheckedImage::manifests`). A command that
    /// vouches for them takes them from `check_blobs`' result instead.
    pub fn manifests(&self, id: &str) -> Result<Vec<OutManifest>> {
        Ok(integrity::read_documents(self, id)?.manifests()?)
    }
}
