//! `stagex pallet <expr>`: compose package images into one image and
//! write it to `--output`. Arguments and reporting only; the work is in
//! `crate::pallet::pipeline` (compose, write) and `crate::pallet::input_gate`
//! (the quorum gate).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::trust::TrustArgs;
use super::Context;
use crate::image::output::Destination;
use crate::oci::descriptor::Platform;
use crate::oci::WriteReport;
use crate::pallet::catalog::{self, Choice, Pinning, ReleaseCatalog};
use crate::pallet::catalog_report::{self, DryRun, Listing};
use crate::pallet::input_gate::{self, InputStatus, Verification};
use crate::pallet::pipeline::{self, Composed, Request};
use crate::pallet::resolve::ImageProvider;
use crate::store::Store;

/// Compose pallets and package images (`rust+clang`, `rust+core-jq:1.7`) into one image.
#[derive(Debug, Args)]
pub struct PalletArgs {
    /// `item('+'item)*`; item = a pallet (rust, pallet-rust) or a package image
    /// (core-jq), optionally `:tag` or `@sha256:<hex>`.
    #[arg(required_unless_present = "list")]
    pub expression: Option<String>,
    /// Take pallets and release digests from DIR: a StageX checkout or a
    /// catalog directory (catalog/<release>/). Default: the current StageX
    /// checkout, else `catalog` in stagex.toml, else the built-in catalog.
    #[arg(long, value_name = "DIR")]
    pub catalog: Option<PathBuf>,
    /// A built-in release (YYYY.MM.N) instead of the newest one.
    #[arg(long, value_name = "YYYY.MM.N")]
    pub release: Option<String>,
    /// Resolve package tags instead of the release's digests: the result
    /// is NOT pinned (it may differ from day to day).
    #[arg(long)]
    pub latest: bool,
    /// List the catalog's pallets with their packages, and where it came from.
    #[arg(long, conflicts_with_all = ["expression", "dry_run", "output", "flatten"])]
    pub list: bool,
    /// Print the resolved, pinned package list and the conflicts the
    /// catalog shows, without pulling anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Where package images come from: a registry namespace
    /// (127.0.0.1:5000/stagex) or a directory of OCI layouts (out/).
    /// Default: `source` in stagex.toml.
    #[arg(long)]
    pub source: Option<String>,
    /// oci:DIR[:TAG] | oci-archive:FILE[:TAG] | docker-archive:FILE[:NAME:TAG] | docker://HOST/REPO:TAG.
    /// Without it the image stays in the store and its digest is printed.
    #[arg(long)]
    pub output: Option<String>,
    /// One layer holding the merged tree instead of the package layers.
    #[arg(long)]
    pub flatten: bool,
    /// Platform(s) to compose (repeat or comma-separate); several make an index.
    /// Default: the host's.
    #[arg(long = "platform", value_delimiter = ',')]
    pub platforms: Vec<String>,
    /// Any conflict between packages is an error.
    #[arg(long)]
    pub strict: bool,
    /// Compose package layers holding device nodes or fifos (refused by default).
    #[arg(long)]
    pub allow_special_files: bool,
    /// The local store (default: $STAGEX_STORE, else ~/.cache/stagex/store).
    #[arg(long, env = "STAGEX_STORE")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Compose without checking the inputs' signatures.
    #[arg(long, conflicts_with_all = ["keys", "threshold", "lookaside"])]
    pub no_verify: bool,
}

