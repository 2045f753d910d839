//! Reading package definitions: one package.toml (parse + validate, pure
//! given its text) and a whole `packages/<stage>/<name>/` tree, where
//! `version_from` references are resolved. Every error names the file, the
//! field and what was expected.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::graph::definition_deps;
use super::model::{known_fields, NativeSpec, Package, PackageToml, Recipe, Source, SourceSpec};
use super::placeholders::{self, TemplateKind};
use crate::oci::{Digest, Platform};
use crate::unknown_fields::{self, UnknownField};

pub const PACKAGE_TOML: &str = "package.toml";
pub const CONTAINERFILE: &str = "Containerfile";

/// Parses and validates one package.toml. `path` is used in messages and
/// to locate the package directory; `stage` and `dir_name` come from the
/// tree position. `version_from` is NOT resolved here (see `PackageTree`).
pub fn parse_package(path: &Path, text: &str, stage: &str, dir_name: &str) -> Result<Package> {
    parse_package_lenient(path, text, stage, dir_name).map(|(package, _)| package)
}

/// `parse_package`, also listing the keys package.toml does not know
/// (ignored: a newer or older StageX release may carry them).
pub fn parse_package_lenient(
    path: &Path,
    text: &str,
    stage: &str,
    dir_name: &str,
) -> Result<(Package, Vec<UnknownField>)> {
    let file = path.display();
    let (raw, unknown): (PackageToml, _) = unknown_fields::from_str(path, text, known_fields)
        .map_err(|e| anyhow::anyhow!("{file}: invalid package.toml: {e}"))?;
    let p = &raw.package;
    if p.name.trim().is_empty() {
        bail!("{file}: package.name: expected a non-empty package name");
    }
    if p.version.is_some() && p.version_from.is_some() {
        bail!("{file}: package.version and package.version_from are both set; expected only one (version_from inherits another package's version)");
    }
    if let Some(v) = &p.version {
        if v.trim().is_empty() {
            bail!("{file}: package.version: expected a non-empty version");
        }
    }
    if let Some(from) = &p.version_from {
        if !from.contains('-') {
            bail!("{file}: package.version_from = {from:?}: expected \"<stage>-<name>\" of another package, e.g. \"core-rust\"");
        }
    }
    let platforms = p
        .platforms
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Platform>()
                .with_context(|| format!("{file}: package.platforms[{i}] = {s:?}: expected os/arch[/variant] like \"linux/amd64\""))
        })
        .collect::<Result<Vec<_>>>()?;
    let sources = parse_sources(path, &raw.sources)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(native) = &raw.native {
        validate_native(path, &dir, native)?;
    }
    let containerfile = dir.join(CONTAINERFILE);
    let recipe = match &raw.native {
        Some(native) => Some(Recipe::Native(Box::new(native.clone()))),
        None => containerfile
            .is_file()
            .then_some(Recipe::Containerfile(containerfile)),
    };
    let package = Package {
        stage: stage.to_string(),
        name: p.name.clone(),
        id: format!("{stage}-{dir_name}"),
        origin: None,
        target: None,
        deps: Default::default(),
        dir: dir.clone(),
        toml_path: path.to_path_buf(),
        version: p.version.clone(),
        version_from: p.version_from.clone(),
        description: p.description.clone(),
        license: p.license.clone(),
        website: p.website.clone(),
        subpackages: p.subpackages.clone(),
        platforms,
        sources,
        recipe,
    };
    if package.version_from.is_none() {
        // With the version known, every template must expand now.
        package.resolved_sources()?;
    }
    Ok((package, unknown))
}

