//! `stagex digests`: write `digests/<stage>.txt` from the built images in
//! `out/`, in StageX's exact format; with `--check`, compare `out/` with
//! the committed files instead (match / mismatch / missing / extra).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::oci::Platform;
use crate::release::digests::{self, CheckStatus};

#[derive(Debug, Args)]
pub struct DigestsArgs {
    /// Output directory holding the built images (default: `out` in stagex.toml).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the digests files go (default: `digests` in stagex.toml, else <root>/digests).
    #[arg(long, value_name = "DIR")]
    pub digests_dir: Option<PathBuf>,
    /// Which manifest to list for multi-platform images (default: the host's).
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Compare out/ with the committed digests (write nothing): per package
    /// match, mismatch (both digests), missing or extra; exit 1 on any
    /// mismatch.
    #[arg(long)]
    pub check: bool,
}

pub fn run(ctx: &Context, args: DigestsArgs) -> Result<ExitCode> {
    let out = args.out.clone().unwrap_or_else(|| ctx.settings.out.clone());
    let dir = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.settings.digests.clone());
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    if args.check {
        return check(ctx, &out, &dir, &platform);
    }
    let found = digests::scan(&out, &platform)?;
    let files = digests::write(&found, &dir)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(
                &files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
            )?
        );
    } else {
        for (file, (stage, entries)) in files.iter().zip(&found) {
            println!("{} ({} {stage} packages)", file.display(), entries.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--check`: out/ against the committed release.
fn check(ctx: &Context, out: &Path, dir: &Path, platform: &Platform) -> Result<ExitCode> {
    let release = digests::read_release(dir)?;
    let built = if out.exists() {
        digests::scan(out, platform)?
    } else {
        Default::default()
    };
    let entries = digests::check(&release, &built);
    let count = |f: fn(&CheckStatus) -> bool| entries.iter().filter(|e| f(&e.status)).count();
    let mismatches = count(|s| matches!(s, CheckStatus::Mismatch { .. }));
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "check": entries }))?
        );
    } else {
        for e in &entries {
            match &e.status {
                CheckStatus::Match { digest } => println!("match    {} {digest}", e.package),
                CheckStatus::Mismatch { expected, actual } => println!(
                    "MISMATCH {} expected {expected} ({}), out/ has {actual}",
                    e.package,
                    dir.display()
                ),
                CheckStatus::Missing { expected } => {
                    println!(
                        "missing  {} {expected} (not in {})",
                        e.package,
                        out.display()
                    )
                }
                CheckStatus::Extra { actual } => println!(
                    "extra    {} {actual} (not listed in {})",
                    e.package,
                    dir.display()
                ),
            }
        }
        println!(
            "{} match, {mismatches} mismatch, {} missing, {} extra",
            count(|s| matches!(s, CheckStatus::Match { .. })),
            count(|s| matches!(s, CheckStatus::Missing { .. })),
            count(|s| matches!(s, CheckStatus::Extra { .. })),
        );
    }
    Ok(if mismatches > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
