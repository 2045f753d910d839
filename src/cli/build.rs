//! `stagex build [<stage>-<name>...]`: build package images into
//! `out/<stage>-<name>/` (dependencies first; everything when no name),
//! `-j N` at once, `--deps-from NS` taking dependencies from a registry;
//! prints the final report (built, up to date, failed with log, skipped).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use super::fetch::packages_dir;
use super::progress;
use super::Context;
use crate::build::package_build::{BuildOptions, BuilderChoice};
use crate::build::preseed;
use crate::build::scheduler::{self, DigestCheck, Outcome, ScheduleOptions, ScheduleReport};
use crate::layer::LayerOptions;
use crate::oci::Platform;
use crate::package::PackageTree;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Packages to build (`core-busybox`); every package when none is given.
    pub packages: Vec<String>,
    /// Backend for Containerfile packages (native packages never need one).
    #[arg(long, value_enum, default_value_t = BuilderChoice::Auto)]
    pub builder: BuilderChoice,
    #[command(flatten)]
    pub inputs: BuildInputArgs,
    /// Rebuild dependencies even when they are already in the output directory.
    #[arg(long)]
    pub rebuild_deps: bool,
    /// Print the plan (build order, targets, dependencies) with each
    /// package's state: to build, up to date, or in out/ and not rebuilt;
    /// build nothing. With --json, `{"plan": [...]}` with build args and a
    /// `build` field (true: it would be built).
    #[arg(long)]
    pub dry_run: bool,
    /// Builds to run at once (a package starts when its dependencies are
    /// built); --deps-from pulls at least 4 images at once.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// After a failure, keep building what does not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// Take the dependencies of the named packages from this registry
    /// namespace (HOST[:PORT]/NAMESPACE), pinned to the digests in the
    /// *.txt files of the `digests` directory (stagex.toml; default
    /// digests/), instead of building them.
    #[arg(long, value_name = "NS")]
    pub deps_from: Option<String>,
    /// The release digests --deps-from pins to and built packages are
    /// proved against (default: `digests` in stagex.toml, else <root>/digests).
    #[arg(long, value_name = "DIR")]
    pub digests_dir: Option<PathBuf>,
    /// Refuse package.toml fields this version does not know (without it
    /// they are warnings and ignored; see `stagex lint`).
    #[arg(long)]
    pub strict: bool,
    /// Do not compare each `bootstrap-*` package, as soon as it is built,
    /// with its digest in <digests>/bootstrap.txt (a mismatch stops what
    /// depends on it).
    #[arg(long)]
    pub no_bootstrap_check: bool,
    /// Compare EVERY built package the release digests list, as soon as it
    /// is built, with its committed digest: a mismatch stops what depends
    /// on it.
    #[arg(long)]
    pub check_digests: bool,
}

/// What a package build reads and where its images live: the flags
/// `build` and `reproduce` share, with one meaning and one default each.
#[derive(Debug, Args)]
pub struct BuildInputArgs {
    /// Platforms, comma-separated (`linux/amd64,linux/arm64`), for packages
    /// whose package.toml sets no `platforms` (default: the host).
    #[arg(long, value_delimiter = ',')]
    pub platform: Vec<Platform>,
    /// The packages tree (default: `packages` in stagex.toml, else <root>/packages).
    #[arg(long = "packages", value_name = "DIR")]
    pub packages_dir: Option<PathBuf>,
    /// Where sources were fetched (default: <root>/fetch).
    #[arg(long, value_name = "DIR")]
    pub fetch_dir: Option<PathBuf>,
    /// The output directory: `build` writes packages there, and both
    /// `build` and `reproduce` take dependencies already built from it
    /// (default: `out` in stagex.toml, else <root>/out).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl BuildInputArgs {
    /// `--packages`, else the setting.
    pub fn packages_root(&self, ctx: &Context) -> PathBuf {
        packages_dir(ctx, &self.packages_dir)
    }

    /// `--fetch-dir`, else `<root>/fetch`.
    pub fn fetch_root(&self, ctx: &Context) -> PathBuf {
        self.fetch_dir
            .clone()
            .unwrap_or_else(|| ctx.root.join("fetch"))
    }

    /// `--out`, else the setting.
    pub fn out_root(&self, ctx: &Context) -> PathBuf {
        self.out.clone().unwrap_or_else(|| ctx.settings.out.clone())
    }
}

