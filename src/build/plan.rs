//! Owns: the build plan, StageX's `src/targets.py` in Rust: for every image
//! to build (dependencies first) its name, origin, version, target stage,
//! platforms, dependencies, build arguments and Containerfile, with the
//! values targets.py gives them. Pure: it reads a loaded `PackageTree` and
//! never touches the disk (`up_to_date` is filled in by `build::inputs`).
//!
//! Where targets.py is not followed, on purpose:
//! - `VERSION_MAJOR_MINOR` of a version without a dot (a date, a commit
//!   id): targets.py passes the string `None`; we pass the version itself,
//!   like the `{version_major_minor}` placeholder, so a Containerfile using
//!   it gets a real version and never a path with `None` in it.
//! - `BUILDKIT_MULTI_PLATFORM` and `BUILDKIT_DOCKERFILE_CHECK` are flags of
//!   docker's builder, not package arguments: not part of `build_args`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::oci::Platform;
use crate::package::graph::Graph;
use crate::package::model::Source;
use crate::package::placeholders::{self, expand_with};
use crate::package::{Package, PackageTree};

/// What the plan depends on besides the tree.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// `--platform`: used for packages whose package.toml sets none.
    pub platforms: Vec<Platform>,
    /// `SOURCE_DATE_EPOCH` passed to the builder.
    pub epoch: u64,
    /// The repository root; Containerfile paths are shown relative to it.
    pub root: PathBuf,
}

/// One image to build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    /// `<stage>-<name>` (`core-clang`).
    pub name: String,
    /// The defining package (`core-llvm` for `core-clang`; the name itself
    /// for a package without subpackages).
    pub origin: String,
    /// The tag and version annotation (`latest` when the package has none).
    pub version: String,
    /// `--target` (`package-clang`) for a subpackage.
    pub target: Option<String>,
    pub platforms: Vec<String>,
    /// Sorted `<stage>-<name>` of the images it needs.
    pub deps: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    /// Relative to the root; `None` for a native package.
    pub containerfile: Option<String>,
    /// `out/<name>/` already holds a build of the same inputs.
    pub up_to_date: bool,
    /// Up to date because `stagex preseed` pulled it from this namespace
    /// for the same inputs (filled in by `build::inputs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preseeded_from: Option<String>,
}

/// The platforms a package is built for. As in targets.py, a package's own
/// `platforms` win (bootstrap stages exist only for some architectures);
/// else `requested` (`--platform`); else the host.
pub fn platforms(package: &Package, requested: &[Platform]) -> Vec<Platform> {
    if !package.platforms.is_empty() {
        package.platforms.clone()
    } else if !requested.is_empty() {
        requested.to_vec()
    } else {
        vec![Platform::host()]
    }
}

/// The plan for `names` (every package when empty) and everything they
/// need, dependencies first (by name among independent ones).
pub fn plan(tree: &PackageTree, names: &[String], options: &PlanOptions) -> Result<Vec<PlanEntry>> {
    let requested: Vec<String> = names
        .iter()
        .map(|n| tree.get(n).map(|p| p.id.clone()))
        .collect::<Result<_>>()?;
    let order = Graph::from_tree(tree)?.build_order(&requested)?;
    order
        .iter()
        .map(|id| entry(tree.get(id)?, options))
        .collect()
}

/// The plan entry of one package (`up_to_date` false).
pub fn entry(package: &Package, options: &PlanOptions) -> Result<PlanEntry> {
    Ok(PlanEntry {
        name: package.id.clone(),
        origin: package.origin_id().to_string(),
        version: package.version_or_latest().to_string(),
        target: package.target.clone(),
        platforms: platforms(package, &options.platforms)
            .iter()
            .map(Platform::to_string)
            .collect(),
        deps: package.deps.iter().cloned().collect(),
        build_args: build_args(package, options.epoch)?,
        containerfile: package
            .containerfile()
            .map(|p| relative_to(p, &options.root)),
        up_to_date: false,
        preseeded_from: None,
    })
}

