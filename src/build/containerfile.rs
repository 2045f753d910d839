//! Containerfile packages through an external OCI builder (buildah by
//! default, podman, or `docker buildx`), then normalized into a
//! deterministic image with our own layer writer.
//!
//! Steps: verify the fetched sources; make every `stagex/<id>` image the
//! Containerfile uses available to the builder from `out/` (private
//! container storage; `--pull=never`, `--network none`); build with
//! StageX's build arguments; export the result as an OCI layout; then keep
//! the leading layers that are byte-identical to a dependency's (by
//! diff_id, reusing our blobs) and re-write everything above them as ONE
//! layer from the extracted tree (mtime = SOURCE_DATE_EPOCH, sorted, fixed
//! compression), with a normalized config (builder labels dropped, created
//! and history fixed). Two builds at different times or on different
//! machines then give the same digest as long as the builder produced the
//! same files.
//!
//! When the new layers delete something (whiteouts), the image is flattened
//! into one layer instead, so the result always has exactly the builder's
//! files.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context as _, Result};

use super::image_out::{read_package_image, PackageOutput, Staging};
use super::package_build::{layer_history, platforms_for, BuildOptions, BuilderChoice};
use super::plan::build_args;
use crate::layer::{extract_layer, write_layer_to_layout, ExtractOptions, FileTree};
use crate::oci::config::rfc3339_utc;
use crate::oci::image::{ImageLayer, ImageSpec};
use crate::oci::layout::Layout;
use crate::oci::media_type;
use crate::oci::{Digest, Platform, RunConfig};
use crate::package::fetch::fetch_dir;
use crate::package::graph::{containerfile_refs, instructions, package_deps};
use crate::package::{Package, PackageTree};

/// Labels builders add that depend on the builder, not the package.
const BUILDER_LABELS: &[&str] = &["io.buildah.version"];

/// An external builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Buildah(PathBuf),
    Podman(PathBuf),
    Docker(PathBuf),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Buildah(_) => "buildah",
            Backend::Podman(_) => "podman",
            Backend::Docker(_) => "docker buildx",
        }
    }
}

/// Finds a program in PATH (and the sbin directories).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn docker_buildx() -> Option<PathBuf> {
    let docker = find_program("docker")?;
    let ok = Command::new(&docker)
        .args(["buildx", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(docker)
}

const INSTALL_HINT: &str = "install buildah and runc (Debian: apt-get install buildah runc), or podman, or docker with the buildx plugin";

/// The builder for `choice`; one clear error when it is missing.
pub fn select_backend(choice: BuilderChoice) -> Result<Backend> {
    let missing = |what: &str| anyhow::anyhow!("{what} is not installed: {INSTALL_HINT}");
    match choice {
        BuilderChoice::Buildah => find_program("buildah")
            .map(Backend::Buildah)
            .ok_or_else(|| missing("buildah")),
        BuilderChoice::Podman => find_program("podman")
            .map(Backend::Podman)
            .ok_or_else(|| missing("podman")),
        BuilderChoice::Docker => docker_buildx()
            .map(Backend::Docker)
            .ok_or_else(|| missing("docker buildx")),
        BuilderChoice::Auto => find_program("buildah")
            .map(Backend::Buildah)
            .or_else(|| find_program("podman").map(Backend::Podman))
            .or_else(|| docker_buildx().map(Backend::Docker))
            .ok_or_else(|| {
                anyhow::anyhow!("no OCI builder found for Containerfile packages: {INSTALL_HINT}")
            }),
        BuilderChoice::Native => bail!("--builder native cannot build a Containerfile"),
    }
}

/// Checks every source is fetched with the right hash; returns the files.
fn verified_sources(package: &Package, fetch_root: &Path) -> Result<Vec<PathBuf>> {
    let dir = fetch_dir(fetch_root, package);
    let mut files = Vec::new();
    for source in package.resolved_sources()? {
        let path = dir.join(&source.file);
        let file = std::fs::File::open(&path).with_context(|| {
            format!(
                "source {} of {} is not fetched ({}): run `stagex fetch {}`",
                source.id,
                package.id,
                path.display(),
                package.id
            )
        })?;
        let (digest, _) = Digest::of_reader(std::io::BufReader::new(file))
            .with_context(|| format!("reading {}", path.display()))?;
        if digest != source.hash {
            bail!(
                "{}: sha256 {digest} does not match {} in {}: run `stagex fetch {}`",
                path.display(),
                source.hash,
                package.toml_path.display(),
                package.id
            );
        }
        files.push(path);
    }
    Ok(files)
}

/// When this variable is `host`, buildah and podman run RUN steps with
/// `--uts host`: they see the host name of the UTS namespace the build
/// runs in (`stagex reproduce` names one per build, see
/// `reproduce_vary`), not a random container id. Any other value, or
/// unset: the builder's default (a private namespace).
pub const BUILDER_UTS_ENV: &str = "STAGEX_BUILDER_UTS";

/// Private container storage for one build.
struct Storage {
    dir: PathBuf,
}

impl Storage {
    fn new(work: &Path) -> Result<Storage> {
        let dir = work.join("storage");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("graph").display(),
                dir.join("run").display()
            ),
        )?;
        std::fs::write(
            dir.join("registries.conf"),
            "unqualified-search-registries = []\nshort-name-mode = \"permissive\"\n",
        )?;
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\nnetns = \"none\"\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )?;
        Ok(Storage { dir })
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("XDG_RUNTIME_DIR", self.dir.join("xdg"))
            .env("TMPDIR", &self.dir)
            .env("BUILDAH_LAYERS", "false");
        command
    }
}

