//! Writing a package image to `out/<stage>-<name>/` in the shape StageX's
//! buildx output has: index.json -> image index -> one manifest per
//! platform, with `org.opencontainers.image.version` and
//! `org.opencontainers.image.created` annotations. The layout is assembled
//! in a staging directory beside the destination and swapped in at the end,
//! so a failed build never leaves a half-written `out/<id>/`.
//! Also reads a built package image back (as the base of another), through
//! `image::OutDir`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::image::OutDir;
use crate::oci::config::{History, ImageConfig};
use crate::oci::image::{build_image, build_index, ImageLayer, ImageSpec};
use crate::oci::layout::Layout;
use crate::oci::media_type::{self, ANNOTATION_CREATED, ANNOTATION_REF_NAME, ANNOTATION_VERSION};
use crate::oci::{Descriptor, ImageIndex, Platform, RunConfig};

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageOutput {
    pub dir: PathBuf,
    /// The image index index.json points at.
    pub index: Descriptor,
    /// One per platform, in order.
    pub manifests: Vec<Descriptor>,
}

/// A layout under construction for one package.
pub struct Staging {
    dir: tempfile::TempDir,
    layout: Layout,
}

impl Staging {
    /// A fresh staging layout in `out_root` (created if missing).
    pub fn new(out_root: &Path, id: &str) -> Result<Staging> {
        std::fs::create_dir_all(out_root)
            .with_context(|| format!("creating {}", out_root.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{id}."))
            .tempdir_in(out_root)
            .with_context(|| format!("creating a staging directory in {}", out_root.display()))?;
        let layout = Layout::create(dir.path())?;
        Ok(Staging { dir, layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes configs, manifests, the image index and index.json, then
    /// replaces `dest` with the staged layout.
    pub fn finish(
        self,
        images: &[ImageSpec],
        version: &str,
        created: &str,
        dest: &Path,
    ) -> Result<PackageOutput> {
        if images.is_empty() {
            bail!("no platform to build {} for", dest.display());
        }
        let mut manifests = Vec::new();
        for spec in images {
            let mut spec = spec.clone();
            spec.annotations
                .insert(ANNOTATION_CREATED.to_string(), created.to_string());
            spec.annotations
                .insert(ANNOTATION_VERSION.to_string(), version.to_string());
            let built = build_image(&spec)?;
            self.layout
                .write_json(&built.config, media_type::OCI_CONFIG)?;
            self.layout
                .write_json(&built.manifest, media_type::OCI_MANIFEST)?;
            manifests.push(built.descriptor);
        }
        self.finish_index(manifests, version, created, dest)
    }

    /// Writes the image index over `manifests` (already in the staging
    /// layout, with their platforms) and index.json, then replaces `dest`:
    /// the shape `finish` gives, for images that exist already (preseed).
    pub fn finish_index(
        self,
        manifests: Vec<Descriptor>,
        version: &str,
        created: &str,
        dest: &Path,
    ) -> Result<PackageOutput> {
        let annotations = BTreeMap::from([
            (ANNOTATION_CREATED.to_string(), created.to_string()),
            (ANNOTATION_VERSION.to_string(), version.to_string()),
        ]);
        let index_blob = build_index(&manifests, annotations)?;
        let mut index = self.layout.write_json(&index_blob, media_type::OCI_INDEX)?;
        index
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), version.to_string());
        let mut top = ImageIndex::new();
        top.manifests = vec![index.clone()];
        self.layout.write_index(&top)?;
        replace_dir(self.dir, dest)?;
        Ok(PackageOutput {
            dir: dest.to_path_buf(),
            index,
            manifests,
        })
    }
}

/// Moves the staged directory to `dest`, replacing what was there.
fn replace_dir(staged: tempfile::TempDir, dest: &Path) -> Result<()> {
    let staged = staged.keep();
    // Layout blobs/dirs are created with the process umask; normalize the
    // top directory so `out/` looks the same whoever built it.
    if dest.exists() {
        let parent = dest.parent().unwrap_or(Path::new("."));
        let trash = tempfile::Builder::new()
            .prefix(".old.")
            .tempdir_in(parent)
            .with_context(|| format!("replacing {}", dest.display()))?
            .keep();
        let old = trash.join("old");
        std::fs::rename(dest, &old)
            .with_context(|| format!("moving the old {} aside", dest.display()))?;
        std::fs::rename(&staged, dest)
            .with_context(|| format!("moving the new build into {}", dest.display()))?;
        std::fs::remove_dir_all(&trash).with_context(|| format!("removing {}", trash.display()))?;
    } else {
        std::fs::rename(&staged, dest)
            .with_context(|| format!("moving the new build into {}", dest.display()))?;
    }
    Ok(())
}

/// A built package image read back for one platform: its layers (blobs in
/// `layout`) with their diff_ids and history, and its run config.
pub struct BaseImage {
    pub layout: Layout,
    pub manifest: Descriptor,
    pub layers: Vec<ImageLayer>,
    pub run: RunConfig,
    pub config: ImageConfig,
}

/// Reads `out_root/<id>/` for `platform` (through `OutDir`, checked once).
pub fn read_package_image(out_root: &Path, id: &str, platform: &Platform) -> Result<BaseImage> {
    let image = OutDir::open(out_root).image(id, platform)?;
    let fallback = History {
        created_by: Some(format!("stagex/{id}")),
        ..History::default()
    };
    Ok(BaseImage {
        layers: image.image_layers(&fallback),
        run: image.run_config().clone(),
        config: image.config().clone(),
        manifest: image.descriptor(),
        layout: image.layout().clone(),
    })
}
