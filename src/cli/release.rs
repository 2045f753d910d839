//! Owns: `stagex release notes` and `stagex release status`: flags over
//! stagex.toml, the library calls in `crate::release`, and the output
//! (Markdown, the terminal table, `--json`, `--html FILE` written atomically).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::trust::{Trust, TrustArgs};
use super::{print_json, Context};
use crate::release::notes::{self, Contributor};
use crate::release::snapshot::{self, TreeRef};
use crate::sign::check::{verify_images, ImageReport};
use crate::sign::release::ReleaseDigests;
use crate::sign::status;

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// What changed between two releases of the tree, as Markdown for the signed tag (or --json).
    Notes(NotesArgs),
    /// Who signed what: packages x trusted maintainers, the quorum per package (--html FILE: one static page).
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct NotesArgs {
    /// The earlier release: a git ref of the repository (--root) or a checkout directory.
    #[arg(long, value_name = "REF|DIR")]
    pub from: String,
    /// The new release: a git ref or a checkout directory.
    #[arg(long, value_name = "REF|DIR")]
    pub to: String,
    /// With `--lookaside`: count the new release's signers (valid signatures by the trusted keys).
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The release's digests files or directory (default: stagex.toml `digests`).
    #[arg(long, value_name = "FILE|DIR")]
    pub digests: Vec<PathBuf>,
    /// Also write the matrix as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
}

pub fn run(ctx: &Context, args: ReleaseArgs) -> Result<ExitCode> {
    match args.command {
        ReleaseCommand::Notes(args) => run_notes(ctx, args),
        ReleaseCommand::Status(args) => run_status(ctx, args),
    }
}

fn run_notes(ctx: &Context, args: NotesArgs) -> Result<ExitCode> {
    let (from, to) = (
        TreeRef::parse(&args.from, &ctx.root),
        TreeRef::parse(&args.to, &ctx.root),
    );
    let mut notes = notes::compare(&snapshot::read(&from)?, &snapshot::read(&to)?);
    if from.is_git() && to.is_git() {
        notes.authors = snapshot::authors(&ctx.root, &args.from, &args.to)?
            .into_iter()
            .map(|(name, count)| Contributor { name, count })
            .collect();
    }
    if args.trust.lookaside.is_some() {
        let digests_dir = release_digests_dir(&to, &args.to, ctx)?;
        notes.signers = signers(ctx, &args.trust, &digests_dir.path)?;
    }
    if ctx.json {
        print_json(&notes)?;
    } else {
        print!("{}", notes::markdown(&notes));
    }
    Ok(ExitCode::SUCCESS)
}

/// The digests directory of the `to` release (exported for a git ref).
struct DigestsDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn release_digests_dir(tree: &TreeRef, text: &str, ctx: &Context) -> Result<DigestsDir> {
    match tree {
        TreeRef::Dir(dir) => {
            let settings = crate::settings::Settings::load(dir)?;
            Ok(DigestsDir {
                path: dir.join(settings.digests),
                _temp: None,
            })
        }
        TreeRef::Git { .. } => {
            let temp = tempfile::tempdir()?;
            snapshot::export_to(&ctx.root, text, temp.path())?;
            let settings = crate::settings::Settings::load(temp.path())?;
            Ok(DigestsDir {
                path: temp.path().join(settings.digests),
                _temp: Some(temp),
            })
        }
    }
}

/// Valid signatures per trusted maintainer over every image of the release.
fn signers(ctx: &Context, trust_args: &TrustArgs, digests: &Path) -> Result<Vec<Contributor>> {
    let trust = trust_args.load(&ctx.settings)?;
    let reports = verify_release(ctx, trust_args, &trust, &[digests.to_path_buf()])?;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for signer in reports.iter().flat_map(|r| &r.signers) {
        let name = signer
            .name
            .clone()
            .unwrap_or_else(|| signer.fingerprint.clone());
        *counts.entry(name).or_default() += 1;
    }
    let mut signers: Vec<Contributor> = counts
        .into_iter()
        .map(|(name, count)| Contributor { name, count })
        .collect();
    signers.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    Ok(signers)
}

fn verify_release(
    ctx: &Context,
    trust_args: &TrustArgs,
    trust: &Trust,
    digests: &[PathBuf],
) -> Result<Vec<ImageReport>> {
    let targets =
        ReleaseDigests::load_targets(digests, trust_args.resolver(&ctx.settings).namespace)?;
    Ok(verify_images(
        &trust.keyring,
        &trust.lookaside,
        &targets,
        trust.threshold,
        &trust.options,
    ))
}

fn run_status(ctx: &Context, args: StatusArgs) -> Result<ExitCode> {
    let trust = args.trust.load(&ctx.settings)?;
    let digests = if args.digests.is_empty() {
        vec![ctx.root.join(&ctx.settings.digests)]
    } else {
        args.digests.clone()
    };
    let reports = verify_release(ctx, &args.trust, &trust, &digests)?;
    let maintainers: Vec<(String, String)> = trust
        .keyring
        .certs()
        .iter()
        .map(|cert| {
            let fingerprint = cert.fingerprint();
            let name = trust
                .keyring
                .label(&fingerprint)
                .unwrap_or_else(|| fingerprint.to_hex());
            (fingerprint.to_hex(), name)
        })
        .collect();
    let status = status::status(&reports, &maintainers, trust.threshold);
    if let Some(path) = &args.html {
        let title = format!(
            "StageX release status: {}",
            digests
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        crate::oci::layout::write_atomic(path, status::html(&status, &title).as_bytes())?;
    }
    if ctx.json {
        print_json(&status)?;
    } else {
        print!("{}", status::table(&status));
    }
    Ok(if status.quorum_short == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
