//! `stagex sign`: sign every image in `out/` (or the named ones) with one
//! key, writing `signature-N` files into the local lookaside tree. Reproduce
//! before sign: an image is signed only when its digest is the one committed
//! in `digests/<stage>.txt` (`--unreleased` skips that check and says so).
//! One line per image (signed / already signed / not reproduced / not in
//! digests / failed), a progress bar on a terminal (drawn by
//! `cli/progress.rs` from a `progress` task), `--json` for scripts;
//! non-zero exit if any image was refused or failed.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::Context;
use crate::lookaside::file::FileLookaside;
use crate::progress::Task;
use crate::sign::apply::{sign_target, SignOutcome};
use crate::sign::image::{ImageTarget, Resolver};
use crate::sign::release::{Gate, ReleaseDigests};
use crate::sign::signer::{GpgSigner, KeyFileSigner, PayloadSigner};

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Package images (`<stage>-<name>`, from out/) or `REPO:TAG@sha256:<hex>`; none = all of out/.
    pub images: Vec<String>,
    /// OpenPGP secret key file (armored or binary; a protected one is unlocked with $STAGEX_KEY_PASSPHRASE).
    #[arg(long, conflicts_with = "gpg", required_unless_present = "gpg")]
    pub key: Option<PathBuf>,
    /// Sign through gpg's agent with this key (smartcards, touch); gpg from PATH or $STAGEX_GPG.
    #[arg(long, value_name = "FINGERPRINT")]
    pub gpg: Option<String>,
    /// The signature tree to write into (default: `signatures` from stagex.toml).
    #[arg(long, value_name = "DIR")]
    pub signatures: Option<PathBuf>,
    /// Identity namespace: signs `<NS>/<stage>-<name>:<version>` (default: stagex.toml `namespace`).
    #[arg(long, value_name = "NS")]
    pub identity: Option<String>,
    /// The committed digests an image must match to be signed (default:
    /// `digests` in stagex.toml, else <root>/digests).
    #[arg(long, value_name = "FILE|DIR")]
    pub digests: Vec<PathBuf>,
    /// Sign what is in out/ without checking it against the committed digests
    /// (such a signature does not say "I reproduced this release").
    #[arg(long, conflicts_with = "digests")]
    pub unreleased: bool,
}

#[derive(Serialize)]
struct Line {
    image: String,
    platform: Option<String>,
    digest: String,
    identity: String,
    status: Status,
    file: Option<String>,
    error: Option<String>,
    /// Signed with `--unreleased` (not checked against digests/).
    unreleased: bool,
}

/// What `sign` did with one image (`signed`, `already-signed`,
/// `not-reproduced`, `not-in-digests` or `failed` in the JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    Signed,
    AlreadySigned,
    NotReproduced,
    NotInDigests,
    Failed,
}

pub fn run(ctx: &Context, args: SignArgs) -> Result<ExitCode> {
    crate::lookaside::signature_cap_setting()?;
    let signer = load_signer(&args)?;
    warn_if_expiring(signer.cert());
    let resolver = Resolver::from_settings(&ctx.settings, args.identity.as_deref());
    let targets = resolver.resolve_all(&args.images)?;
    let digest_paths = if args.digests.is_empty() {
        vec![ctx.settings.digests.clone()]
    } else {
        args.digests.clone()
    };
    let release = load_release(ctx, &args, &digest_paths)?;
    let root = args
        .signatures
        .clone()
        .unwrap_or_else(|| ctx.settings.signatures.clone());
    let store = FileLookaside::new(root);
    let progress = super::progress::for_items(ctx.json, targets.len());
    let task = Task::images(&progress, "sign", "sign", Some(targets.len() as u64));
    let fingerprint = signer.fingerprint();
    let mut lines = Vec::new();
    let mut tally = Tally::default();
    for target in &targets {
        task.describe(&target.name);
        let (status, file, error) = sign_one(
            signer.as_ref(),
            &store,
            release.as_ref(),
            target,
            &mut tally,
        );
        let line = Line {
            image: target.name.clone(),
            platform: target.platform.clone(),
            digest: target.digest.to_string(),
            identity: target.identity.clone(),
            status,
            file,
            error,
            unreleased: args.unreleased && status == Status::Signed,
        };
        if !ctx.json {
            let text = human(&line, &fingerprint.to_hex());
            progress.suspend(|| match line.error {
                Some(_) => eprintln!("{text}"),
                None => println!("{text}"),
            });
        }
        task.advance(1);
        lines.push(line);
    }
    drop(task);
    if ctx.json {
        super::print_json(&lines)?;
    }
    Ok(tally.report(targets.len(), &digest_paths))
}

/// `--key FILE` (sequoia) or `--gpg FPR` (gpg-agent, smartcards).
fn load_signer(args: &SignArgs) -> Result<Box<dyn PayloadSigner>> {
    Ok(match (&args.key, &args.gpg) {
        (Some(path), _) => Box::new(KeyFileSigner::from_file(path)?),
        (None, Some(fpr)) => Box::new(GpgSigner::new(fpr)?),
        (None, None) => anyhow::bail!("pass --key FILE or --gpg FINGERPRINT"),
    })
}

/// The committed digests the gate checks against; none with `--unreleased`
/// (said on stderr: such signatures attest no reproduced release).
fn load_release(
    ctx: &Context,
    args: &SignArgs,
    digest_paths: &[PathBuf],
) -> Result<Option<ReleaseDigests>> {
    if args.unreleased {
        if !ctx.json {
            eprintln!(
                "stagex: --unreleased: signing out/ as built, NOT checked against the committed digests; these signatures do not attest a reproduced release"
            );
        }
        return Ok(None);
    }
    Ok(Some(ReleaseDigests::load(digest_paths).map_err(|e| {
        e.context("reproduce before sign needs the committed digests (run `stagex digests` on the release commit), or pass --unreleased")
    })?))
}