/// `[sources.<id>]`, validated: hash, mirrors (scheme, placeholders),
/// file template, git_sha.
fn parse_sources(path: &Path, raw: &BTreeMap<String, SourceSpec>) -> Result<Vec<Source>> {
    let file = path.display();
    let mut sources = Vec::new();
    for (id, spec) in raw {
        let field = |f: &str| format!("{file}: sources.{id}.{f}");
        if !is_hex64(&spec.hash) {
            bail!(
                "{}: {:?} is not a sha256; expected 64 lowercase hex digits",
                field("hash"),
                spec.hash
            );
        }
        let hash = Digest::from_hex(&spec.hash).with_context(|| field("hash"))?;
        if spec.mirrors.is_empty() {
            bail!("{}: expected at least one mirror URL", field("mirrors"));
        }
        if let Some(t) = &spec.file {
            placeholders::validate(t, TemplateKind::File).with_context(|| field("file"))?;
        }
        for (i, m) in spec.mirrors.iter().enumerate() {
            placeholders::validate(m, TemplateKind::Mirror)
                .with_context(|| field(&format!("mirrors[{i}]")))?;
            let scheme_ok = ["http://", "https://", "file://"]
                .iter()
                .any(|s| m.starts_with(s));
            if !scheme_ok {
                bail!(
                    "{}: {m:?}: expected an http://, https:// or file:// URL",
                    field(&format!("mirrors[{i}]"))
                );
            }
        }
        if let Some(sha) = &spec.git_sha {
            if sha.is_empty() || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "{}: {sha:?}: expected a hex git commit id",
                    field("git_sha")
                );
            }
        }
        sources.push(Source {
            id: id.clone(),
            hash,
            version: spec.version.clone(),
            git_sha: spec.git_sha.clone(),
            format: spec.format.clone(),
            file: spec.file.clone(),
            mirrors: spec.mirrors.clone(),
        });
    }
    Ok(sources)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A path inside an image: relative, normalized, no `..`.
pub fn normalize_image_path(path: &str) -> Option<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

fn validate_native(path: &Path, dir: &Path, native: &NativeSpec) -> Result<()> {
    let file = path.display();
    let check = |kind: &str, i: usize, p: &str| -> Result<()> {
        if normalize_image_path(p).is_none() {
            bail!("{file}: native.{kind}[{i}].path = {p:?}: expected a path inside the image (not empty, no `..`)");
        }
        Ok(())
    };
    for (i, d) in native.dirs.iter().enumerate() {
        check("dir", i, &d.path)?;
    }
    for (i, f) in native.files.iter().enumerate() {
        check("file", i, &f.path)?;
        match (&f.content, &f.source) {
            (Some(_), None) => {}
            (None, Some(src)) => {
                let ok = normalize_image_path(src).is_some() && !src.starts_with('/');
                if !ok {
                    bail!("{file}: native.file[{i}].source = {src:?}: expected a path relative to {} without `..`", dir.display());
                }
                if !dir.join(src).is_file() {
                    bail!(
                        "{file}: native.file[{i}].source = {src:?}: no such file in {}",
                        dir.display()
                    );
                }
            }
            _ => bail!(
                "{file}: native.file[{i}] ({}): expected exactly one of `content` or `source`",
                f.path
            ),
        }
    }
    for (i, s) in native.symlinks.iter().enumerate() {
        check("symlink", i, &s.path)?;
        if s.target.is_empty() {
            bail!("{file}: native.symlink[{i}].target: expected a non-empty link target");
        }
    }
    for (i, h) in native.hardlinks.iter().enumerate() {
        check("hardlink", i, &h.path)?;
        if normalize_image_path(&h.target).is_none() {
            bail!(
                "{file}: native.hardlink[{i}].target = {:?}: expected a path inside the image",
                h.target
            );
        }
    }
    for (i, e) in native.config.env.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            bail!("{file}: native.config.env[{i}] = {e:?}: expected NAME=value");
        }
    }
    Ok(())
}

/// One `<stage>/<name>/package.toml` of a packages tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionFile {
    pub stage: String,
    pub dir_name: String,
    pub path: PathBuf,
}

impl DefinitionFile {
    /// Reads and parses the file (`parse_package_lenient`).
    pub fn parse(&self) -> Result<(Package, Vec<UnknownField>)> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        parse_package_lenient(&self.path, &text, &self.stage, &self.dir_name)
    }
}

/// Every `root/<stage>/<name>/package.toml`, stages and names sorted.
pub fn definition_files(root: &Path) -> Result<Vec<DefinitionFile>> {
    let mut files = Vec::new();
    for stage in sorted_subdirs(root)? {
        for dir in sorted_subdirs(&stage)? {
            let path = dir.join(PACKAGE_TOML);
            if path.is_file() {
                files.push(DefinitionFile {
                    stage: file_name(&stage),
                    dir_name: file_name(&dir),
                    path,
                });
            }
        }
    }
    Ok(files)
}

/// Every package under a packages directory, keyed by `<stage>-<name>`.
#[derive(Clone, Debug)]
pub struct PackageTree {
    pub root: PathBuf,
    pub packages: BTreeMap<String, Package>,
    /// Keys the package.toml files carry that this version does not know
    /// (ignored; the CLI warns, or refuses under `--strict` / `lint`).
    pub unknown_fields: Vec<UnknownField>,
}

