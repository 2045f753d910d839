//! `stagex pallet` end to end, minus the command line: check the
//! expression's names against the catalog and expand it, pin its packages
//! as the catalog says, resolve every input per platform, compose (pure),
//! materialize the extra layers, assemble config/manifest (and an index for
//! several platforms) into the store; then `write_output` hands the result
//! to the destination's sink.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::catalog::{Origin, Pinning, ReleaseCatalog};
use super::compose::{
    compose, ComposeOptions, ComposedPackage, Composition, Conflict, PlannedLayer, CREATED_EPOCH,
};
use super::definition::Plan;
use super::expr::Expr;
use super::materialize::{flatten, materialize};
use super::resolve::{FetchStats, ImageProvider, Pinned, Resolver};
use crate::image::output::{Destination, Mounts};
use crate::oci::config::{rfc3339_utc, History};
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::image::{build_image, build_index, ImageSpec};
use crate::oci::media_type;
use crate::oci::WriteReport;
use crate::progress::Progress;
use crate::store::Store;

/// What to compose.
#[derive(Clone, Debug)]
pub struct Request {
    pub expression: String,
    pub source: ImageProvider,
    pub platforms: Vec<Platform>,
    pub strict: bool,
    pub flatten: bool,
    /// Compose package layers holding device nodes or fifos.
    pub allow_special_files: bool,
}

/// One layer of a composed image, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub origin: LayerOrigin,
    pub created_by: String,
}

/// Where a layer of a composed image comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerOrigin {
    /// A package layer, reused as it is.
    Reused,
    /// Made by the composition.
    Built,
}

/// The image composed for one platform.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformReport {
    pub platform: String,
    pub manifest: Descriptor,
    pub layers: Vec<LayerReport>,
    pub packages: Vec<ComposedPackage>,
    pub conflicts: Vec<Conflict>,
    pub dropped_duplicate_layers: Vec<Digest>,
    pub kept_duplicate_layers: Vec<Digest>,
}

/// Which catalog a composition used.
#[derive(Clone, Debug, Serialize)]
pub struct CatalogUsed {
    pub release: Option<String>,
    pub origin: Origin,
    /// `release`: every package at its release digest; `latest` or
    /// `checkout-tags`: tags, so the result is not pinned.
    pub pinning: Pinning,
}

/// Everything `stagex pallet` did before writing the output.
#[derive(Clone, Debug, Serialize)]
pub struct Composed {
    pub expression: String,
    /// The catalog the names were taken from and how packages were pinned.
    pub catalog: CatalogUsed,
    /// The image (manifest, or index for several platforms) in the store.
    pub root: Descriptor,
    pub platforms: Vec<PlatformReport>,
    pub pinned: Vec<Pinned>,
    pub fetch: FetchStats,
    /// Layer digest -> source repositories (for mounts on push).
    #[serde(skip)]
    pub layer_repos: BTreeMap<Digest, Vec<String>>,
    #[serde(skip)]
    pub source_host: Option<String>,
}

/// Expands `expression` against `catalog`: every name checked (with a
/// suggestion) before anything is read, then every package pinned as the
/// catalog says (`ReleaseCatalog::pin`).
pub fn plan(catalog: &ReleaseCatalog, expression: &str) -> Result<Plan> {
    let expr: Expr = expression.parse()?;
    catalog.check_names(&expr)?;
    let plan = catalog.definitions.expand(&expr)?;
    Ok(catalog.pin(plan)?)
}

/// Composes `request` into `store`; pulls and warnings are reported to
/// `progress`.
pub fn run(
    store: &Store,
    catalog: &ReleaseCatalog,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Composed> {
    let plan = plan(catalog, &request.expression)?;
    let mut resolver = Resolver::new(store, request.source.clone(), progress)?;
    let mut reports = Vec::new();
    let mut manifests = Vec::new();
    for platform in &request.platforms {
        let report = compose_platform(store, &plan, &mut resolver, request, platform)?;
        manifests.push(report.manifest.clone());
        reports.push(report);
    }
    let root = if manifests.len() == 1 {
        manifests[0].clone()
    } else {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            super::compose::LABEL_EXPRESSION.to_string(),
            request.expression.clone(),
        );
        let index = build_index(&manifests, annotations)?;
        store.layout().write_json(&index, media_type::OCI_INDEX)?
    };
    Ok(Composed {
        expression: request.expression.clone(),
        catalog: CatalogUsed {
            release: catalog.release.clone(),
            origin: catalog.origin.clone(),
            pinning: catalog.pinning,
        },
        root,
        platforms: reports,
        pinned: resolver.pinned.clone(),
        fetch: resolver.stats.clone(),
        source_host: resolver.registry_host().map(str::to_string),
        layer_repos: resolver.layer_repos.clone(),
    })
}