/// `path` shown relative to `root` (unchanged when outside it).
fn relative_to(path: &Path, root: &Path) -> String {
    let root = root.strip_prefix("./").unwrap_or(root);
    let path = path.strip_prefix("./").unwrap_or(path);
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every `--build-arg` targets.py passes for a package, with its values:
/// `SOURCE_DATE_EPOCH`; with a version, `VERSION`, `VERSION_UNDER`,
/// `VERSION_DASH`, `VERSION_MAJOR`, `VERSION_MAJOR_MINOR`,
/// `VERSION_STRIP_SUFFIX`; per source `<ID>_VERSION` and `<ID>_SOURCE`
/// when the source sets its own `version`, `<ID>_GIT_SHA` when it sets
/// `git_sha` (`<ID>` is the source id upper-cased, as Python's `upper()`).
pub fn build_args(package: &Package, epoch: u64) -> Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    args.insert("SOURCE_DATE_EPOCH".to_string(), epoch.to_string());
    if let Some(v) = package.version.as_deref().filter(|v| !v.is_empty()) {
        for (name, value) in [
            ("VERSION", v.to_string()),
            ("VERSION_UNDER", placeholders::version_under(v)),
            ("VERSION_DASH", placeholders::version_dash(v)),
            ("VERSION_MAJOR", placeholders::version_major(v)),
            ("VERSION_MAJOR_MINOR", placeholders::version_major_minor(v)),
            (
                "VERSION_STRIP_SUFFIX",
                placeholders::version_strip_suffix(v),
            ),
        ] {
            args.insert(name.to_string(), value);
        }
    }
    for source in &package.sources {
        let id = source.id.to_uppercase();
        if let Some(v) = source.version.as_deref().filter(|v| !v.is_empty()) {
            args.insert(format!("{id}_VERSION"), v.to_string());
            args.insert(format!("{id}_SOURCE"), source_arg(package, source, v)?);
        }
        if let Some(sha) = source.git_sha.as_deref().filter(|s| !s.is_empty()) {
            args.insert(format!("{id}_GIT_SHA"), sha.to_string());
        }
    }
    Ok(args)
}

/// `<ID>_SOURCE` as targets.py computes it: the `file` template (else the
/// last path segment of the first mirror, unexpanded) formatted with the
/// source's version and format and the PACKAGE's `version_dash` and
/// `version_under` (other placeholders are unknown there).
fn source_arg(package: &Package, source: &Source, version: &str) -> Result<String> {
    let field = |f: &str| format!("{}: sources.{}.{f}", package.toml_path.display(), source.id);
    let (template, what) = match &source.file {
        Some(file) if !file.is_empty() => (file.clone(), field("file")),
        _ => {
            let first = source.mirrors.first().with_context(|| field("mirrors"))?;
            (url_file(first), field("mirrors[0]"))
        }
    };
    let package_version = package.version.as_deref().unwrap_or_default();
    expand_with(&template, |name| {
        Ok(match name {
            "version" => version.to_string(),
            "version_dash" => placeholders::version_dash(package_version),
            "version_under" => placeholders::version_under(package_version),
            "format" => source.format.clone().unwrap_or_default(),
            other => bail!(
                "{{{other}}} cannot name the source file given to the build as {}_SOURCE (only {{version}}, {{version_dash}}, {{version_under}} and {{format}} can, as in StageX's targets.py)",
                source.id.to_uppercase()
            ),
        })
    })
    .with_context(|| what)
}