/// Builders name an image pulled from `oci:PATH` after PATH, which must
/// then be a valid lowercase repository name; so dependency layouts are
/// reached through symlinks in a lowercase, digits-only temp directory.
struct DepLinks {
    dir: PathBuf,
}

impl DepLinks {
    fn new() -> Result<DepLinks> {
        let valid = |p: &Path| {
            p.to_str().is_some_and(|s| {
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/._-".contains(&b))
            })
        };
        let base = [
            std::env::temp_dir(),
            PathBuf::from("/tmp"),
            PathBuf::from("/var/tmp"),
        ]
        .into_iter()
        .find(|p| valid(p) && p.is_dir())
        .context("no temp directory with a lowercase path (set TMPDIR=/tmp)")?;
        // A NEW private directory (mkdir fails on anything already there,
        // symlinks included): in a shared /tmp a predictable name another
        // user created first would let them swap the dependency links.
        // tempfile's random names are mixed-case, hence our own.
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for attempt in 0..100u32 {
            let dir = base.join(format!(
                "stagex-deps-{}-{nanos}-{attempt}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(DepLinks { dir }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", dir.display()));
                }
            }
        }
        bail!("could not create a private directory in {}", base.display())
    }

    fn link(&self, dep: &str, layout: &Path) -> Result<PathBuf> {
        let target = layout
            .canonicalize()
            .with_context(|| format!("dependency {dep} is not built ({})", layout.display()))?;
        let link = self.dir.join(dep.to_ascii_lowercase());
        if !link.exists() {
            std::os::unix::fs::symlink(&target, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        Ok(link)
    }
}

impl Drop for DepLinks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a builder command; on failure the error carries its output tail.
fn run(command: &mut Command, what: &str) -> Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        let tail = |b: &[u8]| {
            let text = String::from_utf8_lossy(b).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        bail!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            tail(&output.stdout),
            tail(&output.stderr)
        );
    }
    Ok(output)
}

/// The stage to export: StageX's `package` stage when there is one. Read
/// with the crate's one Containerfile reader (`graph::instructions`:
/// continuations joined, heredoc bodies skipped).
fn target_stage(containerfile: &str) -> Option<String> {
    instructions(containerfile)
        .into_iter()
        .filter(|i| i.keyword == "FROM")
        .filter_map(|i| {
            let words: Vec<&str> = i.rest.split_whitespace().collect();
            let at = words.iter().position(|w| w.eq_ignore_ascii_case("as"))?;
            words.get(at + 1).map(|s| s.to_string())
        })
        .find(|s| s.eq_ignore_ascii_case("package"))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let dest = to.join(entry.path().strip_prefix(from)?);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if entry.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Builds a Containerfile package; returns the output and the backend name.
pub fn build(
    tree: &PackageTree,
    package: &Package,
    containerfile_path: &Path,
    options: &BuildOptions,
) -> Result<(PackageOutput, String)> {
    let backend = select_backend(options.builder)?;
    let containerfile = std::fs::read_to_string(containerfile_path)
        .with_context(|| format!("reading {}", containerfile_path.display()))?;
    refuse_foreign_images(&containerfile, containerfile_path)?;
    let sources = verified_sources(package, &options.fetch_root)?;
    let epoch = options.layer.mtime;
    let created = rfc3339_utc(epoch as i64);
    std::fs::create_dir_all(&options.out_root)?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".{}.build.", package.id))
        .tempdir_in(&options.out_root)
        .context("creating a build directory")?;
    let fetch = fetch_dir(&options.fetch_root, package);
    std::fs::create_dir_all(&fetch).with_context(|| format!("creating {}", fetch.display()))?;
    let job = BuildJob {
        tree,
        package,
        options,
        backend: &backend,
        deps: package_deps(package)?,
        args: build_args(package, epoch)?,
        // A subpackage's own stage (`package-<sub>`), else `package` if any.
        target: package
            .target
            .clone()
            .or_else(|| target_stage(&containerfile)),
        context: build_context(work.path(), package, &sources)?,
        fetch,
        work: work.path().to_path_buf(),
        epoch,
    };
    let staging = Staging::new(&options.out_root, &package.id)?;
    let mut images = Vec::new();
    for platform in platforms_for(package, options) {
        let result = job.build_platform(&platform)?;
        images.push(normalize(
            package,
            &job.deps,
            &platform,
            &result,
            &work.path().join("rootfs"),
            &staging,
            options,
            &created,
        )?);
    }
    let dest = options.out_root.join(&package.id);
    let output = staging.finish(&images, package.version_or_latest(), &created, &dest)?;
    Ok((output, backend.name().to_string()))
}

