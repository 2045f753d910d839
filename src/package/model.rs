//! The package.toml data model: the raw TOML shapes (serde; unknown keys
//! are listed by `unknown_fields`, see `known_fields`) and the validated
//! `Package` the rest of the tool uses.
//!
//! Format (StageX's, unchanged):
//! - `[package]`: name, version | version_from, description, license,
//!   website, subpackages, platforms.
//! - `[sources.<id>]`: hash, version, git_sha, format, file, mirrors.
//!
//! Our extension for native (no compiler, no RUN) packages lives in the same
//! file under `[native]`; see `NativeSpec` and docs/native-packages.md.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Deserializer};

use super::placeholders::{TemplateKind, Vars};
use crate::oci::{Digest, Platform};
use crate::unknown_fields::{fields_of, Segment};

/// The whole file as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PackageToml {
    pub package: PackageSection,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSpec>,
    #[serde(default)]
    pub native: Option<NativeSpec>,
}

/// `[package]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PackageSection {
    pub name: String,
    pub version: Option<String>,
    pub version_from: Option<String>,
    pub description: Option<String>,
    pub license: Option<String>,
    pub website: Option<String>,
    #[serde(default)]
    pub subpackages: Vec<String>,
    #[serde(default)]
    pub platforms: Vec<String>,
}

/// `[sources.<id>]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SourceSpec {
    pub hash: String,
    pub version: Option<String>,
    pub git_sha: Option<String>,
    pub format: Option<String>,
    pub file: Option<String>,
    pub mirrors: Vec<String>,
}

/// `[native]`: a package that is a declared file tree plus image config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct NativeSpec {
    /// A package image (`<stage>-<name>`) whose layers come first, like
    /// `FROM stagex/<base>`; its config is the starting config.
    pub base: Option<String>,
    /// Image config set on top of the base's.
    #[serde(default)]
    pub config: NativeConfig,
    #[serde(default, rename = "dir")]
    pub dirs: Vec<DirSpec>,
    #[serde(default, rename = "file")]
    pub files: Vec<FileSpec>,
    #[serde(default, rename = "symlink")]
    pub symlinks: Vec<SymlinkSpec>,
    #[serde(default, rename = "hardlink")]
    pub hardlinks: Vec<HardLinkSpec>,
}

/// `[native.config]`: what `USER`, `ENTRYPOINT`, `CMD`, `ENV`, `WORKDIR`,
/// `SHELL`, `LABEL` would set in a Containerfile.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct NativeConfig {
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` entries, applied in order (a later one replaces).
    #[serde(default)]
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub shell: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `[[native.dir]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct DirSpec {
    pub path: String,
    #[serde(default = "default_dir_mode", deserialize_with = "de_mode")]
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// `[[native.file]]`: exactly one of `content` (inline text) or `source`
/// (a path relative to the package directory).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    #[serde(default = "default_file_mode", deserialize_with = "de_mode")]
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    pub content: Option<String>,
    pub source: Option<String>,
}

/// `[[native.symlink]]`: `path` -> `target` (target kept verbatim).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SymlinkSpec {
    pub path: String,
    pub target: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// `[[native.hardlink]]`: `path` is another name of the file at `target`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct HardLinkSpec {
    pub path: String,
    pub target: String,
}

/// The field names package.toml knows in the table at `path` (for "did
/// you mean" on an unknown key), read from the serde structs above.
pub fn known_fields(path: &[Segment]) -> &'static [&'static str] {
    let key = |i: usize| match path.get(i) {
        Some(Segment::Key(k)) => k.as_str(),
        _ => "",
    };
    match (path.len(), key(0), key(1)) {
        (0, _, _) => fields_of::<PackageToml>(),
        (1, "package", _) => fields_of::<PackageSection>(),
        (2, "sources", _) => fields_of::<SourceSpec>(),
        (1, "native", _) => fields_of::<NativeSpec>(),
        (2, "native", "config") => fields_of::<NativeConfig>(),
        (3, "native", "dir") => fields_of::<DirSpec>(),
        (3, "native", "file") => fields_of::<FileSpec>(),
        (3, "native", "symlink") => fields_of::<SymlinkSpec>(),
        (3, "native", "hardlink") => fields_of::<HardLinkSpec>(),
        _ => &[],
    }
}

fn default_dir_mode() -> u32 {
    0o755
}

fn default_file_mode() -> u32 {
    0o644
}

/// A mode is a TOML integer (`0o1777`) or an octal string (`"1777"`).
fn de_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u32),
        Text(String),
    }
    let mode = match Raw::deserialize(deserializer)? {
        Raw::Int(n) => n,
        Raw::Text(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
            serde::de::Error::custom(format!(
                "mode {s:?} is not octal; expected e.g. \"0755\" or 0o755"
            ))
        })?,
    };
    if mode > 0o7777 {
        return Err(serde::de::Error::custom(format!(
            "mode {mode:o} has bits beyond 07777; expected permission bits only"
        )));
    }
    Ok(mode)
}

/// One validated source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub id: String,
    pub hash: Digest,
    pub version: Option<String>,
    pub git_sha: Option<String>,
    pub format: Option<String>,
    pub file: Option<String>,
    pub mirrors: Vec<String>,
}

