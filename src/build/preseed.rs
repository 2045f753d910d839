//! Owns: putting released images into `out/` without building them —
//! `stagex preseed` (every image a release's digests list) and `build
//! --deps-from` (the dependencies of the packages to build). Each image is
//! pulled BY ITS PINNED MANIFEST DIGEST through an `ImageSource` into the
//! local store (verified blob by blob; what the store holds is not fetched
//! again, so an interrupted preseed resumes), then staged and swapped into
//! `out/<stage>-<name>/` in the shape a build writes (index.json -> image
//! index -> the manifest), so `digests`, `digests --check` and dependants'
//! builds read it like a local build. An image whose `out/` layout already
//! has the pinned digest is left alone. Then, for each image placed (or
//! present without a record), `record_inputs` writes the inputs record of
//! the package's definition as it is in the tree whose digests named the
//! image, marked with where it came from, so `build` counts it as up to
//! date until the definition changes.
//! Must not build, schedule or draw anything.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use super::image_out::Staging;
use super::inputs;
use super::plan::{self, PlanOptions};
use crate::image::{fetch_image, ImageSource, OutDir};
use crate::oci::media_type::{ANNOTATION_CREATED, ANNOTATION_VERSION};
use crate::oci::{Digest, Platform};
use crate::package::PackageTree;
use crate::progress::{Progress, Task};
use crate::store::Store;
use rayon::prelude::*;

/// Images pulled at once unless asked otherwise: `stagex preseed`'s
/// default and the least `build --deps-from` uses.
pub const DEFAULT_JOBS: usize = 4;

/// Where and how to preseed.
#[derive(Clone, Debug)]
pub struct PreseedOptions {
    pub out_root: PathBuf,
    /// The platform pulled when a pinned digest is an index.
    pub platform: Platform,
    /// Images pulled at once (at least 1).
    pub jobs: usize,
}

/// What happened to one image.
#[derive(Debug)]
pub enum PreseedStatus {
    /// Pulled and written to `out/<id>/`.
    Pulled,
    /// `out/<id>/` already had the pinned digest.
    Present,
    /// Could not be pulled (the error names the image and the reason).
    Failed(String),
}

/// One image of the release.
#[derive(Debug)]
pub struct PreseedEntry {
    pub id: String,
    pub digest: Digest,
    pub status: PreseedStatus,
}

/// Pulls every image of `release` (`<stage>-<name>` -> manifest digest)
/// into `out/`, `options.jobs` at a time. One failure does not stop the
/// others; the entries say what happened, sorted by id.
pub fn preseed(
    source: &dyn ImageSource,
    release: &BTreeMap<String, Digest>,
    store: &Store,
    options: &PreseedOptions,
    progress: &dyn Progress,
) -> Vec<PreseedEntry> {
    let work: Vec<(&String, &Digest)> = release.iter().collect();
    // In id order (the map's), each entry saying what happened to it.
    // `jobs` pulls at once, each on its own thread taking the next image.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .build()
        .expect("the OS starts the preseed's pull threads");
    let pull = |&(id, digest): &(&String, &Digest)| {
        let status = match pull_one(source, id, digest, store, options, progress) {
            Ok(true) => PreseedStatus::Pulled,
            Ok(false) => PreseedStatus::Present,
            Err(e) => PreseedStatus::Failed(format!("{e:#}")),
        };
        PreseedEntry {
            id: id.clone(),
            digest: digest.clone(),
            status,
        }
    };
    pool.install(|| work.par_iter().with_max_len(1).map(pull).collect())
}

/// True when `out/<id>/` holds the image `digest` pins.
pub fn is_present(out: &OutDir, id: &str, digest: &Digest, platform: &Platform) -> bool {
    out.is_built(id)
        && out
            .manifest_digest(id, platform)
            .is_ok_and(|d| d.digest == *digest)
}