/// Gathers the trust flags (over stagex.toml) and runs the library's
/// quorum gate on the pinned inputs.
fn verify_inputs(ctx: &Context, args: &PalletArgs, composed: &Composed) -> Result<Verification> {
    let keys = args.trust.keys_dir(&ctx.settings);
    let keyring = match args.no_verify {
        true => None,
        false => input_gate::gate_keyring(&keys, args.trust.asked())?,
    };
    let Some(keyring) = keyring else {
        return Ok(input_gate::not_verified(args.no_verify, &keys));
    };
    let trust = args.trust.with_keyring(&ctx.settings, keys, keyring)?;
    let namespace = args.trust.resolver(&ctx.settings).namespace;
    Ok(input_gate::verify_inputs(
        &trust,
        namespace,
        &composed.pinned,
    )?)
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    composed: &'a Composed,
    digest: String,
    verification: Verification,
    /// The keys directory, when it held no keys (the gate did not run).
    #[serde(skip)]
    missing_keys: Option<PathBuf>,
    output: Option<String>,
    /// What a push to a registry did (uploads, mounts, blobs already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<WriteReport>,
    /// What writing a file destination did.
    #[serde(skip_serializing_if = "Option::is_none")]
    written: Option<WriteReport>,
    elapsed_ms: u128,
}

/// The catalog the flags and stagex.toml choose.
fn choose_catalog(ctx: &Context, args: &PalletArgs) -> Result<ReleaseCatalog> {
    Ok(catalog::choose(&Choice {
        catalog_flag: args.catalog.clone(),
        release: args.release.clone(),
        latest: args.latest,
        checkout_pallets: ctx.settings.pallets.clone(),
        checkout_packages: ctx.settings.packages.clone(),
        settings_catalog: ctx.settings.catalog.clone(),
    })?)
}

