//! `stagex image DIR --output DEST`: turn a directory into a deterministic
//! single-layer image (the same digest on every machine), with declared
//! entrypoint, env, user and workdir. The general form of what a native
//! package build does, usable on any tree.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use super::Context;
use crate::layer::tree::FileTree;
use crate::layer::writer::{write_layer_to_layout, LayerOptions};
use crate::oci::config::{rfc3339_utc, History, RunConfig};
use crate::oci::descriptor::Platform;
use crate::oci::image::{build_image, ImageLayer, ImageSpec};
use crate::oci::media_type;
use crate::output::{self, Destination};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The directory whose tree becomes the image's only layer.
    pub dir: PathBuf,
    /// Where to write the image: oci:DIR[:TAG], oci-archive:FILE[:TAG],
    /// docker-archive:FILE[:NAME:TAG] or docker://HOST/REPO:TAG.
    #[arg(long, short)]
    pub output: String,
    /// The platform recorded in the image config.
    #[arg(long, default_value_t = Platform::host())]
    pub platform: Platform,
    /// Entrypoint, one argument per flag (`--entrypoint /bin/sh --entrypoint -c`).
    #[arg(long)]
    pub entrypoint: Vec<String>,
    /// Default command arguments, one per flag.
    #[arg(long)]
    pub cmd: Vec<String>,
    /// Environment entries, NAME=VALUE, in order.
    #[arg(long)]
    pub env: Vec<String>,
    /// The user the container runs as (e.g. 1000:1000).
    #[arg(long)]
    pub user: Option<String>,
    /// The working directory.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Value of the org.opencontainers.image.version annotation.
    #[arg(long)]
    pub version: Option<String>,
    /// Keep the numeric uid/gid of the files on disk. Default: every entry
    /// is owned by 0:0, so the digest does not depend on who checked the
    /// directory out (uid 1000 on a laptop, 1001 on a CI runner, ...).
    #[arg(long)]
    pub keep_owners: bool,
    /// Local store used as the staging area (default: see README).
    #[arg(long, env = "STAGEX_STORE")]
    pub store: Option<PathBuf>,
}

#[derive(Serialize)]
struct ImageReport {
    destination: String,
    manifest_digest: String,
    config_digest: String,
    layer_digest: String,
    diff_id: String,
    layer_size: u64,
}

pub fn run(ctx: &Context, args: ImageArgs) -> Result<ExitCode> {
    let destination = Destination::parse(&args.output)?;
    let store = match &args.store {
        Some(path) => Store::open(path)?,
        None => Store::open_default()?,
    };
    let options = LayerOptions::from_env()?;
    let mut tree = FileTree::from_dir(&args.dir)
        .with_context(|| format!("reading the tree at {}", args.dir.display()))?;
    if !args.keep_owners {
        tree.set_owner_all(0, 0);
    }
    let layer = write_layer_to_layout(&tree, &options, store.layout())?;

    let mut run = RunConfig::default();
    for entry in &args.env {
        let (name, value) = entry
            .split_once('=')
            .with_context(|| format!("--env {entry:?}: expected NAME=VALUE"))?;
        run.set_env_var(name, value);
    }
    run.entrypoint = (!args.entrypoint.is_empty()).then(|| args.entrypoint.clone());
    run.cmd = (!args.cmd.is_empty()).then(|| args.cmd.clone());
    run.user = args.user.clone();
    run.working_dir = args.workdir.clone();

    let created = rfc3339_utc(options.mtime as i64);
    let mut annotations =
        BTreeMap::from([(media_type::ANNOTATION_CREATED.to_string(), created.clone())]);
    if let Some(version) = &args.version {
        annotations.insert(media_type::ANNOTATION_VERSION.to_string(), version.clone());
    }
    let spec = ImageSpec {
        platform: args.platform.clone(),
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
    output::write(
        &destination,
        store.layout(),
        &root,
        Some(&args.platform),
        super::progress::for_command(ctx.json).as_ref(),
    )?;

    let report = ImageReport {
        destination: destination.to_string(),
        manifest_digest: image.descriptor.digest.to_string(),
        config_digest: image.config.digest.to_string(),
        layer_digest: layer.digest.to_string(),
        diff_id: layer.diff_id.to_string(),
        layer_size: layer.size,
    };
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} {}", report.manifest_digest, report.destination);
    }
    Ok(ExitCode::SUCCESS)
}