impl PackageTree {
    /// Loads `root/<stage>/<name>/package.toml` for every stage and name
    /// (sorted), reads each definition's dependencies once, expands
    /// subpackages into their own packages, then resolves `version_from`
    /// (which may name a subpackage).
    pub fn load(root: &Path) -> Result<PackageTree> {
        if !root.is_dir() {
            bail!(
                "packages directory {} does not exist; point --packages (or `packages` in stagex.toml) at a StageX packages/ tree",
                root.display()
            );
        }
        let mut packages = BTreeMap::new();
        let mut unknown_fields = Vec::new();
        for definition in definition_files(root)? {
            let (mut package, unknown) = definition.parse()?;
            unknown_fields.extend(unknown);
            package.deps = definition_deps(&package)?;
            for image in expand_subpackages(package) {
                insert_unique(&mut packages, image)?;
            }
        }
        let mut tree = PackageTree {
            root: root.to_path_buf(),
            packages,
            unknown_fields,
        };
        tree.resolve_version_from()?;
        Ok(tree)
    }

    fn resolve_version_from(&mut self) -> Result<()> {
        let ids: Vec<String> = self.packages.keys().cloned().collect();
        for id in ids {
            let mut chain = vec![id.clone()];
            let mut current = id.clone();
            let version = loop {
                let p = &self.packages[&current];
                let Some(from) = &p.version_from else {
                    break p.version.clone();
                };
                // An image, or a definition made only of subpackages
                // (they all share its version).
                let target = self.packages.get(from).or_else(|| {
                    self.packages
                        .values()
                        .find(|p| p.origin.as_deref() == Some(from.as_str()))
                });
                let Some(target) = target else {
                    bail!(
                        "{}: package.version_from = {from:?}: no package {from} in {} (expected <stage>-<name> of an existing package)",
                        p.toml_path.display(),
                        self.root.display()
                    );
                };
                if chain.contains(from) {
                    chain.push(from.clone());
                    bail!(
                        "{}: package.version_from forms a cycle: {}",
                        p.toml_path.display(),
                        chain.join(" -> ")
                    );
                }
                chain.push(from.clone());
                current = target.id.clone();
            };
            let package = self.packages.get_mut(&id).expect("id from keys");
            if package.version_from.is_some() {
                if version.is_none() {
                    bail!(
                        "{}: package.version_from = {:?}: that package has no version",
                        package.toml_path.display(),
                        package.version_from.as_deref().unwrap_or_default()
                    );
                }
                package.version = version;
                package.resolved_sources()?;
            }
        }
        Ok(())
    }