pub fn run(ctx: &Context, args: PalletArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let catalog = choose_catalog(ctx, &args)?;
    let warnings = super::progress::for_command(ctx.json);
    super::lint::report_unknown(&catalog.definitions.unknown_fields, false, &*warnings)?;
    if args.list {
        return list(ctx, &catalog);
    }
    let expression = args.expression.clone().unwrap_or_default();
    let source_text = args
        .source
        .clone()
        .unwrap_or_else(|| ctx.settings.source.clone());
    let source = ImageProvider::parse(&source_text)?;
    if args.dry_run {
        return dry_run(ctx, &catalog, &expression, &source);
    }
    let platforms = if args.platforms.is_empty() {
        vec![Platform::host()]
    } else {
        args.platforms
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<Platform>>>()?
    };
    let destination = args.output.as_deref().map(Destination::parse).transpose()?;
    let store = match &args.store {
        Some(dir) => Store::open(dir)?,
        None => Store::open_default()?,
    };
    let progress = super::progress::for_command(ctx.json);
    if catalog.pinning == Pinning::Latest {
        crate::progress::warn(progress.as_ref(), NOT_PINNED);
    }
    let request = Request {
        expression,
        source,
        platforms: platforms.clone(),
        strict: args.strict,
        flatten: args.flatten,
        allow_special_files: args.allow_special_files,
    };
    let composed = pipeline::run(&store, &catalog, &request, progress.as_ref())?;
    let verification = verify_inputs(ctx, &args, &composed)?;
    let missing_keys = match &verification.status {
        InputStatus::SkippedNoKeys(keys) => Some(keys.clone()),
        _ => None,
    };
    let written = destination
        .as_ref()
        .map(|d| pipeline::write_output(&store, &composed, d, &platforms, progress.as_ref()))
        .transpose()?;
    let is_push = matches!(destination, Some(Destination::Registry { .. }));
    let (push, written) = match is_push {
        true => (written, None),
        false => (None, written),
    };
    let report = Report {
        composed: &composed,
        digest: composed.root.digest.to_string(),
        verification,
        missing_keys,
        output: destination.as_ref().map(|d| d.to_string()),
        push,
        written,
        elapsed_ms: started.elapsed().as_millis(),
    };
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print_human(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_human(report: &Report<'_>) {
    let composed = report.composed;
    for pin in &composed.pinned {
        println!(
            "pinned   {:<28} {} {}  ({})",
            pin.reference, pin.platform, pin.manifest, pin.source
        );
    }
    for platform in &composed.platforms {
        for c in &platform.conflicts {
            println!(
                "conflict {} {:?}: {} vs {} ({})",
                c.path, c.kind, c.packages[0], c.packages[1], c.detail
            );
        }
        let reused = platform
            .layers
            .iter()
            .filter(|l| l.origin == crate::pallet::pipeline::LayerOrigin::Reused)
            .count();
        println!(
            "image    {} {} ({} layers: {} reused, {} built)",
            platform.platform,
            platform.manifest.digest,
            platform.layers.len(),
            reused,
            platform.layers.len() - reused
        );
    }
    if composed.platforms.len() > 1 {
        println!("index    {}", composed.root.digest);
    }
    println!("inputs   {}", report.verification.status);
    if let Some(keys) = &report.missing_keys {
        println!("         {}", keys_hint(keys));
    }
    if report.composed.catalog.pinning != Pinning::Release {
        println!("pinned   NO: packages were resolved by tag");
    }
    if let Some(output) = &report.output {
        println!("wrote    {output}");
    }
    if let Some(push) = &report.push {
        println!(
            "pushed   {}: {} blobs uploaded ({} bytes), {} mounted ({} bytes), {} already there",
            push.reference,
            push.blobs_uploaded,
            push.bytes_uploaded,
            push.blobs_mounted,
            push.bytes_mounted,
            push.blobs_existing
        );
    }
}

const NOT_PINNED: &str = "--latest: packages are resolved by tag, so this image is NOT pinned (the same command may give another image tomorrow); drop --latest to use the release's digests";

/// How to bring keys when none are there (the gate then did not run).
fn keys_hint(keys: &std::path::Path) -> String {
    format!(
        "to verify the inputs, bring the StageX maintainers' keys: for each fingerprint in StageX's MAINTAINERS, `gpg --recv-keys FPR && gpg --export FPR > {}/NAME.asc` (or pass --keys DIR)",
        keys.display()
    )
}

/// `stagex pallet --list`.
fn list(ctx: &Context, catalog: &ReleaseCatalog) -> Result<ExitCode> {
    let listing = catalog_report::listing(catalog)?;
    if ctx.json {
        super::print_json(&listing)?;
    } else {
        print_listing(catalog, &listing);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_listing(catalog: &ReleaseCatalog, listing: &Listing) {
    println!(
        "catalog  {}: {} pallets, {} package digests",
        catalog.describe(),
        listing.pallets.len(),
        listing.digests
    );
    if !listing.undigested.is_empty() {
        println!(
            "unpinned {} pallets name packages without a release digest (compose them with --latest)",
            listing.undigested.len()
        );
    }
    for pallet in &listing.pallets {
        println!(
            "pallet   {:<22} {:<29} base {:<27} {}",
            pallet.name,
            pallet.image,
            pallet.base,
            pallet.packages.join(" ")
        );
    }
}

/// `stagex pallet EXPR --dry-run`: nothing is read from the source.
fn dry_run(
    ctx: &Context,
    catalog: &ReleaseCatalog,
    expression: &str,
    source: &ImageProvider,
) -> Result<ExitCode> {
    let plan = pipeline::plan(catalog, expression)?;
    let report = catalog_report::dry_run(catalog, expression, &plan, &|name| source.locate(name))?;
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print_dry_run(catalog, &report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_dry_run(catalog: &ReleaseCatalog, report: &DryRun) {
    println!("catalog  {}", catalog.describe());
    for package in &report.packages {
        println!(
            "package  {:<28} {:<10} {}",
            package.name, package.pin, package.reference
        );
    }
    for copy in &report.copies {
        println!("copy     {copy}");
    }
    for pallet in &report.links {
        println!("links    of pallet {pallet}");
    }
    for conflict in &report.conflicts {
        println!("conflict {}: {}", conflict.kind, conflict.detail);
    }
    if !report.pinned {
        println!("pinned   NO: some packages resolve by tag");
    }
}
