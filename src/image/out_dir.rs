//! Owns: reading `out/`, the directory of built package images (one OCI
//! layout per package, `out/<stage>-<name>/`, shaped like StageX's buildx
//! output: index.json -> image index -> one manifest per platform).
//! Listing the images, the image for a platform, the manifest digest
//! `digests/<stage>.txt` lists, every per-platform manifest with its
//! version annotation. Build, digests, sign/verify and pallet's local
//! source all read `out/` through this type and nothing else.
//!
//! It must not write: `build::image_out` stages and swaps in new layouts.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::integrity::{self, IntegrityError, IntegrityReport};
use super::model::Image;
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::manifest::AnyManifest;
use crate::oci::media_type::{self, ANNOTATION_REF_NAME, ANNOTATION_VERSION};

/// Deepest index nesting followed.
const MAX_DEPTH: usize = 8;

/// The `out/` directory.
#[derive(Clone, Debug)]
pub struct OutDir {
    root: PathBuf,
}

/// One per-platform manifest of a built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutManifest {
    /// The manifest; its platform filled from the config when the layout's
    /// descriptor has none (skopeo/umoci layouts).
    pub descriptor: Descriptor,
    /// The nearest `org.opencontainers.image.version` annotation (manifest,
    /// else the index entry or index that leads to it).
    pub version: Option<String>,
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
    /// this process's verdict cache (`image::integrity`). Every command
    /// that vouches for an image of `out/` calls this first.
    pub fn check_blobs(&self, ids: &[String]) -> Result<IntegrityReport, IntegrityError> {
        integrity::check_images(self, ids, integrity::process_verdicts())
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

    /// The version of `id`: the version annotation of its index.json entry
    /// or of the index it points at, else the entry's `ref.name` as written.
    pub fn version(&self, id: &str) -> Result<Option<String>> {
        let layout = self.layout(id)?;
        let top = layout.resolve(None)?;
        if let Some(v) = top.annotations.get(ANNOTATION_VERSION) {
            return Ok(Some(v.clone()));
        }
        let annotations = match layout.read_manifest(&top)?.0 {
            AnyManifest::Index(index) => index.annotations,
            AnyManifest::Image(image) => image.annotations,
        };
        Ok(annotations
            .get(ANNOTATION_VERSION)
            .or_else(|| top.annotations.get(ANNOTATION_REF_NAME))
            .cloned())
    }

    /// The `ref.name` of the first index.json entry (a tag or a reference).
    pub fn ref_name(&self, id: &str) -> Result<Option<String>> {
        let index = self.layout(id)?.read_index()?;
        Ok(index
            .manifests
            .iter()
            .find_map(|d| d.annotations.get(ANNOTATION_REF_NAME).cloned()))
    }

    /// Every per-platform manifest of `id` (attestations skipped), each
    /// once, sorted by digest.
    pub fn manifests(&self, id: &str) -> Result<Vec<OutManifest>> {
        let layout = self.layout(id)?;
        let index = layout.read_index()?;
        if index.manifests.is_empty() {
            bail!("{}: index.json lists no image", self.path(id).display());
        }
        let mut found = BTreeMap::new();
        for top in &index.manifests {
            let version = top.annotations.get(ANNOTATION_VERSION).cloned();
            walk(&layout, top, version, 0, &mut found)?;
        }
        Ok(found.into_values().collect())
    }
}

fn walk(
    layout: &Layout,
    descriptor: &Descriptor,
    version: Option<String>,
    depth: usize,
    found: &mut BTreeMap<Digest, OutManifest>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!(
            "image index nesting deeper than {MAX_DEPTH} levels at {}",
            descriptor.digest
        );
    }
    match layout.read_manifest(descriptor)?.0 {
        AnyManifest::Image(image) => {
            let version = nearest_version(&image.annotations, version);
            let mut descriptor = descriptor.clone();
            if descriptor.platform.is_none() {
                descriptor.platform = config_platform(layout, &image.config);
            }
            let entry = found
                .entry(descriptor.digest.clone())
                .or_insert_with(|| OutManifest {
                    descriptor,
                    version: None,
                });
            if entry.version.is_none() {
                entry.version = version;
            }
        }
        AnyManifest::Index(index) => {
            let version = nearest_version(&index.annotations, version);
            for child in &index.manifests {
                // Attestation manifests (unknown/unknown) are not images.
                if child.platform.as_ref().is_some_and(|p| p.os == "unknown") {
                    continue;
                }
                let child_version = nearest_version(&child.annotations, version.clone());
                walk(layout, child, child_version, depth + 1, found)?;
            }
        }
    }
    Ok(())
}

/// The version annotation in `annotations`, else the one from further up.
fn nearest_version(
    annotations: &BTreeMap<String, String>,
    outer: Option<String>,
) -> Option<String> {
    annotations.get(ANNOTATION_VERSION).cloned().or(outer)
}

/// The platform an image config declares (for display when the layout's
/// descriptor has none).
fn config_platform(layout: &Layout, config: &Descriptor) -> Option<Platform> {
    // Loosely typed on purpose: only os/architecture/variant matter here.
    let bytes = layout.read_blob(&config.digest).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let mut platform = Platform::new(&text("os")?, &text("architecture")?);
    platform.variant = text("variant");
    Some(platform)
}
