//! Owns: `stagex diff A B` on the command line (why two images differ,
//! innermost cause first) and its exit codes. Exit 0 identical, 1 different, 2 error (a side that cannot be read, a
//! blob whose bytes do not match its digest): the error is printed here,
//! so that it is told apart from "different".
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::diff::{self, extract, render, DiffOptions, Report};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Side A: a name in out/, oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG],
    /// docker-archive:FILE, docker://HOST/REPO[:TAG|@DIGEST],
    /// HOST[:PORT]/NS/NAME[:TAG|@DIGEST], DIR/NAME, a layout directory, or
    /// NAME@sha256:... from the store.
    pub a: String,
    /// Side B (same forms as A).
    pub b: String,
    /// List every entry that differs only in mtime (summarized otherwise).
    #[arg(long)]
    pub all: bool,
    /// Extract both versions of each changed regular file to DIR/A/... and
    /// DIR/B/... (DIR/A and DIR/B must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub files: Option<PathBuf>,
    /// Run diffoscope (if installed) on the first few changed files.
    #[arg(long)]
    pub diffoscope: bool,
}

/// Exit code for "the images differ".
pub const EXIT_DIFFERENT: u8 = 1;
/// Exit code for "could not compare".
pub const EXIT_ERROR: u8 = 2;

pub fn run(ctx: &Context, args: DiffArgs) -> Result<ExitCode> {
    match compare(ctx, &args) {
        Ok(report) if report.identical => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::from(EXIT_DIFFERENT)),
        Err(error) => {
            eprintln!("stagex: error: {error:#}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

/// Resolves both sides into the store and compares them.
pub fn diff_sides(out: &Path, a: &str, b: &str, options: DiffOptions) -> Result<(Store, Report)> {
    let store = Store::open_default()?;
    let (side_a, side_b) = diff::side::resolve_both((a, b), out, &store)?;
    let report = diff::diff(&store, &side_a, &side_b, options)?;
    Ok((store, report))
}

fn compare(ctx: &Context, args: &DiffArgs) -> Result<Report> {
    if args.diffoscope {
        extract::require_diffoscope()?;
    }
    let options = DiffOptions { all: args.all };
    let (store, report) = diff_sides(&ctx.settings.out, &args.a, &args.b, options)?;
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print!("{}", render::render(&report));
    }
    if args.files.is_none() && !args.diffoscope {
        return Ok(report);
    }
    let temp;
    let dir = match &args.files {
        Some(dir) => dir.as_path(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path()
        }
    };
    let pairs = extract::extract_changed(&store, &report.changed_files, dir)?;
    if args.files.is_some() && !ctx.json {
        for (a, b) in &pairs {
            println!("files: {} {}", a.display(), b.display());
        }
    }
    if args.diffoscope {
        extract::run_diffoscope(&pairs, ctx.json)?;
    }
    Ok(report)
}