/// Builds run with `--network none` and `--pull=never`: a Containerfile
/// may only name StageX package images (and the `fetch` context).
fn refuse_foreign_images(containerfile: &str, path: &Path) -> Result<()> {
    let refs = containerfile_refs(containerfile);
    let unknown: Vec<&str> = refs
        .external
        .iter()
        .map(String::as_str)
        .filter(|e| *e != "fetch")
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{}: uses images that are not StageX packages ({}); builds run with --network none and --pull=never, so only stagex/<stage>-<name> images from out/ are available",
            path.display(),
            unknown.join(", ")
        );
    }
    Ok(())
}

/// The build context in `work`: the package directory plus the fetched
/// sources, at its top and in `fetch/` (where StageX's Makefile puts them,
/// for `ADD fetch/<file>`).
fn build_context(work: &Path, package: &Package, sources: &[PathBuf]) -> Result<PathBuf> {
    let context = work.join("context");
    copy_tree(&package.dir, &context)?;
    std::fs::create_dir_all(context.join("fetch"))?;
    for source in sources {
        let name = source.file_name().unwrap_or_default();
        for dest in [context.join(name), context.join("fetch").join(name)] {
            if dest.exists() {
                continue;
            }
            if std::fs::hard_link(source, &dest).is_err() {
                std::fs::copy(source, &dest)
                    .with_context(|| format!("copying {}", source.display()))?;
            }
        }
    }
    Ok(context)
}

/// What every platform's build of one package shares.
struct BuildJob<'a> {
    tree: &'a PackageTree,
    package: &'a Package,
    options: &'a BuildOptions,
    backend: &'a Backend,
    deps: BTreeSet<String>,
    args: BTreeMap<String, String>,
    target: Option<String>,
    context: PathBuf,
    fetch: PathBuf,
    work: PathBuf,
    epoch: u64,
}

