//! `stagex image DIR --output DEST`: turn a directory into a deterministic
//! single-layer image (the same digest on every machine), with declared
//! entrypoint, env, user and workdir. Arguments and reporting only; the
//! work is `image::from_dir::write_dir_image`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::image::from_dir::{write_dir_image, DirImage};
use crate::image::output::Destination;
use crate::layer::writer::LayerOptions;
use crate::oci::descriptor::Platform;
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

pub fn run(ctx: &Context, args: ImageArgs) -> Result<ExitCode> {
    let destination = Destination::parse(&args.output)?;
    let store = match &args.store {
        Some(path) => Store::open(path)?,
        None => Store::open_default()?,
    };
    let request = DirImage {
        dir: args.dir,
        platform: args.platform,
        entrypoint: args.entrypoint,
        cmd: args.cmd,
        env: args.env,
        user: args.user,
        workdir: args.workdir,
        version: args.version,
        keep_owners: args.keep_owners,
    };
    let options = LayerOptions::from_env()?;
    let report = write_dir_image(
        &store,
        &request,
        &options,
        &destination,
        super::progress::for_command(ctx.json).as_ref(),
    )?;
    if ctx.json {
        super::print_json(&report)?;
    } else {
        println!("{} {}", report.manifest_digest, report.destination);
    }
    Ok(ExitCode::SUCCESS)
}
