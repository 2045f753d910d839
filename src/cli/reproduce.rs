//! Owns: `stagex reproduce PKG...`: its flags, signing what reproduced and
//! matches the committed digests (`--sign-if-reproduced`), the human and
//! JSON report, keeping or removing the work directory, the exit code.
//! The builds and verdicts are `build::reproduce`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::build::BuildInputArgs;
use super::Context;
use crate::build::package_build::{BuildOptions, BuilderChoice};
use crate::build::reproduce::{self, ReproduceOptions, ReproduceReport};
use crate::build::reproduce_vary::VarySet;
use crate::layer::LayerOptions;
use crate::package::PackageTree;

/// Build each package twice, in two fresh output roots (never out/), once
/// normally and once with the environment varied, and compare digests.
/// Dependencies are hard-linked from out/ into each root (those missing
/// from out/ are built in each root too). Roots are kept (and named) when
/// a package does not reproduce, so that the printed `stagex diff`
/// command can compare them. Exit 1 if any package did not reproduce.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Packages to reproduce (`core-busybox`).
    #[arg(required = true)]
    pub packages: Vec<String>,
    /// Builders, comma-separated (native, buildah, podman, docker, auto):
    /// each builds twice and every result must be the same digest.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    pub builders: Vec<BuilderChoice>,
    /// Variations of the second build, comma-separated: all on by default
    /// (time, tz, umask, locale, hostname, build_path, cpus, environment);
    /// -NAME turns one off (`--vary -time,-umask`), `none` all.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub vary: Vec<String>,
    #[command(flatten)]
    pub inputs: BuildInputArgs,
    /// The committed digests (default: `digests` in stagex.toml).
    #[arg(long, value_name = "DIR")]
    pub digests_dir: Option<PathBuf>,
    /// The work directory for the build roots (default: a new temp dir).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Keep the build roots even when everything reproduced.
    #[arg(long)]
    pub keep: bool,
    /// Sign (as `stagex sign`) each package that reproduced AND is the
    /// committed digest; nothing else.
    #[arg(long)]
    pub sign_if_reproduced: bool,
    /// OpenPGP secret key file for --sign-if-reproduced.
    #[arg(long, conflicts_with = "gpg")]
    pub key: Option<PathBuf>,
    /// Sign through gpg's agent with this key.
    #[arg(long, value_name = "FINGERPRINT")]
    pub gpg: Option<String>,
    /// The signature tree to write into (default: `signatures` setting).
    #[arg(long, value_name = "DIR")]
    pub signatures: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: ReproduceArgs) -> Result<ExitCode> {
    if args.sign_if_reproduced && args.key.is_none() && args.gpg.is_none() {
        bail!("--sign-if-reproduced needs --key FILE or --gpg FINGERPRINT");
    }
    for &b in &args.builders {
        if !matches!(b, BuilderChoice::Native | BuilderChoice::Auto) {
            crate::build::containerfile::select_backend(b).with_context(|| {
                format!(
                    "--builders {}: that builder is not usable here; drop it from --builders",
                    reproduce::builder_name(b)
                )
            })?;
        }
    }
    let options = options(ctx, &args)?;
    let tree = PackageTree::load(&options.packages_dir)?;
    let build = BuildOptions {
        out_root: options.user_out.clone(),
        fetch_root: options.fetch_dir.clone(),
        platforms: args.inputs.platform.clone(),
        builder: args.builders[0],
        layer: LayerOptions::from_env()?,
        rebuild_deps: false,
        family_cache: None,
        root: ctx.root.clone(),
    };
    let deps = reproduce::dependencies(&tree, &args.packages, &build)?;
    // Named before any build starts: a hung or killed build's log can be read.
    for planned in reproduce::planned_builds(&options) {
        eprintln!(
            "stagex: reproduce: {} {} build logs to {}",
            reproduce::builder_name(planned.builder),
            planned.run(),
            planned.log().display()
        );
    }
    let report = reproduce::reproduce(&args.packages, &deps, &options)?;
    let signed = if args.sign_if_reproduced {
        sign(ctx, &args, &report, &options)?
    } else {
        Vec::new()
    };
    let keep = args.keep || !report.all_reproduced();
    if ctx.json {
        super::print_json(&serde_json::json!({
            "packages": report.packages, "variations": report.variations,
            "work": report.work, "kept": keep, "signed": signed,
        }))?;
    } else {
        print_human(&report, &signed, keep);
    }
    if !keep {
        report.remove_roots(&options)?;
    }
    Ok(if report.all_reproduced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn options(ctx: &Context, args: &ReproduceArgs) -> Result<ReproduceOptions> {
    let vary = VarySet::parse(&args.vary)?;
    // The builds run in other directories: every path must be absolute.
    let absolute =
        |p: PathBuf| std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()));
    let digests_dir = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.settings.digests.clone());
    let committed = if digests_dir.exists() {
        Some(crate::release::digests::read_release(&digests_dir)?)
    } else {
        None
    };
    let work = match &args.work {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("stagex-reproduce-")
            .tempdir()
            .context("creating the work directory")?
            .keep(),
    };
    Ok(ReproduceOptions {
        exe: std::env::current_exe().context("finding this program")?,
        root: absolute(ctx.root.clone())?,
        packages_dir: absolute(args.inputs.packages_root(ctx))?,
        fetch_dir: absolute(args.inputs.fetch_root(ctx))?,
        user_out: absolute(args.inputs.out_root(ctx))?,
        platforms: args.inputs.platform.clone(),
        builders: args.builders.iter().fold(Vec::new(), |mut all, b| {
            if !all.contains(b) {
                all.push(*b);
            }
            all
        }),
        vary,
        work: absolute(work)?,
        committed,
    })
}

