//! `stagex verify`: for each image, check every signature in the lookaside
//! against the trusted keys and print who signed, which files are bad and
//! why, and whether the quorum of DISTINCT signers is met. Exit non-zero
//! when any image misses the quorum.
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::trust::TrustArgs;
use super::Context;
use crate::sign::check::{verify_images, ImageReport};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Package images (`<stage>-<name>`, from out/) or `REPO[:TAG]@sha256:<hex>`; none = all of out/.
    pub images: Vec<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
}

pub fn run(ctx: &Context, args: VerifyArgs) -> Result<ExitCode> {
    let trust = args.trust.load(&ctx.settings)?;
    let targets = args
        .trust
        .resolver(&ctx.settings)
        .resolve_all(&args.images)?;
    let reports = verify_images(&trust.keyring, &trust.lookaside, &targets, trust.threshold);
    let missing = reports.iter().filter(|r| !r.quorum).count();
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", table(&reports));
    }
    if missing > 0 {
        eprintln!(
            "stagex: error: {missing} of {} image(s) miss the quorum of {} distinct trusted signers (signatures from {})",
            reports.len(),
            trust.threshold,
            trust.lookaside.describe()
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