/// The last segment of a URL's path (before `?` and `#`), like Python's
/// `urlsplit(url).path.split("/")[-1]`.
fn url_file(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |at| &after_scheme[at..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::load::{expand_subpackages, parse_package};

    const HASH: &str = "3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4";

    fn package(text: &str) -> Package {
        parse_package(
            Path::new("/r/packages/core/llvm/package.toml"),
            text,
            "core",
            "llvm",
        )
        .unwrap()
    }

    #[test]
    fn version_args_follow_targets_py() {
        let p = package("[package]\nname = \"llvm\"\nversion = \"21.1.8-rc.1\"\n");
        let args = build_args(&p, 1).unwrap();
        let want = [
            ("SOURCE_DATE_EPOCH", "1"),
            ("VERSION", "21.1.8-rc.1"),
            ("VERSION_DASH", "21-1-8-rc-1"),
            ("VERSION_MAJOR", "21"),
            ("VERSION_MAJOR_MINOR", "21.1"),
            ("VERSION_STRIP_SUFFIX", "21.1.8"),
            ("VERSION_UNDER", "21_1_8-rc_1"),
        ];
        let got: Vec<(&str, &str)> = args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
        // One-part versions: the version itself, never "None".
        let p = package("[package]\nname = \"llvm\"\nversion = \"20240101\"\n");
        assert_eq!(
            build_args(&p, 1).unwrap()["VERSION_MAJOR_MINOR"],
            "20240101"
        );
        // No version: only the epoch.
        let p = package("[package]\nname = \"llvm\"\n");
        assert_eq!(build_args(&p, 7).unwrap().len(), 1);
    }

    #[test]
    fn source_args_only_for_versioned_sources() {
        let p = package(&format!(
            "[package]\nname = \"llvm\"\nversion = \"1.2.3\"\n\
             [sources.llvm]\nhash = \"{HASH}\"\nmirrors = [\"https://e.invalid/llvm-{{version}}.tar.xz\"]\n\
             [sources.go-linux-amd64]\nhash = \"{HASH}\"\nversion = \"9.8\"\nformat = \"tgz\"\nfile = \"go-{{version}}-{{version_dash}}.{{format}}\"\nmirrors = [\"https://e.invalid/{{file}}\"]\n\
             [sources.cports]\nhash = \"{HASH}\"\nversion = \"abc\"\ngit_sha = \"abcdef\"\nmirrors = [\"https://e.invalid/x/c-{{version}}.tar.gz?raw=1\"]\n"
        ));
        let args = build_args(&p, 1).unwrap();
        assert!(!args.contains_key("LLVM_SOURCE") && !args.contains_key("LLVM_VERSION"));
        assert_eq!(args["GO-LINUX-AMD64_VERSION"], "9.8");
        // version_dash is the package's, as in targets.py.
        assert_eq!(args["GO-LINUX-AMD64_SOURCE"], "go-9.8-1-2-3.tgz");
        assert_eq!(args["CPORTS_SOURCE"], "c-abc.tar.gz");
        assert_eq!(args["CPORTS_GIT_SHA"], "abcdef");
    }

    #[test]
    fn subpackage_entries_name_origin_and_target() {
        let mut p = package(
            "[package]\nname = \"llvm\"\nversion = \"21.1\"\nsubpackages = [\"llvm\", \"clang\"]\n",
        );
        p.recipe = Some(crate::package::model::Recipe::Containerfile(PathBuf::from(
            "/r/packages/core/llvm/Containerfile",
        )));
        p.deps = ["core-filesystem".to_string(), "core-clang".to_string()].into();
        let images = expand_subpackages(p);
        let options = PlanOptions {
            platforms: vec!["linux/arm64".parse().unwrap()],
            epoch: 1,
            root: PathBuf::from("/r"),
        };
        let clang = entry(&images[1], &options).unwrap();
        assert_eq!(clang.name, "core-clang");
        assert_eq!(clang.origin, "core-llvm");
        assert_eq!(clang.target.as_deref(), Some("package-clang"));
        assert_eq!(clang.version, "21.1");
        assert_eq!(clang.platforms, ["linux/arm64"]);
        assert_eq!(clang.deps, ["core-filesystem"], "never itself");
        assert_eq!(
            clang.containerfile.as_deref(),
            Some("packages/core/llvm/Containerfile")
        );
        let llvm = entry(&images[0], &options).unwrap();
        assert_eq!(llvm.deps, ["core-clang", "core-filesystem"]);
    }

    #[test]
    fn own_platforms_win_over_requested() {
        let p = package("[package]\nname = \"llvm\"\nplatforms = [\"linux/386\"]\n");
        let got = platforms(&p, &["linux/amd64".parse().unwrap()]);
        assert_eq!(got, vec!["linux/386".parse::<Platform>().unwrap()]);
    }

    #[test]
    fn url_file_is_the_last_path_segment() {
        assert_eq!(
            url_file("https://h/a/b-{version}.tgz?x=1#y"),
            "b-{version}.tgz"
        );
        assert_eq!(url_file("https://h"), "");
        assert_eq!(url_file("file:///usr/bin/busybox"), "busybox");
    }
}
