//! Owns: `stagex preseed --source NS`: pull every image listed in
//! digests/*.txt, by its digest, into out/<stage>-<name>/ (StageX's `make
//! preseed`, without docker), then record them as built from the tree's
//! package definitions (so `build` rebuilds only what changed). Parsing
//! flags and printing; the work is `build::preseed`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::fetch::packages_dir;
use super::progress;
use super::Context;
use crate::build::plan::PlanOptions;
use crate::build::preseed::{self, PreseedOptions, PreseedStatus};
use crate::layer::LayerOptions;
use crate::oci::Platform;
use crate::package::PackageTree;
use crate::pallet::resolve::ImageProvider;
use crate::release::digests;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct PreseedArgs {
    /// The registry namespace the release was published to (HOST[:PORT]/NAMESPACE).
    #[arg(long, value_name = "NS")]
    pub source: String,
    /// The release digests: a directory of <stage>.txt files or one file
    /// (default: `digests` in stagex.toml, else <root>/digests).
    #[arg(long, value_name = "DIR")]
    pub digests_dir: Option<PathBuf>,
    /// Output directory (default: `out` in stagex.toml, else <root>/out).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The platform pulled when a digest names an index (default: the host).
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Images pulled at once.
    #[arg(short = 'j', long, default_value_t = preseed::DEFAULT_JOBS, value_name = "N")]
    pub jobs: usize,
    /// The packages tree the digests belong to: each image placed is
    /// recorded as built from its definition there, so `build` treats it
    /// as up to date until that definition changes (default: `packages` in
    /// stagex.toml, else <root>/packages; nothing is recorded when it does
    /// not exist).
    #[arg(long = "packages", value_name = "DIR")]
    pub packages_dir: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: PreseedArgs) -> Result<ExitCode> {
    let dir = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.settings.digests.clone());
    let release = digests::read_release(&dir)?;
    let source = ImageProvider::parse(&args.source)?.open()?;
    let store = Store::open_default()?;
    let options = PreseedOptions {
        out_root: args.out.clone().unwrap_or_else(|| ctx.settings.out.clone()),
        platform: args.platform.clone().unwrap_or_else(Platform::host),
        jobs: args.jobs,
    };
    let progress = progress::for_command(ctx.json);
    let entries = preseed::preseed(&*source, &release, &store, &options, &*progress);
    let recorded = record(ctx, &args, &entries, &options)?;
    let failed = entries
        .iter()
        .filter(|e| matches!(e.status, PreseedStatus::Failed(_)))
        .count();
    if ctx.json {
        let list: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let (status, error) = match &e.status {
                    PreseedStatus::Pulled => ("pulled", None),
                    PreseedStatus::Present => ("present", None),
                    PreseedStatus::Failed(why) => ("failed", Some(why)),
                };
                serde_json::json!({
                    "package": e.id, "digest": e.digest, "status": status, "error": error,
                    "recorded": recorded.contains(&e.id),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "preseed": list }))?
        );
    } else {
        for e in &entries {
            match &e.status {
                PreseedStatus::Pulled => println!("pulled  {} {}", e.id, e.digest),
                PreseedStatus::Present => println!("present {} {}", e.id, e.digest),
                PreseedStatus::Failed(why) => println!("FAILED  {} {}: {why}", e.id, e.digest),
            }
        }
        println!(
            "{} images: {} pulled, {} already present, {failed} failed",
            entries.len(),
            entries
                .iter()
                .filter(|e| matches!(e.status, PreseedStatus::Pulled))
                .count(),
            entries
                .iter()
                .filter(|e| matches!(e.status, PreseedStatus::Present))
                .count(),
        );
        if !recorded.is_empty() {
            println!(
                "{} recorded as built from their package definitions: `stagex build` rebuilds them only when a definition changes",
                recorded.len()
            );
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Records the inputs of the images placed (`preseed::record_inputs`)
/// against the packages tree, when there is one.
fn record(
    ctx: &Context,
    args: &PreseedArgs,
    entries: &[preseed::PreseedEntry],
    options: &PreseedOptions,
) -> Result<std::collections::BTreeSet<String>> {
    let dir = packages_dir(ctx, &args.packages_dir);
    if !dir.is_dir() {
        return Ok(Default::default());
    }
    let tree = PackageTree::load(&dir)?;
    let plan_options = PlanOptions {
        platforms: vec![options.platform.clone()],
        epoch: LayerOptions::from_env()?.mtime,
        root: ctx.root.clone(),
    };
    let recorded = preseed::record_inputs(
        &tree,
        entries,
        &plan_options,
        &options.out_root,
        &args.source,
    )?;
    Ok(recorded.into_iter().collect())
}
