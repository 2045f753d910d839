//! `stagex verify`: for each image, check every signature in the lookaside
//! against the trusted keys and print who signed, which files are bad and
//! why, and whether the quorum of DISTINCT signers is met. Exit non-zero
//! when any image misses the quorum.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::lookaside::Lookaside;
use crate::sign::check::{verify_images, ImageReport};
use crate::sign::image::Resolver;
use crate::sign::keyring::Keyring;
use crate::sign::quorum::check_threshold;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Package images (`<stage>-<name>`, from out/) or `REPO[:TAG]@sha256:<hex>`; none = all of out/.
    pub images: Vec<String>,
    /// Directory of trusted certificates (default: stagex.toml `keys`).
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,
    /// Distinct trusted signers needed (default: stagex.toml `threshold`, 2).
    #[arg(long, value_name = "N")]
    pub threshold: Option<usize>,
    /// Where signatures are read: https://, http://, file:// or a directory.
    #[arg(long, value_name = "URL|DIR")]
    pub lookaside: Option<String>,
    /// Identity namespace for package names (default: stagex.toml `namespace`).
    #[arg(long, value_name = "NS")]
    pub identity: Option<String>,
}

pub fn run(ctx: &Context, args: VerifyArgs) -> Result<ExitCode> {
    let keys = args
        .keys
        .clone()
        .unwrap_or_else(|| ctx.settings.keys.clone());
    let keyring = Keyring::load_dir(&keys)?;
    let threshold = check_threshold(args.threshold.unwrap_or(ctx.settings.threshold))?;
    let location = args
        .lookaside
        .clone()
        .unwrap_or_else(|| ctx.settings.lookaside.clone());
    let lookaside = Lookaside::parse(&location)?;
    let resolver = Resolver::from_settings(&ctx.settings, args.identity.as_deref());
    let targets = resolver.resolve_all(&args.images)?;
    let reports = verify_images(&keyring, &lookaside, &targets, threshold);
    let missing = reports.iter().filter(|r| !r.quorum).count();
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", table(&reports));
    }
    if missing > 0 {
        eprintln!(
            "stagex: error: {missing} of {} image(s) miss the quorum of {threshold} distinct trusted signers (signatures from {})",
            reports.len(),
            lookaside.describe()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The human table: one header line per image, then its details.
pub fn table(reports: &[ImageReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.image.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:width$}  {:12}  {:19}  {:7}  QUORUM\n",
        "IMAGE", "PLATFORM", "DIGEST", "SIGNERS"
    );
    for r in reports {
        let short = r.digest.get(..19).unwrap_or(&r.digest);
        out += &format!(
            "{:width$}  {:12}  {:19}  {:>3}/{:<3}  {}\n",
            r.image,
            r.platform.as_deref().unwrap_or("-"),
            short,
            r.valid_signers,
            r.threshold,
            if r.quorum { "met" } else { "MISSED" }
        );
        if let Some(e) = &r.error {
            out += &format!("    error    {e}\n");
        }
        for s in &r.signers {
            out += &format!(
                "    signer   {} {} [{}]\n",
                s.fingerprint,
                s.name.as_deref().unwrap_or(""),
                s.files.join(", ")
            );
        }
        for i in &r.invalid {
            out += &format!("    invalid  {}: {}\n", i.file, i.reason);
        }
        for h in &r.hidden {
            out += &format!(
                "    hidden   {h}: after a gap in the numbering, no reader sees it (renumber the files contiguously)\n"
            );
        }
    }
    out
}