/// Pulls `id@digest` into `out/<id>/` unless it is there; true when pulled.
fn pull_one(
    source: &dyn ImageSource,
    id: &str,
    digest: &Digest,
    store: &Store,
    options: &PreseedOptions,
    progress: &dyn Progress,
) -> Result<bool> {
    let out = OutDir::open(&options.out_root);
    if is_present(&out, id, digest, &options.platform) {
        return Ok(false);
    }
    let what = format!("{}@{digest}", source.locate(id));
    let _task = Task::start(
        progress,
        &format!("preseed:{id}"),
        &format!("pull {id}"),
        None,
    );
    let image = fetch_image(
        source,
        id,
        digest,
        &options.platform,
        store.layout(),
        progress,
    )
    .with_context(|| format!("pulling {what}"))?;
    let staging = Staging::new(&options.out_root, id)?;
    let mut descriptor = image.descriptor();
    descriptor.platform = Some(image.platform());
    let config = image.manifest().config.clone();
    for blob in std::iter::once(&descriptor)
        .chain(std::iter::once(&config))
        .chain(image.layers())
    {
        staging
            .layout()
            .copy_blob_from(store.layout(), blob)
            .with_context(|| format!("copying {} of {what} from the store", blob.digest))?;
    }
    let annotations = &image.manifest().annotations;
    let version = annotations
        .get(ANNOTATION_VERSION)
        .map_or("latest", String::as_str);
    let created = annotations
        .get(ANNOTATION_CREATED)
        .cloned()
        .or_else(|| image.config().created.clone())
        .unwrap_or_default();
    staging
        .finish_index(vec![descriptor], version, &created, &out.path(id))
        .with_context(|| format!("writing {what} to {}", out.path(id).display()))?;
    Ok(true)
}

/// `build --deps-from`: the dependencies of `names` that are not named
/// themselves, pulled into `out/` pinned to `release` (an error names a
/// dependency the release does not list). Returns the entries.
pub fn deps_from(
    tree: &PackageTree,
    names: &[String],
    release: &BTreeMap<String, Digest>,
    source: &dyn ImageSource,
    store: &Store,
    options: &PreseedOptions,
    progress: &dyn Progress,
) -> Result<Vec<PreseedEntry>> {
    let wanted = dependencies(tree, names)?;
    let mut pinned = BTreeMap::new();
    for dep in wanted {
        let digest = release.get(&dep).with_context(|| {
            format!("dependency {dep} is not listed in the release digests, so it cannot be taken from the registry pinned: build it too (name it) or add it to digests/")
        })?;
        pinned.insert(dep, digest.clone());
    }
    let entries = preseed(source, &pinned, store, options, progress);
    let failed: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.status {
            PreseedStatus::Failed(why) => Some(format!("{}: {why}", e.id)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!("--deps-from: {}", failed.join("; "));
    }
    Ok(entries)
}

/// The direct dependencies of `names` that are not among them (sorted).
fn dependencies(tree: &PackageTree, names: &[String]) -> Result<BTreeSet<String>> {
    let named: BTreeSet<String> = names
        .iter()
        .map(|n| tree.get(n).map(|p| p.id.clone()))
        .collect::<Result<_>>()?;
    let mut deps = BTreeSet::new();
    for id in &named {
        deps.extend(
            tree.get(id)?
                .deps
                .iter()
                .filter(|d| !named.contains(*d))
                .cloned(),
        );
    }
    Ok(deps)
}

/// Writes the inputs record (`build::inputs`) of every image `entries`
/// placed, and of every one present without a record, for the package as
/// `tree` defines it, marked as preseeded from `source`; returns the ids
/// recorded. Skipped: failed pulls, images the tree does not define, and
/// packages whose dependencies are not in `out/` (nothing can be up to
/// date on top of a missing dependency). Call it after every pull is done:
/// the inputs include each dependency's `out/<dep>/index.json`.
pub fn record_inputs(
    tree: &PackageTree,
    entries: &[PreseedEntry],
    plan_options: &PlanOptions,
    out_root: &std::path::Path,
    source: &str,
) -> Result<Vec<String>> {
    let mut recorded = Vec::new();
    for e in entries {
        let wanted = match e.status {
            PreseedStatus::Pulled => true,
            PreseedStatus::Present => inputs::read_record(out_root, &e.id).is_none(),
            PreseedStatus::Failed(_) => false,
        };
        let Some(package) = tree.get(&e.id).ok().filter(|p| wanted && p.id == e.id) else {
            continue;
        };
        let entry = plan::entry(package, plan_options)?;
        if let Some(digest) = inputs::inputs_digest(&entry, package, out_root)? {
            inputs::write_preseed_record(out_root, &e.id, &digest, source)
                .with_context(|| format!("recording the inputs of {}", e.id))?;
            recorded.push(e.id.clone());
        }
    }
    Ok(recorded)
}
