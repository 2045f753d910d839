//! `stagex verify`: for each image, check every signature in the lookaside
//! against the trusted keys and print who signed, which files are bad and
//! why, and whether the quorum of DISTINCT signers is met. Exit non-zero
//! when any image misses the quorum. `--digests FILE|DIR` checks a whole
//! release from its committed digests alone (no out/, no registry) and
//! prints a summary (with `--json`: `{"summary": ..., "images": [...]}`).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::trust::TrustArgs;
use super::Context;
use crate::sign::cache as signature_cache;
use crate::sign::check::{summarize, ImageReport, Summary};
use crate::sign::gate;
use crate::sign::release::ReleaseDigests;

/// `--json` of a whole-release verification.
#[derive(Serialize)]
struct ReleaseJson<'a> {
    summary: &'a Summary,
    images: &'a [ImageReport],
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Package images (`<stage>-<name>`, from out/) or `REPO[:TAG]@sha256:<hex>`; none = all of out/.
    pub images: Vec<String>,
    /// Verify every image listed in these digests files (`digests/<stage>.txt`)
    /// or directories of them, instead of out/.
    #[arg(long, value_name = "FILE|DIR", conflicts_with = "images")]
    pub digests: Vec<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
}

pub fn run(ctx: &Context, args: VerifyArgs) -> Result<ExitCode> {
    crate::lookaside::signature_cap_setting()?;
    // First: loading the keys checks their self-signatures, which the
    // cache may already hold.
    let cache = signature_cache::default_path();
    if let Some(path) = &cache {
        if let Err(e) = signature_cache::load(path) {
            eprintln!("stagex: warning: {e:#} (verifying without the cache)");
        }
    }
    let trust = args.trust.load(&ctx.settings)?;
    let release = !args.digests.is_empty();
    let targets = if release {
        ReleaseDigests::load_targets(&args.digests, args.trust.resolver(&ctx.settings).namespace)?
    } else {
        args.trust
            .resolver(&ctx.settings)
            .resolve_all(&args.images)?
    };
    let (missed, reports) = match gate::check(&trust, &trust.options, &targets) {
        Ok(passed) => (None, passed.reports),
        Err(missed) => (Some(missed.headline()), missed.reports),
    };
    if let Some(path) = &cache {
        if let Err(e) = signature_cache::save(path) {
            eprintln!("stagex: warning: {e:#} (the signature cache was not updated)");
        }
    }
    let summary = summarize(&reports);
    match (ctx.json, release) {
        (true, true) => super::print_json(&ReleaseJson {
            summary: &summary,
            images: &reports,
        })?,
        (true, false) => super::print_json(&reports)?,
        (false, true) => {
            let failing: Vec<ImageReport> = reports.iter().filter(|r| !r.quorum).cloned().collect();
            if !failing.is_empty() {
                print!("{}", table(&failing));
            }
            print!("{}", summary_text(&summary, &trust.keyring));
        }
        (false, false) => print!("{}", table(&reports)),
    }
    if let Some(headline) = missed {
        // The table above has the details.
        eprintln!("stagex: error: {headline}");
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
        for h in r.hidden.iter().filter(|_| !r.capped) {
            out += &format!(
                "    hidden   {h}: after a gap in the numbering, no reader sees it (renumber the files contiguously)\n"
            );
        }
        for h in r.hidden.iter().filter(|_| r.capped) {
            out += &format!(
                "    ignored  {h}: the cap of {} signatures per image was reached, readers stop there (remove files no one needs; {} sets stagex's cap)\n",
                crate::lookaside::max_signatures(),
                crate::lookaside::MAX_SIGNATURES_ENV
            );
        }
    }
    out
}

/// The release summary, for people.
pub fn summary_text(s: &Summary, keyring: &crate::sign::keyring::Keyring) -> String {
    let mut out = format!(
        "{} image(s): {} meet the quorum, {} miss it{}\n",
        s.images,
        s.quorum_met,
        s.quorum_missed,
        if s.errors > 0 {
            format!(" ({} could not be read)", s.errors)
        } else {
            String::new()
        }
    );
    let counts: Vec<String> = s
        .images_by_signer_count
        .iter()
        .map(|(signers, images)| format!("{images} with {signers}"))
        .collect();
    out += &format!("signers per image: {}\n", counts.join(", "));
    for (fingerprint, images) in &s.images_per_signer {
        let name = sequoia_openpgp::Fingerprint::from_hex(fingerprint)
            .ok()
            .and_then(|f| keyring.label(&f))
            .unwrap_or_default();
        out += &format!("  {fingerprint} {name}: {images} image(s)\n");
    }
    if s.duplicate_signatures > 0 {
        out += &format!(
            "{} extra signature file(s) by a key that already signed the image (counted once)\n",
            s.duplicate_signatures
        );
    }
    if s.invalid_by_reason.is_empty() {
        out += "invalid signatures: none\n";
    } else {
        let reasons: Vec<String> = s
            .invalid_by_reason
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        out += &format!("invalid signatures: {}\n", reasons.join(", "));
    }
    if s.hidden_files > 0 {
        out += &format!(
            "{} file(s) hidden after a gap in the numbering\n",
            s.hidden_files
        );
    }
    if s.capped_files > 0 {
        out += &format!(
            "{} file(s) not read: the cap of {} signatures per image was reached\n",
            s.capped_files,
            crate::lookaside::max_signatures()
        );
    }
    out
}
