//! `stagex build [<stage>-<name>...]`: build package images into
//! `out/<stage>-<name>/` (dependencies first; everything when no name).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::fetch::packages_dir;
use super::Context;
use crate::build::inputs;
use crate::build::package_build::{self, BuildOptions, BuilderChoice};
use crate::build::plan::{self, PlanOptions};
use crate::layer::LayerOptions;
use crate::oci::Platform;
use crate::package::PackageTree;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Packages to build (`core-busybox`); every package when none is given.
    pub packages: Vec<String>,
    /// Backend for Containerfile packages (native packages never need one).
    #[arg(long, value_enum, default_value_t = BuilderChoice::Auto)]
    pub builder: BuilderChoice,
    /// Platforms, comma-separated (`linux/amd64,linux/arm64`), for packages
    /// whose package.toml sets no `platforms` (default: the host).
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<Platform>,
    /// The packages tree (default: `packages` in stagex.toml, else <root>/packages).
    #[arg(long = "packages", value_name = "DIR")]
    pub packages_dir: Option<PathBuf>,
    /// Where sources were fetched (default: <root>/fetch).
    #[arg(long, value_name = "DIR")]
    pub fetch_dir: Option<PathBuf>,
    /// Output directory (default: `out` in stagex.toml, else <root>/out).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Rebuild dependencies even when they are already in the output directory.
    #[arg(long)]
    pub rebuild_deps: bool,
    /// Print the plan (build order, targets, build args, up to date or not)
    /// and build nothing; with --json, `{"plan": [...]}`.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(ctx: &Context, args: BuildArgs) -> Result<ExitCode> {
    let tree = PackageTree::load(&packages_dir(ctx, &args.packages_dir))?;
    let options = BuildOptions {
        out_root: args.out.clone().unwrap_or_else(|| ctx.settings.out.clone()),
        fetch_root: args
            .fetch_dir
            .clone()
            .unwrap_or_else(|| ctx.root.join("fetch")),
        platforms: args.platform.clone(),
        builder: args.builder,
        layer: LayerOptions::from_env()?,
        rebuild_deps: args.rebuild_deps,
    };
    if args.dry_run {
        return dry_run(ctx, &tree, &args.packages, &options);
    }
    let reports = package_build::build(&tree, &args.packages, &options)?;
    if ctx.json {
        let report: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "package": r.id,
                    "backend": r.backend,
                    "out": r.output.dir.display().to_string(),
                    "index": r.output.index.digest.to_string(),
                    "manifests": r.output.manifests.iter().map(|m| serde_json::json!({
                        "digest": m.digest.to_string(),
                        "platform": m.platform.as_ref().map(|p| p.to_string()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for r in &reports {
            for m in &r.output.manifests {
                let platform = m
                    .platform
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                println!(
                    "{} {} {} ({}) -> {}",
                    r.id,
                    platform,
                    m.digest,
                    r.backend,
                    r.output.dir.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run`: the plan, nothing built.
fn dry_run(
    ctx: &Context,
    tree: &PackageTree,
    names: &[String],
    options: &BuildOptions,
) -> Result<ExitCode> {
    let plan_options = PlanOptions {
        platforms: options.platforms.clone(),
        epoch: options.layer.mtime,
        root: ctx.root.clone(),
    };
    let mut plan = plan::plan(tree, names, &plan_options)?;
    inputs::mark_up_to_date(&mut plan, tree, &options.out_root)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "plan": plan }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for e in &plan {
        let state = if e.up_to_date { "up to date" } else { "build" };
        let target = e
            .target
            .as_deref()
            .map(|t| format!(" --target {t}"))
            .unwrap_or_default();
        println!(
            "{} {} [{}]{target} {state}{}",
            e.name,
            e.version,
            e.platforms.join(","),
            if e.deps.is_empty() {
                String::new()
            } else {
                format!(" (after {})", e.deps.join(" "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