    /// Looks a package up by `<stage>-<name>`, `<stage>/<name>`,
    /// `stagex/<stage>-<name>`, or a bare name when only one stage has it.
    pub fn get(&self, name: &str) -> Result<&Package> {
        let key = name.trim_start_matches("stagex/").replacen('/', "-", 1);
        if let Some(p) = self.packages.get(&key) {
            return Ok(p);
        }
        let matches: Vec<&Package> = self
            .packages
            .values()
            .filter(|p| p.id.split_once('-').map(|(_, n)| n) == Some(name))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => {
                let subs: Vec<&str> = self
                    .packages
                    .values()
                    .filter(|p| p.origin.as_deref() == Some(key.as_str()))
                    .map(|p| p.id.as_str())
                    .collect();
                if !subs.is_empty() {
                    bail!(
                        "{key} defines subpackages, each its own image: name one of {}",
                        subs.join(", ")
                    );
                }
                bail!(
                    "no package {name:?} in {} (expected <stage>-<name>, e.g. core-busybox)",
                    self.root.display()
                )
            }
            many => bail!(
                "package name {name:?} is ambiguous: {}; use <stage>-<name>",
                many.iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The images a definition makes: itself, or one per subpackage
/// (`<stage>-<sub>`, built with `--target package-<sub>`, version, sources
/// and dependencies inherited), as StageX's targets.py does.
/// An image never depends on itself.
pub fn expand_subpackages(mut definition: Package) -> Vec<Package> {
    if definition.subpackages.is_empty() {
        definition.deps.remove(&definition.id);
        return vec![definition];
    }
    definition
        .subpackages
        .iter()
        .map(|sub| {
            let mut image = definition.clone();
            image.id = format!("{}-{sub}", definition.stage);
            image.origin = Some(definition.id.clone());
            image.target = Some(format!("package-{sub}"));
            image.subpackages = Vec::new();
            image.deps.remove(&image.id);
            image
        })
        .collect()
}

fn insert_unique(packages: &mut BTreeMap<String, Package>, image: Package) -> Result<()> {
    if let Some(other) = packages.get(&image.id) {
        let what = |p: &Package| match &p.origin {
            Some(origin) => format!("a subpackage of {origin} ({})", p.toml_path.display()),
            None => format!("the package in {}", p.toml_path.display()),
        };
        bail!(
            "two images are named {}: {} and {}; rename one of them",
            image.id,
            what(other),
            what(&image)
        );
    }
    packages.insert(image.id.clone(), image);
    Ok(())
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_type()?.is_dir() && !entry.file_name().to_string_lossy().starts_with('.') {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4";

    fn parse(text: &str) -> Result<Package> {
        parse_package(
            Path::new("/p/core/busybox/package.toml"),
            text,
            "core",
            "busybox",
        )
    }

    #[test]
    fn busybox_example_resolves() {
        let p = parse(&format!(
            "[package]\nname = \"busybox\"\nversion = \"1.37.0\"\nlicense = \"GPL-2.0-only\"\n\n[sources.busybox]\nhash = \"{HASH}\"\nformat = \"tar.bz2\"\nfile = \"busybox-{{version}}.{{format}}\"\nmirrors = [\"https://example.invalid/downloads/{{file}}\"]\n"
        ))
        .unwrap();
        assert_eq!(p.id, "core-busybox");
        let s = p.resolved_sources().unwrap();
        assert_eq!(s[0].file, "busybox-1.37.0.tar.bz2");
        assert_eq!(
            s[0].urls[0],
            "https://example.invalid/downloads/busybox-1.37.0.tar.bz2"
        );
    }

    #[test]
    fn default_file_is_last_url_segment() {
        let p = parse(&format!(
            "[package]\nname = \"go\"\nversion = \"1.2.3\"\n[sources.go]\nhash = \"{HASH}\"\nmirrors = [\"https://example.invalid/dl/go{{version}}.src.tar.gz\"]\n"
        ))
        .unwrap();
        assert_eq!(p.resolved_sources().unwrap()[0].file, "go1.2.3.src.tar.gz");
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            ("[package]\nname = \"x\"\nversion = \"1\"\n[sources.a]\nmirrors = [\"https://e.invalid/a\"]\n".to_string(), "hash"),
            ("[package]\nname = \"x\"\nversion = \"1\"\n[sources.a]\nhash = \"abc\"\nmirrors = [\"https://e.invalid/a\"]\n".to_string(), "sources.a.hash"),
            (format!("[package]\nname = \"x\"\nversion = \"1\"\n[sources.a]\nhash = \"{HASH}\"\nmirrors = [\"https://e.invalid/{{nope}}\"]\n"), "sources.a.mirrors[0]"),
            ("[package]\nname = \"x\"\nversion = \"1\"\nversion_from = \"core-y\"\n".to_string(), "version_from"),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains("/p/core/busybox/package.toml"), "{err}");
            assert!(err.contains(field), "expected {field} in: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_listed_not_errors() {
        let text = format!(
            "[package]\nname = \"x\"\nversoin = \"2\"\nversion = \"1\"\nlicenses = \"MIT\"\n\
             [maintainers]\nlead = \"a\"\n[sources.a]\nhash = \"{HASH}\"\nmirrors = [\"https://e.invalid/a\"]\nsize = 3\n\
             [native]\n[[native.file]]\npath = \"/a\"\ncontent = \"\"\nowner = 0\n"
        );
        let path = Path::new("/p/core/x/package.toml");
        let (package, unknown) = parse_package_lenient(path, &text, "core", "x").unwrap();
        assert_eq!(package.version.as_deref(), Some("1"));
        assert_eq!(package.license, None, "`licenses` is not read as `license`");
        let unknown: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        let file = "/p/core/x/package.toml";
        assert_eq!(
            unknown,
            [
                format!("{file}:3: unknown field `package.versoin` (did you mean `version`?)"),
                format!("{file}:5: unknown field `package.licenses` (did you mean `license`?)"),
                format!("{file}:6: unknown table `maintainers`"),
                format!("{file}:11: unknown field `sources.a.size`"),
                format!("{file}:16: unknown field `native.file[0].owner`"),
            ]
        );
    }

    #[test]
    fn image_paths_are_normalized() {
        assert_eq!(
            normalize_image_path("/etc//passwd").as_deref(),
            Some("etc/passwd")
        );
        assert_eq!(normalize_image_path("a/../b"), None);
        assert_eq!(normalize_image_path("/"), None);
    }
}
