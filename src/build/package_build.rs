//! Builds ONE package with the right backend (native, or a Containerfile
//! through an external builder), writing `out/<id>/` and its inputs
//! record. Ordering and running many is `build::scheduler`.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::image_out::{read_package_image, PackageOutput, Staging};
use super::native;
use crate::layer::writer::{write_layer_to_layout, LayerOptions};
use crate::oci::config::{rfc3339_utc, History};
use crate::oci::image::{ImageLayer, ImageSpec};
use crate::oci::{Platform, RunConfig};
use crate::package::model::{NativeSpec, Recipe};
use crate::package::{Package, PackageTree};

/// Which backend builds a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BuilderChoice {
    /// Native for `[native]` packages, else the first OCI builder found
    /// (buildah, podman, docker buildx).
    Auto,
    /// Only native packages; a Containerfile package is an error.
    Native,
    Buildah,
    Podman,
    Docker,
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub out_root: PathBuf,
    pub fetch_root: PathBuf,
    /// Platforms to build for; empty = the package's `platforms`, else the host.
    pub platforms: Vec<Platform>,
    pub builder: BuilderChoice,
    pub layer: LayerOptions,
    /// Rebuild dependencies that are already in `out/`.
    pub rebuild_deps: bool,
    /// Where subpackage families keep one builder storage each for the
    /// run (set by the scheduler; `None`: every build has its own).
    pub family_cache: Option<PathBuf>,
    /// The repository root: plan entries show Containerfile paths
    /// relative to it.
    pub root: PathBuf,
}

/// One package built.
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub id: String,
    pub output: PackageOutput,
    pub backend: String,
}

/// The inputs digest of `package` as it is about to be built (see
/// `build::inputs`): recorded in `out/<id>/.stagex-inputs` once the build
/// succeeds, and what `build --dry-run` compares to say up to date.
pub fn inputs_of(package: &Package, options: &BuildOptions) -> Result<crate::oci::Digest> {
    let entry = super::plan::entry(package, &options.plan_options())?;
    let digest = super::inputs::inputs_digest(&entry, package, &options.out_root)?;
    digest.ok_or_else(|| {
        anyhow::anyhow!(
            "the inputs of {}: a dependency is missing from {} (build it first)",
            entry.name,
            options.out_root.display()
        )
    })
}

impl BuildOptions {
    /// The plan settings these build options imply.
    pub fn plan_options(&self) -> super::plan::PlanOptions {
        super::plan::PlanOptions {
            platforms: self.platforms.clone(),
            epoch: self.layer.mtime,
            root: self.root.clone(),
        }
    }
}

/// The platforms a package is built for (see `plan::platforms`).
pub fn platforms_for(package: &Package, options: &BuildOptions) -> Vec<Platform> {
    super::plan::platforms(package, &options.platforms)
}

/// Builds one package (its dependencies must be in `out/`).
pub fn build_one(
    tree: &PackageTree,
    package: &Package,
    options: &BuildOptions,
) -> Result<BuildReport> {
    let containerfile = match &package.recipe {
        Some(Recipe::Native(spec)) => {
            let output = build_native(package, spec, options)?;
            return Ok(BuildReport {
                id: package.id.clone(),
                output,
                backend: "native".to_string(),
            });
        }
        Some(Recipe::Containerfile(path)) => path,
        None => bail!(
            "{} has neither a [native] section nor a Containerfile in {}; add one of them",
            package.id,
            package.dir.display()
        ),
    };
    if options.builder == BuilderChoice::Native {
        bail!(
            "{} needs a Containerfile build, but --builder native was given; use --builder auto|buildah|podman|docker",
            package.id
        );
    }
    let (output, backend) = super::containerfile::build(tree, package, containerfile, options)?;
    Ok(BuildReport {
        id: package.id.clone(),
        output,
        backend,
    })
}

/// The history entry of a layer made by stagex for a package. It names
/// neither the backend nor a tool version, so the same files give the same
/// image whichever builder produced them.
pub fn layer_history(id: &str) -> History {
    History {
        created_by: Some(format!("stagex build {id}")),
        ..History::default()
    }
}

fn build_native(
    package: &Package,
    spec: &NativeSpec,
    options: &BuildOptions,
) -> Result<PackageOutput> {
    let tree = native::file_tree(package, spec)?;
    let staging = Staging::new(&options.out_root, &package.id)?;
    let layer = write_layer_to_layout(&tree, &options.layer, staging.layout())?;
    let created = rfc3339_utc(options.layer.mtime as i64);
    let mut images = Vec::new();
    for platform in platforms_for(package, options) {
        let (mut layers, mut run) = match &spec.base {
            Some(base) => {
                let base_id =
                    crate::package::graph::stagex_package_id(base).unwrap_or_else(|| base.clone());
                let image = read_package_image(&options.out_root, &base_id, &platform)?;
                for l in &image.layers {
                    staging
                        .layout()
                        .copy_blob_from(&image.layout, &l.descriptor)?;
                }
                (image.layers, image.run)
            }
            None => (Vec::new(), RunConfig::default()),
        };
        native::apply_config(&mut run, &spec.config);
        layers.push(ImageLayer {
            descriptor: layer.descriptor(),
            diff_id: layer.diff_id.clone(),
            history: layer_history(&package.id),
        });
        images.push(ImageSpec {
            platform,
            created: created.clone(),
            run,
            layers,
            empty_history: Vec::new(),
            annotations: BTreeMap::new(),
        });
    }
    let dest = options.out_root.join(&package.id);
    staging.finish(&images, package.version_or_latest(), &created, &dest)
}
