//! Owns: `stagex sigs sync` and `stagex sigs audit`: flags over stagex.toml,
//! the image set (--digests, --registry, out/, or walking a directory
//! source), one library call (its progress events drawn by
//! `cli/progress.rs`, a bar on a terminal only), the summary or `--json`, and the exit code: 0 clean, 1 errors (or audit
//! findings), 3 signatures rejected (sync) with no other error.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::Context;
use crate::lookaside::fetch::ReadPolicy;
use crate::lookaside::location::Location;
use crate::progress::Progress;
use crate::sign::image::{ImageTarget, Resolver};
use crate::sign::keyring::Keyring;
use crate::sign::quorum::check_threshold;
use crate::sigs::images;
use crate::sigs::{self as lib, AuditOptions, AuditReport, SyncOptions, SyncReport};

/// Exit code of a sync that rejected signatures but had no other error.
pub const EXIT_REJECTED: u8 = 3;

#[derive(Debug, Args)]
pub struct SigsArgs {
    #[command(subcommand)]
    pub command: SigsCommand,
}

#[derive(Debug, Subcommand)]
pub enum SigsCommand {
    /// Copy every new, valid signature from one lookaside to another.
    Sync(SyncArgs),
    /// Report what is wrong with a lookaside.
    Audit(AuditArgs),
}

/// Which images to look at, and under which identity.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// StageX digests file or directory of `<stage>.txt` (repeatable).
    #[arg(long, value_name = "FILE|DIR")]
    pub digests: Vec<PathBuf>,
    /// A registry namespace to list (`127.0.0.1:5000/stagex`).
    #[arg(long, value_name = "NS")]
    pub registry: Option<String>,
    /// Identity namespace the signatures name (default: stagex.toml `namespace`).
    #[arg(long, value_name = "NS")]
    pub identity: Option<String>,
    /// Directory of trusted maintainer certificates (default: stagex.toml `keys`).
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Accept StageX's legacy-format signatures (still checked for key, digest, repository).
    #[arg(long)]
    pub allow_legacy: bool,
    /// Images worked on at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub concurrency: usize,
    /// Seconds one request may take (then retried, with backoff); default:
    /// STAGEX_TIMEOUT's document deadline, as every other request.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Source lookaside: https://, http://, file:// or a directory.
    #[arg(long, value_name = "URL|DIR")]
    pub from: String,
    /// Destination: a directory, file://, or a WebDAV https:// (http:// on loopback).
    #[arg(long, value_name = "URL|DIR")]
    pub to: String,
    #[command(flatten)]
    pub set: SetArgs,
    /// Remove destination signatures the source does not validly serve
    /// (never for an image the source serves nothing valid for).
    #[arg(long)]
    pub prune: bool,
    /// The no-change state file (default: under ~/.cache/stagex/sigs-sync/).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Ignore the state: check every image on both sides.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The lookaside: https://, http://, file:// or a directory.
    #[arg(value_name = "URL|DIR")]
    pub lookaside: String,
    #[command(flatten)]
    pub set: SetArgs,
    /// A second lookaside to compare file by file.
    #[arg(long, value_name = "URL|DIR")]
    pub compare: Option<String>,
    /// Distinct trusted signers every image needs (default: stagex.toml `threshold`).
    #[arg(long, value_name = "N")]
    pub threshold: Option<usize>,
}

pub fn run(ctx: &Context, args: SigsArgs) -> Result<ExitCode> {
    crate::lookaside::signature_cap_setting()?;
    match args.command {
        SigsCommand::Sync(a) => run_sync(ctx, a),
        SigsCommand::Audit(a) => run_audit(ctx, a),
    }
}

fn policy(set: &SetArgs) -> ReadPolicy {
    let default = ReadPolicy::default();
    ReadPolicy {
        timeout: set
            .timeout
            .map_or(default.timeout, |s| Duration::from_secs(s.max(1))),
        ..default
    }
}