impl BuildJob<'_> {
    /// Builds one platform; returns the OCI layout the builder wrote.
    fn build_platform(&self, platform: &Platform) -> Result<PathBuf> {
        let platform_dash = platform.to_string().replace('/', "-");
        let result = self.work.join(format!("result-{platform_dash}"));
        match self.backend {
            Backend::Buildah(program) | Backend::Podman(program) => {
                self.build_with_containers(program, platform, &platform_dash, &result)?
            }
            Backend::Docker(program) => self.build_with_docker(program, platform, &result)?,
        }
        Ok(result)
    }

    /// buildah or podman: the dependencies pulled into the run's storage
    /// from out/, the build, then a push of the image to `result`.
    fn build_with_containers(
        &self,
        program: &Path,
        platform: &Platform,
        platform_dash: &str,
        result: &Path,
    ) -> Result<()> {
        // A subpackage shares its family's storage for the run (the
        // scheduler builds members one at a time), so the shared `build`
        // stage comes from the builder's layer cache after the first one.
        let shared = family_storage(self.package, self.options, platform_dash);
        let storage = Storage::new(
            shared
                .as_deref()
                .unwrap_or(&self.work.join(format!("s-{platform_dash}"))),
        )?;
        let links = DepLinks::new()?;
        for dep in &self.deps {
            self.load_dependency(&storage, &links, program, platform, dep)?;
        }
        let iid = self.work.join("iid");
        let mut command = storage.command(program);
        command.arg("build");
        if shared.is_some() {
            command.env("BUILDAH_LAYERS", "true").arg("--layers");
        }
        if !matches!(self.backend, Backend::Podman(_)) {
            command.args(["--isolation", "oci"]);
        }
        if std::env::var_os(BUILDER_UTS_ENV).is_some_and(|v| v == "host") {
            command.args(["--uts", "host"]);
        }
        command
            .args(["--runtime", "runc", "--network", "none", "--pull=never"])
            .args(["--format", "oci", "--timestamp", &self.epoch.to_string()]);
        self.common_build_flags(&mut command, platform)?;
        command.arg("--iidfile").arg(&iid);
        self.run_build(&mut command, &format!("{} build", self.backend.name()))?;
        let image = std::fs::read_to_string(&iid).context("reading the built image id")?;
        run(
            storage
                .command(program)
                .args(["push", "--quiet", image.trim()])
                .arg(format!("oci:{}:latest", result.display())),
            &format!("{} push of {}", self.backend.name(), self.package.id),
        )?;
        Ok(())
    }

    /// Pulls `dep` from out/ into the run's storage and tags it
    /// `stagex/<dep>` (and `:<version>`).
    fn load_dependency(
        &self,
        storage: &Storage,
        links: &DepLinks,
        program: &Path,
        platform: &Platform,
        dep: &str,
    ) -> Result<()> {
        let name = self.backend.name();
        let dir = links.link(dep, &self.options.out_root.join(dep))?;
        let pulled = run(
            storage
                .command(program)
                .args(["pull", "--quiet", "--platform", &platform.to_string()])
                .arg(format!("oci:{}", dir.display())),
            &format!("{name} pull of {dep}"),
        )?;
        let id = String::from_utf8_lossy(&pulled.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        let version_tag = self
            .tree
            .get(dep)
            .ok()
            .and_then(|p| p.version.clone())
            .map(|v| format!("stagex/{dep}:{v}"));
        run(
            storage
                .command(program)
                .args(["tag", &id, &format!("stagex/{dep}")])
                .args(version_tag),
            &format!("{name} tag of {dep}"),
        )?;
        Ok(())
    }

    /// docker buildx: dependencies as `oci-layout://` build contexts, the
    /// image written straight to `result`.
    fn build_with_docker(&self, program: &Path, platform: &Platform, result: &Path) -> Result<()> {
        let mut command = Command::new(program);
        command.args(["buildx", "build", "--network", "none", "--provenance=false"]);
        self.common_build_flags(&mut command, platform)?;
        for dep in &self.deps {
            command.arg("--build-context").arg(format!(
                "stagex/{dep}=oci-layout://{}",
                self.options.out_root.join(dep).canonicalize()?.display()
            ));
        }
        command
            .arg("--output")
            .arg(format!("type=oci,tar=false,dest={}", result.display()));
        self.run_build(&mut command, "docker buildx build")
    }

    /// What every builder gets the same way: the platform,
    /// SOURCE_DATE_EPOCH, build arguments, the `fetch` build context and the
    /// target stage.
    fn common_build_flags(&self, command: &mut Command, platform: &Platform) -> Result<()> {
        command
            .args(["--platform", &platform.to_string()])
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string());
        for (k, v) in &self.args {
            command.arg("--build-arg").arg(format!("{k}={v}"));
        }
        command
            .arg("--build-context")
            .arg(format!("fetch={}", self.fetch.canonicalize()?.display()));
        if let Some(t) = &self.target {
            command.args(["--target", t]);
        }
        Ok(())
    }

    /// Runs a build `command` on this package's Containerfile and context.
    fn run_build(&self, command: &mut Command, what: &str) -> Result<()> {
        command
            .arg("-f")
            .arg(self.context.join("Containerfile"))
            .arg(&self.context);
        run(command, &format!("{what} of {}", self.package.id))?;
        Ok(())
    }
}

/// The storage a family member builds in, when the scheduler gave the run
/// a family cache: `<cache>/<origin>-<platform>`.
fn family_storage(package: &Package, options: &BuildOptions, platform: &str) -> Option<PathBuf> {
    let cache = options.family_cache.as_ref()?;
    package.target.as_ref()?;
    // One directory per family: releasing a family removes exactly it
    // (a name prefix would also match family `<origin>-x`).
    Some(cache.join(package.origin_id()).join(platform))
}

