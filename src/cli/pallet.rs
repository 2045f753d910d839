//! `stagex pallet <expr>`: compose package images into one image and
//! write it to `--output`. Arguments and reporting only; the work is in
//! `crate::pallet::pipeline`, `crate::output` and `crate::registry::push`.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use super::trust::{Trust, TrustArgs};
use super::Context;
use crate::oci::descriptor::Platform;
use crate::output::{self, Destination};
use crate::pallet::definition::Catalog;
use crate::pallet::pipeline::{self, Composed, Request};
use crate::pallet::resolve::Source;
use crate::registry::push::{parse_reference, push_image, PushReport};
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
    /// The local store (default: $STAGEX_STORE, else ~/.cache/stagex/store).
    #[arg(long, env = "STAGEX_STORE")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Compose without checking the inputs' signatures.
    #[arg(long, conflicts_with_all = ["keys", "threshold", "lookaside"])]
    pub no_verify: bool,
}

/// Whether and how the pinned inputs were verified.
#[derive(Serialize)]
struct Verification {
    /// `verified`, `skipped (--no-verify)`, or `skipped (no trusted keys in DIR)`.
    status: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<crate::sign::check::ImageReport>,
}

/// Checks every pinned input against the quorum. Verification runs unless
/// `--no-verify`; when no flag asks for it and the keys directory holds no
/// certificate, it is skipped and the report says so.
fn verify_inputs(ctx: &Context, args: &PalletArgs, composed: &Composed) -> Result<Verification> {
    use crate::sign::check::verify_images;
    use crate::sign::keyring::Keyring;
    if args.no_verify {
        return Ok(Verification {
            status: "skipped (--no-verify)".into(),
            images: vec![],
        });
    }
    let keys = args.trust.keys_dir(&ctx.settings);
    let keyring = match Keyring::load_dir(&keys) {
        Ok(k) if !k.is_empty() => k,
        Ok(_) | Err(_) if !args.trust.asked() => {
            return Ok(Verification {
                status: format!("skipped (no trusted keys in {})", keys.display()),
                images: vec![],
            })
        }
        Ok(_) => bail!(
            "{}: no trusted certificates; add maintainer keys or pass --no-verify",
            keys.display()
        ),
        Err(e) => return Err(e),
    };
    let Trust {
        keys,
        keyring,
        threshold,
        lookaside,
        options,
    } = args.trust.with_keyring(&ctx.settings, keys, keyring)?;
    let resolver = args.trust.resolver(&ctx.settings);
    let mut seen = std::collections::BTreeSet::new();
    let mut targets = Vec::new();
    for pin in &composed.pinned {
        if seen.insert(pin.manifest.clone()) {
            let reference = format!(
                "{}/{}@{}",
                resolver.namespace.trim_end_matches('/'),
                pin.name,
                pin.manifest
            );
            let mut found = resolver.resolve(&reference)?;
            for t in &mut found {
                t.platform = Some(pin.platform.clone());
            }
            targets.extend(found);
        }
    }
    let images = verify_images(&keyring, &lookaside, &targets, threshold, &options);
    let missed: Vec<String> = images
        .iter()
        .filter(|r| !r.quorum)
        .map(|r| {
            format!(
                "{} ({}/{} signers{})",
                r.image,
                r.valid_signers,
                r.threshold,
                r.error
                    .as_ref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !missed.is_empty() {
        bail!(
            "{} input(s) miss the quorum of {threshold} distinct trusted signers (keys {}, signatures from {}): {}; nothing was written (--no-verify to compose anyway)",
            missed.len(),
            keys.display(),
            lookaside.describe(),
            missed.join(", ")
        );
    }
    Ok(Verification {
        status: "verified".into(),
        images,
    })
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    composed: &'a Composed,
    digest: String,
    verification: Verification,
    output: Option<String>,
    push: Option<PushReport>,
    elapsed_ms: u128,
}

pub fn run(ctx: &Context, args: PalletArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let pallets_dir = ctx.settings.pallets.clone();
    let catalog = if pallets_dir.is_dir() {
        Catalog::load(&pallets_dir)?
    } else {
        Catalog::default()
    };
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
    let progress = !ctx.json && std::io::stderr().is_terminal();
    let request = Request {
        expression: args.expression.clone(),
        source,
        platforms: platforms.clone(),
        strict: args.strict,
        flatten: args.flatten,
        progress,
    };
    let composed = pipeline::run(&store, &catalog, &request)?;
    let verification = verify_inputs(ctx, &args, &composed)?;
    let mut push = None;
    if let Some(destination) = &destination {
        match destination {
            Destination::Registry { reference } => {
                let (host, _, _) = parse_reference(reference)?;
                // Mount only from repositories on the same registry.
                let mounts = if composed.source_host.as_deref() == Some(host.as_str()) {
                    composed.layer_repos.clone()
                } else {
                    Default::default()
                };
                push = Some(
                    push_image(reference, store.layout(), &composed.root, &mounts, progress)
                        .with_context(|| format!("pushing to {destination}"))?,
                );
            }
            other => {
                let platform = (platforms.len() == 1).then(|| &platforms[0]);
                output::write(other, store.layout(), &composed.root, platform)
                    .with_context(|| format!("writing {other}"))?;
            }
        }
    }
    let report = Report {
        composed: &composed,
        digest: composed.root.digest.to_string(),
        verification,
        output: destination.as_ref().map(|d| d.to_string()),
        push,
        elapsed_ms: started.elapsed().as_millis(),
    };
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
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
