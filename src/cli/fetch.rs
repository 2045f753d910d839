//! `stagex fetch [<stage>-<name>...]`: download package sources into
//! `fetch/<stage>/<name>/`, verified by sha256 (see package::fetch).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::package::fetch::{self, FetchOptions, FileOutcome};
use crate::package::PackageTree;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Packages to fetch (`core-busybox`); all packages when none is given.
    pub packages: Vec<String>,
    /// The packages tree (default: `packages` in stagex.toml, else <root>/packages).
    #[arg(long = "packages", value_name = "DIR")]
    pub packages_dir: Option<PathBuf>,
    /// Where sources go (default: <root>/fetch).
    #[arg(long, value_name = "DIR")]
    pub fetch_dir: Option<PathBuf>,
    /// Downloads at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
}

/// The packages tree: the flag, else settings (already rooted).
pub fn packages_dir(ctx: &Context, flag: &Option<PathBuf>) -> PathBuf {
    flag.clone()
        .unwrap_or_else(|| ctx.settings.packages.clone())
}

pub fn run(ctx: &Context, args: FetchArgs) -> Result<ExitCode> {
    let tree = PackageTree::load(&packages_dir(ctx, &args.packages_dir))?;
    let progress = super::progress::for_command(ctx.json);
    super::lint::report_unknown(&tree.unknown_fields, false, &*progress)?;
    let fetch_root = args
        .fetch_dir
        .clone()
        .unwrap_or_else(|| ctx.root.join("fetch"));
    let jobs = fetch::jobs_for_names(&tree, &args.packages, &fetch_root)?;
    let options = FetchOptions {
        concurrency: args.jobs,
    };
    let outcomes = fetch::fetch_all(&jobs, &options, progress.as_ref())?;
    if ctx.json {
        let report: Vec<serde_json::Value> = jobs
            .iter()
            .zip(&outcomes)
            .map(|(job, outcome)| {
                let (status, url) = match outcome {
                    FileOutcome::Present => ("present", None),
                    FileOutcome::Downloaded { url, .. } => ("downloaded", Some(url.clone())),
                };
                serde_json::json!({
                    "package": job.package,
                    "file": job.dest().display().to_string(),
                    "sha256": job.source.hash.hex(),
                    "status": status,
                    "url": url,
                })
            })
            .collect();
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (job, outcome) in jobs.iter().zip(&outcomes) {
            match outcome {
                FileOutcome::Present => println!("ok        {}", job.dest().display()),
                FileOutcome::Downloaded { url, replaced } => println!(
                    "{} {} <- {url}",
                    if *replaced { "replaced " } else { "fetched  " },
                    job.dest().display()
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