/// A source with every template expanded: what fetch downloads and what
/// the builder passes as `<ID>_SOURCE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSource {
    pub id: String,
    pub version: Option<String>,
    pub git_sha: Option<String>,
    pub file: String,
    pub urls: Vec<String>,
    pub hash: Digest,
}

/// One image to build: a package definition, or one subpackage of it.
///
/// A package.toml with `subpackages = ["a", "b"]` becomes one `Package` per
/// entry (`<stage>-a`, `<stage>-b`), as StageX's targets.py does: same
/// directory, sources, Containerfile and version, `origin` naming the
/// defining package and `target` its `package-<sub>` build stage. The
/// defining package itself is then no image of its own (unless it lists
/// its own name among the subpackages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// `bootstrap`, `core`, `pallet`, `user`, ... (the parent directory).
    pub stage: String,
    /// `[package].name` of the defining package.toml (for a subpackage too:
    /// sources are fetched once per definition, into `fetch/<stage>/<name>/`).
    pub name: String,
    /// `<stage>-<dir name>`, or `<stage>-<sub>` for a subpackage: the image
    /// is `stagex/<id>`, output `out/<id>/`.
    pub id: String,
    /// For a subpackage, the id of the defining package (`core-llvm` for
    /// `core-clang`); `None` for a package that is its own definition.
    pub origin: Option<String>,
    /// The Containerfile stage to build (`package-clang`) for a subpackage.
    pub target: Option<String>,
    /// The `stagex/<stage>-<name>` images this one needs (from the
    /// Containerfile's `FROM` / `COPY --from=` / `RUN --mount=from=` lines,
    /// or `native.base`), without itself.
    pub deps: BTreeSet<String>,
    pub dir: PathBuf,
    pub toml_path: PathBuf,
    /// The effective version (after `version_from`), if any.
    pub version: Option<String>,
    pub version_from: Option<String>,
    pub description: Option<String>,
    pub license: Option<String>,
    pub website: Option<String>,
    pub subpackages: Vec<String>,
    pub platforms: Vec<Platform>,
    pub sources: Vec<Source>,
    /// How it is built; `None` when the directory has neither a
    /// `[native]` section nor a Containerfile (building it says so).
    pub recipe: Option<Recipe>,
}

/// How a package is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// `[native]`: a declared file tree plus image config (it wins over a
    /// Containerfile in the same directory).
    Native(Box<NativeSpec>),
    /// The package directory's Containerfile.
    Containerfile(PathBuf),
}

impl Package {
    /// The Containerfile it is built from, if it is built from one.
    pub fn containerfile(&self) -> Option<&std::path::Path> {
        match &self.recipe {
            Some(Recipe::Containerfile(path)) => Some(path),
            _ => None,
        }
    }

    /// The id of the package definition this image comes from: `origin`
    /// for a subpackage, else its own id.
    pub fn origin_id(&self) -> &str {
        self.origin.as_deref().unwrap_or(&self.id)
    }

    /// `stagex/<stage>-<name>`.
    pub fn image_name(&self) -> String {
        format!("stagex/{}", self.id)
    }

    /// The version passed to builds and written in the version annotation
    /// (StageX uses `latest` when a package has none).
    pub fn version_or_latest(&self) -> &str {
        self.version.as_deref().unwrap_or("latest")
    }

    /// Expands one source's templates.
    pub fn resolve_source(&self, source: &Source) -> Result<ResolvedSource> {
        let field = |f: &str| format!("{}: sources.{}.{f}", self.toml_path.display(), source.id);
        let version = source.version.clone().or_else(|| self.version.clone());
        let mut vars = Vars {
            version: version.clone(),
            format: source.format.clone(),
            file: None,
        };
        let file = match &source.file {
            Some(t) => vars
                .expand(t, TemplateKind::File)
                .with_context(|| field("file"))?,
            None => {
                // Default: the last path segment of the first mirror URL.
                let first = source.mirrors.first().with_context(|| field("mirrors"))?;
                let url = vars
                    .expand(first, TemplateKind::File)
                    .with_context(|| format!("{} (deriving the file name)", field("mirrors[0]")))?;
                let path = url.split(['?', '#']).next().unwrap_or_default();
                let name = path.rsplit('/').next().unwrap_or_default();
                if name.is_empty() {
                    bail!("{}: the first mirror URL {url:?} ends in `/`, so no file name can be derived; set `file`", field("file"));
                }
                name.to_string()
            }
        };
        if file.contains('/') || file == "." || file == ".." {
            bail!(
                "{}: file name {file:?} must be a plain name (no `/`)",
                field("file")
            );
        }
        vars.file = Some(file.clone());
        let urls = source
            .mirrors
            .iter()
            .enumerate()
            .map(|(i, m)| {
                vars.expand(m, TemplateKind::Mirror)
                    .with_context(|| field(&format!("mirrors[{i}]")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ResolvedSource {
            id: source.id.clone(),
            version,
            git_sha: source.git_sha.clone(),
            file,
            urls,
            hash: source.hash.clone(),
        })
    }

    /// Every source, expanded.
    pub fn resolved_sources(&self) -> Result<Vec<ResolvedSource>> {
        self.sources
            .iter()
            .map(|s| self.resolve_source(s))
            .collect()
    }
}
