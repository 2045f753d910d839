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
    /// With --check: where the release's images are (registry namespace
    /// HOST[:PORT]/NS or a directory); each mismatch then shows the first
    /// causes `stagex diff` finds (without it, the command to run).
    #[arg(long, value_name = "NS|DIR", requires = "check")]
    pub against: Option<String>,
}

pub fn run(ctx: &Context, args: DigestsArgs) -> Result<ExitCode> {
    let out = args.out.clone().unwrap_or_else(|| ctx.settings.out.clone());
    let dir = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.settings.digests.clone());
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    if args.check {
        return check(ctx, &out, &dir, &platform, args.against.as_deref());
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
fn check(
    ctx: &Context,
    out: &Path,
    dir: &Path,
    platform: &Platform,
    against: Option<&str>,
) -> Result<ExitCode> {
    let release = digests::read_release(dir)?;
    let built = if out.exists() {
        digests::scan(out, platform)?
    } else {
        Default::default()
    };
    let entries = digests::check(&release, &built);
    let count = |f: fn(&CheckStatus) -> bool| entries.iter().filter(|e| f(&e.status)).count();
    let mismatches = count(|s| matches!(s, CheckStatus::Mismatch { .. }));
    let explained = explain_mismatches(ctx, out, &entries, against);
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "check": entries, "explain": explained }))?
        );
    } else {
        for e in &entries {
            match &e.status {
                CheckStatus::Match { digest } => println!("match    {} {digest}", e.package),
                CheckStatus::Mismatch { expected, actual } => {
                    println!(
                        "MISMATCH {} expected {expected} ({}), out/ has {actual}",
                        e.package,
                        dir.display()
                    );
                    if let Some(why) = explained.iter().find(|w| w.package == e.package) {
                        print!("{}", why.text());
                    }
                }
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

/// How many causes `--check --against` shows per mismatch.
const EXPLAIN_CAUSES: usize = 3;

/// Why one package mismatches: the `stagex diff` command, and with
/// `--against` its first causes (or why it could not run).
#[derive(Debug, serde::Serialize)]
struct Explained {
    package: String,
    command: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    causes: Vec<crate::diff::Cause>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Explained {
    fn text(&self) -> String {
        let mut text = format!("         why: {}\n", self.command);
        for cause in &self.causes {
            text.push_str(&format!("    {}\n", crate::diff::render::cause_line(cause)));
        }
        if let Some(error) = &self.error {
            text.push_str(&format!("         (diff failed: {error})\n"));
        }
        text
    }
}

/// For each mismatch: `stagex diff RELEASE OUT`, run when the release's
/// images can be read (`against`).
fn explain_mismatches(
    ctx: &Context,
    out: &Path,
    entries: &[crate::release::digests::CheckEntry],
    against: Option<&str>,
) -> Vec<Explained> {
    let mismatches = entries.iter().filter_map(|e| match &e.status {
        CheckStatus::Mismatch { expected, actual } => Some((&e.package, expected, actual)),
        _ => None,
    });
    mismatches
        .map(|(package, expected, actual)| {
            let release = format!("{}/{package}@{expected}", against.unwrap_or("NS|DIR"));
            let built = format!("{}@{actual}", out.join(package).display());
            let mut explained = Explained {
                package: package.clone(),
                command: format!("stagex diff {release} {built}"),
                causes: Vec::new(),
                error: None,
            };
            if against.is_some() {
                let options = crate::diff::DiffOptions::default();
                match super::diff::diff_sides(&ctx.settings.out, &release, &built, options) {
                    Ok((_, report)) => {
                        explained.causes = report
                            .causes
                            .into_iter()
                            .filter(|c| !c.consequence)
                            .take(EXPLAIN_CAUSES)
                            .collect()
                    }
                    Err(e) => explained.error = Some(format!("{e:#}")),
                }
            }
            explained
        })
        .collect()
}