/// Turns the builder's OCI layout into our deterministic image spec,
/// writing the new layer into `staging`.
#[allow(clippy::too_many_arguments)]
fn normalize(
    package: &Package,
    deps: &BTreeSet<String>,
    platform: &Platform,
    result: &Path,
    scratch: &Path,
    staging: &Staging,
    options: &BuildOptions,
    created: &str,
) -> Result<ImageSpec> {
    let layout = Layout::open(result)?;
    let top = layout.resolve(None)?;
    let (descriptor, _, _) = layout.image_for_platform(&top, Some(platform))?;
    let image = crate::image::Image::load(&layout, &descriptor).context("builder output")?;
    let (manifest, config) = (image.manifest().clone(), image.config().clone());
    // Layers we already have, byte for byte, from the dependencies.
    let mut known: BTreeMap<Digest, (ImageLayer, Layout)> = BTreeMap::new();
    for dep in deps {
        let image = read_package_image(&options.out_root, dep, platform)?;
        for layer in image.layers {
            known
                .entry(layer.diff_id.clone())
                .or_insert((layer, image.layout.clone()));
        }
    }
    let mut reused = config
        .rootfs
        .diff_ids
        .iter()
        .take_while(|d| known.contains_key(*d))
        .count();
    // New layers that delete files of the reused ones cannot become one
    // plain layer on top of them: flatten the whole image instead.
    if reused > 0 {
        for descriptor in &manifest.layers[reused..] {
            if has_whiteouts(&layout, descriptor)? {
                reused = 0;
                break;
            }
        }
    }
    let mut layers = Vec::new();
    for diff_id in &config.rootfs.diff_ids[..reused] {
        let (layer, from) = &known[diff_id];
        staging.layout().copy_blob_from(from, &layer.descriptor)?;
        layers.push(layer.clone());
    }
    let upper = &manifest.layers[reused..];
    if !upper.is_empty() {
        if scratch.exists() {
            std::fs::remove_dir_all(scratch)?;
        }
        let mut owners: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for descriptor in upper {
            let compression =
                media_type::layer_compression(&descriptor.media_type).with_context(|| {
                    format!(
                        "builder output layer {} has media type {:?}",
                        descriptor.digest, descriptor.media_type
                    )
                })?;
            let blob = layout.open_blob(&descriptor.digest, Some(descriptor.size))?;
            extract_layer(blob, compression, scratch, &ExtractOptions::default())
                .with_context(|| format!("extracting builder layer {}", descriptor.digest))?;
            let blob = layout.open_blob(&descriptor.digest, Some(descriptor.size))?;
            let index = crate::layer::index_layer(blob, compression)
                .with_context(|| format!("reading builder layer {}", descriptor.digest))?;
            apply_owners(&mut owners, &index.entries);
        }
        let tree = FileTree::from_dir(scratch)?;
        // Owners come from the layers' tar headers, never from the disk:
        // rootless extraction leaves everything owned by us, root keeps the
        // layer's, and both must give the same package digest.
        let tree = with_owners(tree, &owners)?;
        let written = write_layer_to_layout(&tree, &options.layer, staging.layout())?;
        layers.push(ImageLayer {
            descriptor: written.descriptor(),
            diff_id: written.diff_id.clone(),
            history: layer_history(&package.id),
        });
    }
    Ok(ImageSpec {
        platform: platform.clone(),
        created: created.to_string(),
        run: normalized_run(&config.config),
        layers,
        empty_history: Vec::new(),
        annotations: BTreeMap::new(),
    })
}

/// Folds one layer's entries into `owners` (path -> uid, gid), applying
/// its whiteouts to what the layers below it left.
fn apply_owners(owners: &mut BTreeMap<String, (u32, u32)>, entries: &[crate::layer::LayerEntry]) {
    use crate::layer::EntryType;
    let under = |owners: &mut BTreeMap<String, (u32, u32)>, dir: &str| {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        owners.retain(|p, _| !p.starts_with(&prefix));
    };
    for e in entries {
        match e.kind {
            EntryType::Whiteout => {
                owners.remove(&e.path);
                under(owners, &e.path);
            }
            EntryType::OpaqueWhiteout => under(owners, &e.path),
            _ => {}
        }
    }
    for e in entries {
        if !matches!(e.kind, EntryType::Whiteout | EntryType::OpaqueWhiteout) {
            owners.insert(e.path.clone(), (e.uid, e.gid));
        }
    }
}