/// How many images were refused, and why, or failed.
#[derive(Default)]
struct Tally {
    failed: usize,
    not_reproduced: usize,
    not_in_digests: usize,
}

impl Tally {
    /// The closing errors on stderr, and the exit code.
    fn report(&self, total: usize, digest_paths: &[PathBuf]) -> ExitCode {
        if self.not_reproduced > 0 {
            eprintln!(
                "stagex: error: {} of {total} image(s) not signed: their out/ digest is not the committed one (rebuild to reproduce it, or pass --unreleased to sign what was built)",
                self.not_reproduced
            );
        }
        if self.not_in_digests > 0 {
            let shown: Vec<String> = digest_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            eprintln!(
                "stagex: error: {} of {total} image(s) not signed: not listed in the digests files ({}); run `stagex digests` on the release commit, pass --digests FILE|DIR naming the release's digests, or --unreleased to sign what was built",
                self.not_in_digests,
                shown.join(", ")
            );
        }
        if self.failed > 0 {
            eprintln!(
                "stagex: error: {} of {total} image(s) could not be signed",
                self.failed
            );
        }
        if self.failed + self.not_reproduced + self.not_in_digests > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Signs `target` unless the gate refuses it; counts the outcome.
fn sign_one(
    signer: &dyn PayloadSigner,
    store: &FileLookaside,
    release: Option<&ReleaseDigests>,
    target: &ImageTarget,
    tally: &mut Tally,
) -> (Status, Option<String>, Option<String>) {
    if let Some(gate) = refusal(release, target) {
        // Counted by the gate's answer, which the compiler makes
        // exhaustive: a new kind of refusal cannot be miscounted.
        match gate {
            Gate::Mismatch { .. } => tally.not_reproduced += 1,
            Gate::Missing => tally.not_in_digests += 1,
            Gate::Reproduced => {}
        }
        let (status, why) = refused(&gate, target);
        return (status, None, Some(why));
    }
    match sign_target(signer, store, target) {
        Ok(SignOutcome::Signed { file }) => {
            (Status::Signed, Some(file.display().to_string()), None)
        }
        Ok(SignOutcome::AlreadySigned { file }) => (Status::AlreadySigned, Some(file), None),
        Err(e) => {
            tally.failed += 1;
            (Status::Failed, None, Some(format!("{e:#}")))
        }
    }
}

/// The reproduce-before-sign gate's answer for `target` when it refuses
/// to sign it (anything but `Gate::Reproduced`).
fn refusal(release: Option<&ReleaseDigests>, target: &ImageTarget) -> Option<Gate> {
    release
        .map(|release| release.gate(target))
        .filter(|gate| !matches!(gate, Gate::Reproduced))
}

/// The status and the reason shown for the gate's answer `gate` (only
/// refusals reach here; `Reproduced` is the signed status, no reason).
fn refused(gate: &Gate, target: &ImageTarget) -> (Status, String) {
    match gate {
        Gate::Reproduced => (Status::Signed, String::new()),
        Gate::Mismatch { committed, source } => (
            Status::NotReproduced,
            format!(
                "out/ has {}, the release committed {committed} ({source}); why: stagex diff NS|DIR/{name}@{committed} out/{name}@{}",
                target.digest,
                target.digest,
                name = target.name
            ),
        ),
        Gate::Missing => (
            Status::NotInDigests,
            "not listed in the committed digests".to_string(),
        ),
    }
}

fn human(line: &Line, fingerprint: &str) -> String {
    let platform = line
        .platform
        .as_deref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    match line.status {
        Status::Signed => format!(
            "signed          {}{platform} {} as {} -> {}{}",
            line.image,
            line.digest,
            line.identity,
            line.file.as_deref().unwrap_or(""),
            if line.unreleased {
                " (unreleased: not checked against digests/)"
            } else {
                ""
            }
        ),
        Status::NotReproduced | Status::NotInDigests => format!(
            "NOT SIGNED      {}{platform} {}: {}",
            line.image,
            line.digest,
            line.error.as_deref().unwrap_or("")
        ),
        Status::AlreadySigned => format!(
            "already signed  {}{platform} {} by {fingerprint} ({})",
            line.image,
            line.digest,
            line.file.as_deref().unwrap_or("")
        ),
        Status::Failed => format!(
            "failed          {}{platform} {}: {}",
            line.image,
            line.digest,
            line.error.as_deref().unwrap_or("")
        ),
    }
}

/// Days before its expiry from which `sign` warns that the signing key
/// should be extended (signatures made after it are not counted).
const EXPIRY_WARNING_DAYS: u64 = 30;

/// A warning on stderr when the signing key expires within
/// `EXPIRY_WARNING_DAYS`.
fn warn_if_expiring(cert: &sequoia_openpgp::Cert) {
    use crate::keys::check::{judge, Finding};
    let now = std::time::SystemTime::now();
    let summary = crate::keys::describe::summarize(cert, now);
    let window = std::time::Duration::from_secs(EXPIRY_WARNING_DAYS * 86_400);
    for finding in judge(&summary, now, window) {
        if let Finding::ExpiresSoon {
            fingerprint,
            on,
            days,
        } = finding
        {
            eprintln!(
                "stagex: warning: the signing key {fingerprint} expires on {on} (in {days} days): extend it (gpg --quick-set-expire {fingerprint} 2y) and publish the new certificate, or signatures made after that date will not count"
            );
        }
    }
}