pub fn run(ctx: &Context, args: BuildArgs) -> Result<ExitCode> {
    let tree = PackageTree::load(&args.inputs.packages_root(ctx))?;
    let progress = progress::for_command(ctx.json);
    super::lint::report_unknown(&tree.unknown_fields, args.strict, &*progress)?;
    let options = BuildOptions {
        out_root: args.inputs.out_root(ctx),
        fetch_root: args.inputs.fetch_root(ctx),
        platforms: args.inputs.platform.clone(),
        builder: args.builder,
        layer: LayerOptions::from_env()?,
        rebuild_deps: args.rebuild_deps,
        family_cache: None,
        root: ctx.root.clone(),
    };
    if args.dry_run {
        return dry_run(
            ctx,
            &tree,
            &args.packages,
            &options,
            args.deps_from.is_some(),
        );
    }
    if let Some(ns) = &args.deps_from {
        deps_from(ctx, &tree, &args, ns, &options, &*progress)?;
    }
    let schedule = ScheduleOptions {
        jobs: args.jobs,
        keep_going: args.keep_going,
        only_named: args.deps_from.is_some(),
        check: digest_check(ctx, &args)?,
    };
    let report = scheduler::run(&tree, &args.packages, &options, &schedule, &*progress)?;
    for p in &report.packages {
        match &p.outcome {
            Outcome::Failed { error, .. } => eprintln!(
                "stagex: building {} failed (log: {}): {error}",
                p.id,
                p.log.display()
            ),
            Outcome::Mismatched { mismatch: m, .. } => eprintln!(
                "stagex: {} built as {} but the committed digest is {}: what depends on it was not built; run `{}`",
                p.id,
                m.actual,
                m.expected,
                scheduler::diff_hint(&p.id, &m.expected)
            ),
            _ => {}
        }
    }
    if ctx.json {
        println!("{}", serde_json::to_string(&report_json(&report))?);
    } else {
        print_report(&report);
    }
    Ok(if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Which built packages are proved against the committed digests:
/// `--check-digests`, every one the release lists (the digests must be
/// readable); else, unless `--no-bootstrap-check`, the `bootstrap-*` ones
/// `<digests>/bootstrap.txt` lists, when that file exists.
fn digest_check(ctx: &Context, args: &BuildArgs) -> Result<Option<DigestCheck>> {
    let dir = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.settings.digests.clone());
    let committed = if args.check_digests {
        crate::release::digests::read_release(&dir)?
    } else if args.no_bootstrap_check || !dir.join("bootstrap.txt").is_file() {
        return Ok(None);
    } else {
        crate::release::digests::read_release(&dir.join("bootstrap.txt"))?
    };
    Ok(Some(DigestCheck {
        committed,
        all: args.check_digests,
        platform: args
            .inputs
            .platform
            .first()
            .cloned()
            .unwrap_or_else(Platform::host),
    }))
}

/// `--deps-from`: the dependencies of the named packages (not named
/// themselves) pulled into out/ from the registry, pinned to the release.
/// They are pulled `-j` at a time but at least `preseed::DEFAULT_JOBS`
/// (`-j` is about builds and defaults to 1), pinned to `--digests-dir`
/// (default: the `digests` setting).
fn deps_from(
    ctx: &Context,
    tree: &PackageTree,
    args: &BuildArgs,
    ns: &str,
    options: &BuildOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<()> {
    let names = &args.packages;
    if names.is_empty() {
        bail!("--deps-from needs the packages to build (their dependencies come from {ns})");
    }
    let digests_dir = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.settings.digests.clone());
    let release = crate::release::digests::read_release(&digests_dir)?;
    let source = crate::pallet::resolve::ImageProvider::parse(ns)?.open()?;
    let platform = options
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(Platform::host);
    let preseed_options = preseed::PreseedOptions {
        out_root: options.out_root.clone(),
        platform,
        jobs: args.jobs.max(preseed::DEFAULT_JOBS),
    };
    let store = crate::store::Store::open_default()?;
    let entries = preseed::deps_from(
        tree,
        names,
        &release,
        &*source,
        &store,
        &preseed_options,
        progress,
    )?;
    if !ctx.json {
        for e in entries {
            let how = match e.status {
                preseed::PreseedStatus::Pulled => "pulled",
                _ => "present",
            };
            eprintln!("dependency {} {} from {ns} ({how})", e.id, e.digest);
        }
    }
    Ok(())
}

fn report_json(report: &ScheduleReport) -> serde_json::Value {
    let mut built = Vec::new();
    let mut up_to_date = Vec::new();
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    let mut not_started = Vec::new();
    let mut mismatched = Vec::new();
    for p in &report.packages {
        let log = p.log.display().to_string();
        match &p.outcome {
            Outcome::Mismatched {
                mismatch: m,
                started,
                finished,
                ..
            } => mismatched.push(serde_json::json!({
                "package": p.id, "expected": m.expected.to_string(),
                "actual": m.actual.to_string(), "log": log,
                "hint": scheduler::diff_hint(&p.id, &m.expected),
                "started": started, "finished": finished,
            })),
            Outcome::Built {
                report: r,
                started,
                finished,
            } => built.push(serde_json::json!({
                "package": r.id,
                "backend": r.backend,
                "out": r.output.dir.display().to_string(),
                "index": r.output.index.digest.to_string(),
                "manifests": r.output.manifests.iter().map(|m| serde_json::json!({
                    "digest": m.digest.to_string(),
                    "platform": m.platform.as_ref().map(|p| p.to_string()),
                })).collect::<Vec<_>>(),
                "log": log,
                "started": started,
                "finished": finished,
            })),
            Outcome::UpToDate => up_to_date.push(serde_json::json!(p.id)),
            Outcome::Failed {
                error,
                started,
                finished,
            } => failed.push(serde_json::json!({
                "package": p.id, "error": error, "log": log,
                "started": started, "finished": finished,
            })),
            Outcome::Skipped { because } => {
                skipped.push(serde_json::json!({ "package": p.id, "because": because }))
            }
            Outcome::NotStarted => not_started.push(serde_json::json!(p.id)),
        }
    }
    serde_json::json!({
        "built": built,
        "up_to_date": up_to_date,
        "failed": failed,
        "skipped": skipped,
        "not_started": not_started,
        "mismatched": mismatched,
    })
}

fn print_report(report: &ScheduleReport) {
    let mut counts = [0usize; 6];
    let mismatched: std::collections::BTreeSet<&str> = report
        .packages
        .iter()
        .filter(|p| matches!(p.outcome, Outcome::Mismatched { .. }))
        .map(|p| p.id.as_str())
        .collect();
    for p in &report.packages {
        match &p.outcome {
            Outcome::Mismatched { mismatch: m, .. } => {
                counts[5] += 1;
                println!(
                    "MISMATCH   {} built {} but the committed digest is {} (log: {}); run `{}`",
                    p.id,
                    m.actual,
                    m.expected,
                    p.log.display(),
                    scheduler::diff_hint(&p.id, &m.expected)
                );
            }
            Outcome::Built { report: r, .. } => {
                counts[0] += 1;
                for m in &r.output.manifests {
                    let platform = m.platform.as_ref().map(|p| p.to_string());
                    println!(
                        "built      {} {} {} ({}) -> {}",
                        r.id,
                        platform.unwrap_or_default(),
                        m.digest,
                        r.backend,
                        r.output.dir.display()
                    );
                }
            }
            Outcome::UpToDate => counts[1] += 1,
            Outcome::Failed { error, .. } => {
                counts[2] += 1;
                let first = error.lines().next().unwrap_or_default();
                println!("FAILED     {} (log: {}): {first}", p.id, p.log.display());
            }
            Outcome::Skipped { because } => {
                counts[3] += 1;
                let (differ, failed): (Vec<&str>, Vec<&str>) = because
                    .iter()
                    .map(String::as_str)
                    .partition(|b| mismatched.contains(b));
                let mut why = Vec::new();
                if !failed.is_empty() {
                    why.push(format!("needs failed {}", failed.join(", ")));
                }
                if !differ.is_empty() {
                    why.push(format!(
                        "needs {}, not the committed digest",
                        differ.join(", ")
                    ));
                }
                println!("skipped    {} ({})", p.id, why.join("; "));
            }
            Outcome::NotStarted => {
                counts[4] += 1;
                println!(
                    "not started {} (stopped after the first failure; --keep-going builds the rest)",
                    p.id
                );
            }
        }
    }
    let differ = match counts[5] {
        0 => String::new(),
        n => format!(", {n} not the committed digest"),
    };
    println!(
        "{} built, {} up to date, {} failed, {} skipped, {} not started{differ}",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
}

/// `--dry-run`: the plan `stagex build` would follow (the scheduler's own),
/// nothing built.
fn dry_run(
    ctx: &Context,
    tree: &PackageTree,
    names: &[String],
    options: &BuildOptions,
    only_named: bool,
) -> Result<ExitCode> {
    let scheduler::RunPlan { entries, skip } =
        scheduler::plan_run(tree, names, options, only_named)?;
    if ctx.json {
        let plan = entries
            .iter()
            .zip(&skip)
            .map(|(e, skip)| {
                let mut value = serde_json::to_value(e)?;
                value["build"] = serde_json::Value::Bool(!skip);
                Ok(value)
            })
            .collect::<Result<Vec<_>>>()?;
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "plan": plan }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (e, skip) in entries.iter().zip(&skip) {
        let state = match (skip, e.up_to_date) {
            (false, _) => "build",
            (true, true) => match &e.preseeded_from {
                Some(ns) => &format!("up to date (preseeded from {ns})"),
                None => "up to date",
            },
            (true, false) => "in out/, not rebuilt (not asked for; --rebuild-deps rebuilds it)",
        };
        let target = e
            .target
            .as_deref()
            .map(|t| format!(" --target {t}"))
            .unwrap_or_default();
        println!(
            "{} {} [{}]{target} {state}{}",
            e.name,
            e.version,
            e.platforms.join(","),
            if e.deps.is_empty() {
                String::new()
            } else {
                format!(" (after {})", e.deps.join(" "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
