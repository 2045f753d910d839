//! Owns: `stagex image DIR`: a deterministic single-layer image from a
//! directory (the same digest on every machine), with the declared run
//! config, assembled in the store and written to a destination in one
//! call. The general form of what a native package build does.
//!
//! It must not parse flags or print: `cli/image.rs` does.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::image::output::Destination;
use crate::layer::tree::FileTree;
use crate::layer::writer::{write_layer_to_layout, LayerOptions};
use crate::oci::config::{rfc3339_utc, History, RunConfig};
use crate::oci::descriptor::Platform;
use crate::oci::digest::Digest;
use crate::oci::image::{build_image, ImageLayer, ImageSpec};
use crate::oci::media_type;
use crate::oci::WriteReport;
use crate::progress::Progress;
use crate::store::Store;

/// What the image holds and declares.
#[derive(Clone, Debug)]
pub struct DirImage {
    /// The directory whose tree becomes the only layer.
    pub dir: PathBuf,
    pub platform: Platform,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=VALUE` entries, in order.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// The `org.opencontainers.image.version` annotation.
    pub version: Option<String>,
    /// Keep the files' numeric owners (default: every entry is 0:0).
    pub keep_owners: bool,
}

/// What was built and written.
#[derive(Clone, Debug, Serialize)]
pub struct DirImageReport {
    pub destination: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layer_digest: Digest,
    pub diff_id: Digest,
    pub layer_size: u64,
    #[serde(skip)]
    pub write: WriteReport,
}

/// The run config `request` declares.
fn run_config(request: &DirImage) -> Result<RunConfig> {
    let mut run = RunConfig::default();
    for entry in &request.env {
        let (name, value) = entry
            .split_once('=')
            .with_context(|| format!("--env {entry:?}: expected NAME=VALUE"))?;
        run.set_env_var(name, value);
    }
    run.entrypoint = (!request.entrypoint.is_empty()).then(|| request.entrypoint.clone());
    run.cmd = (!request.cmd.is_empty()).then(|| request.cmd.clone());
    run.user = request.user.clone();
    run.working_dir = request.workdir.clone();
    Ok(run)
}

/// Builds the image in `store` (layer, config, manifest) and writes it
/// to `destination` (`progress` hears about a push's uploads).
pub fn write_dir_image(
    store: &Store,
    request: &DirImage,
    options: &LayerOptions,
    destination: &Destination,
    progress: &dyn Progress,
) -> Result<DirImageReport> {
    let run = run_config(request)?;
    let mut tree = FileTree::from_dir(&request.dir)
        .with_context(|| format!("reading the tree at {}", request.dir.display()))?;
    if !request.keep_owners {
        tree.set_owner_all(0, 0);
    }
    let layer = write_layer_to_layout(&tree, options, store.layout())?;
    let created = rfc3339_utc(options.mtime as i64);
    let mut annotations =
        BTreeMap::from([(media_type::ANNOTATION_CREATED.to_string(), created.clone())]);
    if let Some(version) = &request.version {
        annotations.insert(media_type::ANNOTATION_VERSION.to_string(), version.clone());
    }
    let spec = ImageSpec {
        platform: request.platform.clone(),
        created,
        run,
        layers: vec![ImageLayer {
            descriptor: layer.descriptor(),
            diff_id: layer.diff_id.clone(),
            history: History {
                created_by: Some("stagex image".to_string()),
                ..History::default()
            },
        }],
        empty_history: Vec::new(),
        annotations,
    };
    let image = build_image(&spec)?;
    store
        .layout()
        .write_json(&image.config, media_type::OCI_CONFIG)?;
    store
        .layout()
        .write_json(&image.manifest, media_type::OCI_MANIFEST)?;
    let mut root = image.descriptor.clone();
    root.platform = None;
    let write = crate::image::output::write(
        destination,
        store.layout(),
        &root,
        Some(&request.platform),
        progress,
    )?;
    Ok(DirImageReport {
        destination: destination.to_string(),
        manifest_digest: image.descriptor.digest,
        config_digest: image.config.digest,
        layer_digest: layer.digest,
        diff_id: layer.diff_id,
        layer_size: layer.size,
        write,
    })
}