fn run_sync(ctx: &Context, args: SyncArgs) -> Result<ExitCode> {
    let keyring = keyring(ctx, &args.set)?;
    let from = Location::parse(&args.from)?;
    let (images, skipped) = image_set(ctx, &args.set, &from)?;
    for s in skipped {
        eprintln!("stagex: warning: {s}: not a `<repository>@sha256=<hex>` directory, skipped");
    }
    let state_file = if args.full {
        None
    } else {
        args.state
            .clone()
            .or_else(|| lib::state::default_path(&args.from, &args.to))
    };
    let options = SyncOptions {
        concurrency: args.set.concurrency,
        allow_legacy: args.set.allow_legacy,
        prune: args.prune,
        state_file,
        policy: policy(&args.set),
    };
    let report = run_and_print(ctx, images.len(), sync_summary, |progress| {
        lib::sync(&from, &args.to, &images, &keyring, &options, progress)
    })?;
    Ok(if !report.errors.is_empty() {
        ExitCode::FAILURE
    } else if !report.rejected.is_empty() {
        ExitCode::from(EXIT_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_audit(ctx: &Context, args: AuditArgs) -> Result<ExitCode> {
    let keyring = keyring(ctx, &args.set)?;
    let lookaside = Location::parse(&args.lookaside)?;
    let (images, skipped) = image_set(ctx, &args.set, &lookaside)?;
    let options = AuditOptions {
        threshold: check_threshold(args.threshold.unwrap_or(ctx.settings.threshold))?,
        allow_legacy: args.set.allow_legacy,
        compare: args.compare.as_deref().map(Location::parse).transpose()?,
        concurrency: args.set.concurrency,
        policy: policy(&args.set),
        ..AuditOptions::default()
    };
    let report = run_and_print(ctx, images.len(), audit_summary, |progress| {
        let mut report = lib::audit(&lookaside, &images, &keyring, &options, progress)?;
        report.add_findings(lib::audit::damaged_directories(&skipped));
        Ok(report)
    })?;
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn keyring(ctx: &Context, set: &SetArgs) -> Result<Keyring> {
    let dir = set
        .keys
        .clone()
        .unwrap_or_else(|| ctx.settings.keys.clone());
    Keyring::load_dir(&dir)
}

/// The images: --digests, else --registry, else a directory source's
/// tree, else out/; and the directories of a walked tree that are not an
/// image's (no or a bad digest: `build.log@sha256=`).
fn image_set(
    ctx: &Context,
    set: &SetArgs,
    source: &Location,
) -> Result<(Vec<ImageTarget>, Vec<String>)> {
    let namespace = set
        .identity
        .clone()
        .unwrap_or_else(|| ctx.settings.namespace.clone());
    let mut found = images::from_digests(&set.digests, &namespace)?;
    let mut damaged = Vec::new();
    if let Some(registry) = &set.registry {
        found.extend(crate::sigs::registry::list(registry, &namespace)?);
    }
    if set.digests.is_empty() && set.registry.is_none() {
        if let Some(dir) = source.directory() {
            let (walked, skipped) = images::walk(dir, &namespace)?;
            found = walked;
            damaged = skipped;
        } else if ctx.settings.out.is_dir() {
            let resolver = Resolver::from_settings(&ctx.settings, set.identity.as_deref());
            found = resolver.resolve_all(&[])?;
        } else {
            bail!(
                "{}: a lookaside over http has no listing: name the images with \
                 --digests FILE|DIR (StageX's digests/), --registry NS, or build them into {}",
                source.describe(),
                ctx.settings.out.display()
            );
        }
    }
    Ok((images::dedup(found), damaged))
}

/// Runs `work` over `total` images, its progress drawn (a count bar on a
/// terminal, not with --json), then prints its report: JSON, or `summary`.
fn run_and_print<R: serde::Serialize>(
    ctx: &Context,
    total: usize,
    summary: fn(&R) -> String,
    work: impl FnOnce(&dyn Progress) -> Result<R>,
) -> Result<R> {
    let progress = super::progress::for_items(ctx.json, total);
    let report = work(&progress)?;
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print!("{}", summary(&report));
    }
    Ok(report)
}

/// The human summary of a sync.
pub fn sync_summary(r: &SyncReport) -> String {
    let mut out = format!(
        "{} image(s) from {} to {}: {} new, {} already present, {} rejected, {} error(s), {} unchanged since the last run",
        r.images,
        r.from,
        r.to,
        r.uploaded.len(),
        r.present,
        r.rejected.len(),
        r.errors.len(),
        r.unchanged
    );
    if !r.pruned.is_empty() {
        out += &format!(", {} pruned", r.pruned.len());
    }
    out += "\n";
    for u in &r.uploaded {
        out += &format!("  new       {} {}\n", u.image, u.file);
    }
    for p in &r.pruned {
        out += &format!("  pruned    {} {}\n", p.image, p.file);
    }
    for x in &r.rejected {
        out += &format!(
            "  rejected  {} {} [{}]: {}\n",
            x.image, x.file, x.code, x.reason
        );
    }
    for e in &r.errors {
        out += &format!("  error     {}: {}\n", e.image, e.message);
    }
    out
}

/// The human summary of an audit.
pub fn audit_summary(r: &AuditReport) -> String {
    let mut out = format!(
        "{} image(s) in {}: {} clean, {} finding(s), {} valid signature(s)\n",
        r.images,
        r.lookaside,
        r.clean,
        r.findings.len(),
        r.valid
    );
    for f in &r.findings {
        out += &format!(
            "  {:18} {} {}: {}\n",
            f.code,
            f.image,
            f.file.as_deref().unwrap_or("-"),
            f.detail
        );
    }
    if !r.counts.is_empty() {
        let counts: Vec<String> = r.counts.iter().map(|(c, n)| format!("{c}={n}")).collect();
        out += &format!("by code: {}\n", counts.join(" "));
    }
    out
}