/// Composes, materializes (and flattens) the image of one platform, writes
/// its config and manifest to the store, and reports it.
fn compose_platform(
    store: &Store,
    plan: &Plan,
    resolver: &mut Resolver,
    request: &Request,
    platform: &Platform,
) -> Result<PlatformReport> {
    let references = plan.references();
    let resolved = resolver.resolve_all(&references, platform)?;
    let images: BTreeMap<_, _> = references.into_iter().zip(resolved).collect();
    let composition = compose(
        plan,
        &images,
        platform,
        &ComposeOptions {
            expression: request.expression.clone(),
            strict: request.strict,
            allow_special_files: request.allow_special_files,
        },
    )?;
    let mut layers = materialize(store, &composition)?;
    if request.flatten {
        let history = History {
            created: Some(rfc3339_utc(CREATED_EPOCH)),
            created_by: Some(format!("stagex pallet --flatten {}", request.expression)),
            ..History::default()
        };
        layers = vec![flatten(store, &layers, &history)?];
    }
    let spec = ImageSpec {
        platform: platform.clone(),
        created: rfc3339_utc(CREATED_EPOCH),
        run: composition.run.clone(),
        layers: layers.clone(),
        empty_history: vec![],
        annotations: composition.annotations.clone(),
    };
    let built = build_image(&spec)?;
    store
        .layout()
        .write_json(&built.config, media_type::OCI_CONFIG)?;
    store
        .layout()
        .write_json(&built.manifest, media_type::OCI_MANIFEST)?;
    Ok(platform_report(
        platform,
        built.descriptor,
        &layers,
        &composition,
    ))
}

/// What one platform's image is made of: each layer reused from a package
/// or built here, the packages, conflicts and duplicates.
fn platform_report(
    platform: &Platform,
    manifest: Descriptor,
    layers: &[crate::oci::image::ImageLayer],
    composition: &Composition,
) -> PlatformReport {
    let reused: std::collections::BTreeSet<Digest> = composition
        .layers
        .iter()
        .filter_map(|l| match l {
            PlannedLayer::Reuse(l) => Some(l.descriptor.digest.clone()),
            PlannedLayer::Extra { .. } => None,
        })
        .collect();
    PlatformReport {
        platform: platform.to_string(),
        manifest,
        layers: layers
            .iter()
            .map(|l| LayerReport {
                digest: l.descriptor.digest.clone(),
                size: l.descriptor.size,
                diff_id: l.diff_id.clone(),
                origin: if reused.contains(&l.descriptor.digest) {
                    LayerOrigin::Reused
                } else {
                    LayerOrigin::Built
                },
                created_by: l.history.created_by.clone().unwrap_or_default(),
            })
            .collect(),
        packages: composition.packages.clone(),
        conflicts: composition.conflicts.clone(),
        dropped_duplicate_layers: composition.dropped_duplicates.clone(),
        kept_duplicate_layers: composition.kept_duplicates.clone(),
    }
}

/// Writes the composed image to `destination`; a push to the registry the
/// packages came from mounts their layers instead of uploading them.
/// `platforms` as composed: with one, single-image formats take it.
pub fn write_output(
    store: &Store,
    composed: &Composed,
    destination: &Destination,
    platforms: &[Platform],
    progress: &dyn Progress,
) -> Result<WriteReport> {
    let mounts = Mounts {
        host: composed.source_host.clone(),
        repos: composed.layer_repos.clone(),
    };
    let platform = (platforms.len() == 1).then(|| &platforms[0]);
    destination
        .sink(mounts)
        .write(store.layout(), &composed.root, platform, progress)
        .with_context(|| match destination {
            Destination::Registry { .. } => format!("pushing to {destination}"),
            _ => format!("writing {destination}"),
        })
}
