//! `stagex pallet <expr>`: compose package images into one image and
//! write it to `--output`. Arguments and reporting only; the work is in
//! `crate::pallet::pipeline` (compose, write) and `crate::pallet::inputs`
//! (the quorum gate).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::trust::{Trust, TrustArgs};
use super::Context;
use crate::image::WriteReport;
use crate::oci::descriptor::Platform;
use crate::output::Destination;
use crate::pallet::definition::Catalog;
use crate::pallet::inputs::{self, InputTrust, Verification};
use crate::pallet::pipeline::{self, Composed, Request};
use crate::pallet::resolve::Source;
use crate::store::Store;

/// Compose pallets and package images (`rust+clang`, `rust+core-jq:1.7`) into one image.
#[derive(Debug, Args)]
pub struct PalletArgs {
    /// `item('+'item)*`; item = a pallet (rust, pallet-rust) or a package image
    /// (core-jq), optionally `:tag` or `@sha256:<hex>`.
    pub expression: String,
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
        false => inputs::gate_keyring(&keys, args.trust.asked())?,
    };
    let Some(keyring) = keyring else {
        return Ok(inputs::not_verified(args.no_verify, &keys));
    };
    let Trust {
        keys,
        keyring,
        threshold,
        lookaside,
        options,
    } = args.trust.with_keyring(&ctx.settings, keys, keyring)?;
    let trust = InputTrust {
        keys,
        keyring,
        threshold,
        lookaside,
        options,
        resolver: args.trust.resolver(&ctx.settings),
    };
    inputs::verify_inputs(&trust, &composed.pinned)
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    composed: &'a Composed,
    digest: String,
    verification: Verification,
    output: Option<String>,
    /// What a push to a registry did (uploads, mounts, blobs already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<WriteReport>,
    /// What writing a file destination did.
    #[serde(skip_serializing_if = "Option::is_none")]
    written: Option<WriteReport>,
    elapsed_ms: u128,
}

pub fn run(ctx: &Context, args: PalletArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let catalog = Catalog::load_with_tree(&ctx.settings.pallets, &ctx.settings.packages)?;
    let warnings = super::progress::for_command(ctx.json);
    super::lint::report_unknown(&catalog.unknown_fields, false, &*warnings)?;
    let source_text = args
        .source
        .clone()
        .unwrap_or_else(|| ctx.settings.source.clone());
    let source = Source::parse(&source_text)?;
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
    let request = Request {
        expression: args.expression.clone(),
        source,
        platforms: platforms.clone(),
        strict: args.strict,
        flatten: args.flatten,
        allow_special_files: args.allow_special_files,
    };
    let composed = pipeline::run(&store, &catalog, &request, progress.as_ref())?;
    let verification = verify_inputs(ctx, &args, &composed)?;
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
            .filter(|l| l.origin == "reused")
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