/// `tree` with every entry's owner taken from `owners` (0:0 for parents no
/// layer listed).
fn with_owners(tree: FileTree, owners: &BTreeMap<String, (u32, u32)>) -> Result<FileTree> {
    let mut out = FileTree::new();
    for (path, entry) in tree.entries() {
        let mut entry = entry.clone();
        (entry.uid, entry.gid) = owners.get(path).copied().unwrap_or((0, 0));
        out.insert(path, entry)?;
    }
    Ok(out)
}

/// True when a builder layer deletes anything (whiteouts).
fn has_whiteouts(layout: &Layout, descriptor: &crate::oci::Descriptor) -> Result<bool> {
    let compression = media_type::layer_compression(&descriptor.media_type).with_context(|| {
        format!(
            "builder output layer {} has media type {:?}",
            descriptor.digest, descriptor.media_type
        )
    })?;
    let blob = layout.open_blob(&descriptor.digest, Some(descriptor.size))?;
    let index = crate::layer::index_layer(blob, compression)
        .with_context(|| format!("reading builder layer {}", descriptor.digest))?;
    Ok(index.entries.iter().any(|e| {
        matches!(
            e.kind,
            crate::layer::EntryType::Whiteout | crate::layer::EntryType::OpaqueWhiteout
        )
    }))
}

/// The run config without builder-specific labels.
pub fn normalized_run(run: &RunConfig) -> RunConfig {
    let mut run = run.clone();
    if let Some(labels) = &mut run.labels {
        for label in BUILDER_LABELS {
            labels.remove(*label);
        }
        if labels.is_empty() {
            run.labels = None;
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_stage_is_a_from_instruction_not_a_heredoc_line() {
        let heredoc =
            "FROM scratch AS build\nRUN <<EOF\nFROM x AS package\nEOF\nFROM scratch AS install\n";
        assert_eq!(target_stage(heredoc), None);
        let continued = "FROM stagex/core-busybox \\\n  AS package\nCOPY . /\n";
        assert_eq!(target_stage(continued).as_deref(), Some("package"));
        assert_eq!(
            target_stage("# FROM x AS package\nfrom scratch as Package\n").as_deref(),
            Some("Package")
        );
    }

    #[test]
    fn owners_follow_the_layers_and_their_whiteouts() {
        use crate::layer::{EntryType, LayerEntry};
        let e = |path: &str, kind: EntryType, uid: u32| LayerEntry {
            path: path.to_string(),
            kind,
            mode: 0o755,
            uid,
            gid: uid,
            size: 0,
            link_target: None,
            content_digest: None,
        };
        let mut owners = BTreeMap::new();
        apply_owners(
            &mut owners,
            &[
                e("home", EntryType::Directory, 0),
                e("home/u", EntryType::Directory, 1000),
                e("home/u/f", EntryType::File, 1000),
                e("opt", EntryType::Directory, 0),
                e("opt/x", EntryType::File, 7),
            ],
        );
        apply_owners(
            &mut owners,
            &[
                e("home/u", EntryType::Whiteout, 0),
                e("home/u", EntryType::Directory, 2000),
                e("opt", EntryType::OpaqueWhiteout, 0),
                e("opt/y", EntryType::File, 8),
            ],
        );
        let got: Vec<(&str, u32)> = owners.iter().map(|(p, o)| (p.as_str(), o.0)).collect();
        assert_eq!(
            got,
            [("home", 0), ("home/u", 2000), ("opt", 0), ("opt/y", 8)]
        );
        let mut tree = FileTree::new();
        tree.insert("home/u", crate::layer::TreeEntry::dir(0o755))
            .unwrap();
        tree.set_owner_all(4242, 4242);
        let tree = with_owners(tree, &owners).unwrap();
        assert_eq!(tree.get("home").unwrap().uid, 0);
        assert_eq!(tree.get("home/u").unwrap().uid, 2000);
    }

    #[test]
    fn target_is_the_package_stage() {
        assert_eq!(
            target_stage("FROM scratch AS build\nFROM stagex/core-filesystem AS package\n")
                .as_deref(),
            Some("package")
        );
        assert_eq!(target_stage("FROM scratch\n"), None);
    }

    #[test]
    fn builder_labels_are_dropped() {
        let run = RunConfig {
            labels: Some(BTreeMap::from([(
                "io.buildah.version".to_string(),
                "1.28.2".to_string(),
            )])),
            ..RunConfig::default()
        };
        assert_eq!(normalized_run(&run).labels, None);
    }
}