/// Signs, from the first builder's control root, the packages that
/// reproduced and are the committed digest (the release gate of `stagex
/// sign` is asked again: it must agree).
fn sign(
    ctx: &Context,
    args: &ReproduceArgs,
    report: &ReproduceReport,
    options: &ReproduceOptions,
) -> Result<Vec<String>> {
    use crate::sign::release::{Gate, ReleaseDigests};
    use crate::sign::signer::{GpgSigner, KeyFileSigner, PayloadSigner};
    let ids: Vec<String> = report
        .packages
        .iter()
        .filter(|p| p.matches_committed)
        .map(|p| p.package.clone())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    crate::lookaside::signature_cap_setting()?;
    let signer: Box<dyn PayloadSigner> = match (&args.key, &args.gpg) {
        (Some(path), _) => Box::new(KeyFileSigner::from_file(path)?),
        (None, Some(fpr)) => Box::new(GpgSigner::new(fpr)?),
        (None, None) => bail!("--sign-if-reproduced needs --key FILE or --gpg FINGERPRINT"),
    };
    let out = report.control_out(options);
    let resolver = crate::sign::image::Resolver {
        out: &out,
        packages: &options.packages_dir,
        namespace: &ctx.settings.namespace,
    };
    let digests = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.settings.digests.clone());
    let release = ReleaseDigests::load(&[digests])?;
    let root = args
        .signatures
        .clone()
        .unwrap_or_else(|| ctx.settings.signatures.clone());
    let store = crate::lookaside::file::FileLookaside::new(root);
    let mut signed = Vec::new();
    for target in resolver.resolve_all(&ids)? {
        if !matches!(release.gate(&target), Gate::Reproduced) {
            continue;
        }
        crate::sign::apply::sign_target(signer.as_ref(), &store, &target)?;
        signed.push(format!("{} {}", target.name, target.digest));
    }
    Ok(signed)
}

fn print_human(report: &ReproduceReport, signed: &[String], kept: bool) {
    for (builder, all) in &report.variations {
        let applied: Vec<&str> = all
            .iter()
            .filter(|a| a.state == "applied")
            .map(|a| a.variation)
            .collect();
        println!("{builder}: varied {}", applied.join(", "));
        for a in all.iter().filter(|a| a.state != "applied") {
            println!("{builder}: {} {}: {}", a.variation, a.state, a.how);
        }
    }
    for p in &report.packages {
        let committed = match (&p.committed, p.matches_committed) {
            (None, _) => "not in digests/".to_string(),
            (Some(_), true) => "the committed digest".to_string(),
            (Some(c), false) => format!("committed digest is {c}"),
        };
        match p.verdict {
            "reproducible" => println!(
                "reproducible     {} {} ({committed})",
                p.package,
                p.digest.as_deref().unwrap_or_default()
            ),
            verdict => {
                println!("{:<16} {} ({committed})", verdict.to_uppercase(), p.package);
                for b in &p.builds {
                    let what = b.digest.as_deref().or(b.error.as_deref()).unwrap_or("");
                    println!("    {} {}: {what}  [{}]", b.builder, b.run, b.out.display());
                }
                for cause in &p.causes {
                    println!("    {}", crate::diff::render::cause_line(cause));
                }
                if let Some(cmd) = &p.diff_command {
                    println!("    all causes: run `{cmd}`");
                }
            }
        }
    }
    for s in signed {
        println!("signed           {s}");
    }
    if kept {
        println!(
            "build roots kept in {} (logs: build.log in each root)",
            report.work.display()
        );
    }
}
