//! Pallet definitions (`pallets/<name>.toml`): parsing, validation and
//! expansion into an ordered plan. Pure: the only I/O is `Catalog::load`,
//! which reads the directory. The file format is documented in
//! `pallets/README.md`.
//!
//! Expansion semantics (the same as the Containerfiles they replace):
//! a pallet is its base (a pallet, a package image, or `scratch`) followed by
//! its packages in order (a package that is itself a pallet contributes its
//! files only, as `COPY --from=pallet-x . /` did), then its single-file
//! copies, then its links. Config (env, entrypoint, cmd, user, workdir) comes
//! from the base chain only: the base image's config is inherited and every
//! pallet on the chain applies its directives in order. An expression
//! `a+b+c` behaves as a pallet with base `a` and packages `b`, `c`.
//! Duplicated packages keep their first position.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::expr::{valid_name, Expr, ItemRef};
use crate::oci::config::RunConfig;
use crate::unknown_fields::{self, fields_of, Segment, UnknownField};

/// The placeholder replaced by `uname -m` of the target platform.
pub const ARCH_PLACEHOLDER: &str = "{arch}";

#[derive(Debug, Deserialize)]
struct PalletFile {
    #[serde(default)]
    description: Option<String>,
    base: String,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    copy: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    link: Vec<Link>,
}

/// What a `[[link]]` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A directory (and its parents), mode 0755.
    Dir,
    /// A symbolic link at `path` pointing to `target` (kept verbatim).
    Symlink,
    /// A hard link at `path` to the file at absolute `target`.
    Hardlink,
}

/// One `[[link]]` entry; `path`/`target` may hold `{arch}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Link {
    pub kind: LinkKind,
    pub path: String,
    #[serde(default)]
    pub target: Option<String>,
}

impl Link {
    /// The link with `{arch}` replaced by `arch` (e.g. `x86_64`).
    pub fn for_arch(&self, arch: &str) -> Link {
        Link {
            kind: self.kind,
            path: self.path.replace(ARCH_PLACEHOLDER, arch),
            target: self
                .target
                .as_ref()
                .map(|t| t.replace(ARCH_PLACEHOLDER, arch)),
        }
    }
}

/// A single-file copy: `from:source -> path`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileCopy {
    pub from: ItemRef,
    pub source: String,
    pub path: String,
}

impl FileCopy {
    /// Parses `core-bash:/bin/bash -> /bin/sh` (a tag goes before the path:
    /// `core-bash:5.2:/bin/bash -> /bin/sh`).
    pub fn parse(text: &str) -> Result<FileCopy> {
        let (left, path) = text
            .split_once("->")
            .ok_or_else(|| anyhow!("copy {text:?}: expected 'package:/source -> /dest'"))?;
        let (from, source) = left
            .trim()
            .split_once(":/")
            .ok_or_else(|| anyhow!("copy {text:?}: expected 'package:/source' before '->'"))?;
        let copy = FileCopy {
            from: from.parse().with_context(|| format!("copy {text:?}"))?,
            source: format!("/{source}"),
            path: path.trim().to_string(),
        };
        check_abs_path(&copy.source).with_context(|| format!("copy {text:?}"))?;
        check_abs_path(&copy.path).with_context(|| format!("copy {text:?}"))?;
        Ok(copy)
    }
}

/// Where a pallet starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// Another pallet (by its short name, e.g. `clang`).
    Pallet(String),
    /// A package image whose files and config are inherited.
    Image(ItemRef),
}

/// One parsed pallet definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pallet {
    /// Short name (the file stem): `rust` for `pallets/rust.toml`.
    pub name: String,
    pub description: Option<String>,
    pub base: Base,
    /// Packages in order; a name `pallet-x` refers to the pallet `x`.
    pub packages: Vec<ItemRef>,
    pub copies: Vec<FileCopy>,
    /// Env directives `(name, value)` in order; values may use `${VAR}`.
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub links: Vec<Link>,
}

/// The short pallet name an item refers to, if it is spelled as a pallet
/// image (`pallet-rust` -> `rust`).
fn pallet_short(name: &str) -> Option<&str> {
    name.strip_prefix("pallet-")
}

fn check_abs_path(path: &str) -> Result<()> {
    if !path.starts_with('/') || path == "/" {
        bail!("path {path:?} must be absolute and not '/'");
    }
    for part in path[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." {
            bail!("path {path:?} must be normalized (no empty, '.' or '..' components)");
        }
    }
    let stripped = path.replace(ARCH_PLACEHOLDER, "");
    if stripped.contains('{') || stripped.contains('}') {
        bail!("path {path:?}: the only placeholder is {ARCH_PLACEHOLDER}");
    }
    Ok(())
}

fn check_link(link: &Link) -> Result<()> {
    check_abs_path(&link.path)?;
    match (link.kind, &link.target) {
        (LinkKind::Dir, None) => Ok(()),
        (LinkKind::Dir, Some(_)) => bail!("a dir link takes no target"),
        (LinkKind::Symlink, Some(target)) if !target.is_empty() && !target.contains('\0') => {
            let stripped = target.replace(ARCH_PLACEHOLDER, "");
            if stripped.contains('{') || stripped.contains('}') {
                bail!("target {target:?}: the only placeholder is {ARCH_PLACEHOLDER}");
            }
            Ok(())
        }
        (LinkKind::Hardlink, Some(target)) => {
            check_abs_path(target)?;
            if target == &link.path {
                bail!("a hard link cannot point to itself");
            }
            Ok(())
        }
        (_, _) => bail!("a {:?} link needs a non-empty target", link.kind),
    }
}

fn parse_env(entry: &str) -> Result<(String, String)> {
    let (name, value) = entry
        .split_once('=')
        .ok_or_else(|| anyhow!("env {entry:?}: expected NAME=value"))?;
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("env {entry:?}: bad variable name {name:?}");
    }
    Ok((name.to_string(), value.to_string()))
}

/// Expands `${VAR}`, `$VAR`, `${VAR:-default}` and `${VAR:+alt}` against
/// `lookup`; `\$` is a literal dollar. Unset variables expand to "".
pub fn expand_vars(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::new();
    let mut chars = value.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' if chars.peek().map(|p| p.1) == Some('$') => {
                out.push('$');
                chars.next();
            }
            '$' => match chars.peek().map(|p| p.1) {
                Some('{') => {
                    chars.next();
                    let mut inner = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        inner.push(c);
                    }
                    if !closed {
                        bail!("{value:?}: unterminated '${{'");
                    }
                    let (name, op, word) = if let Some((n, w)) = inner.split_once(":-") {
                        (n, "-", w)
                    } else if let Some((n, w)) = inner.split_once(":+") {
                        (n, "+", w)
                    } else {
                        (inner.as_str(), "", "")
                    };
                    let current = lookup(name).filter(|v| !v.is_empty());
                    match op {
                        "-" => out.push_str(current.as_deref().unwrap_or(word)),
                        "+" => out.push_str(if current.is_some() { word } else { "" }),
                        _ => out.push_str(current.as_deref().unwrap_or("")),
                    }
                }
                Some(n) if n.is_ascii_alphabetic() || n == '_' => {
                    let mut name = String::new();
                    while let Some(&(_, n)) = chars.peek() {
                        if n.is_ascii_alphanumeric() || n == '_' {
                            name.push(n);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push_str(&lookup(&name).unwrap_or_default());
                }
                _ => out.push('$'),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

impl Pallet {
    /// Parses one definition; `name` is the file stem.
    pub fn parse(name: &str, text: &str) -> Result<Pallet> {
        let path = format!("{name}.toml");
        Pallet::parse_lenient(name, Path::new(&path), text).map(|(pallet, _)| pallet)
    }

    /// `parse`, also listing the keys the file at `path` carries that
    /// this version does not know (ignored).
    pub fn parse_lenient(
        name: &str,
        path: &Path,
        text: &str,
    ) -> Result<(Pallet, Vec<UnknownField>)> {
        if !valid_name(name) || name.starts_with("pallet-") {
            bail!("pallet file name {name:?}: use the short name (rust.toml for pallet-rust)");
        }
        let (file, unknown): (PalletFile, _) =
            unknown_fields::from_str(path, text, known_fields).context("invalid pallet TOML")?;
        let base = match file.base.as_str() {
            "scratch" => Base::Scratch,
            other => {
                let item: ItemRef = other.parse().context("field base")?;
                match pallet_short(&item.name) {
                    Some(short) => {
                        if item.tag.is_some() || item.digest.is_some() {
                            bail!("field base: a pallet base {other:?} takes no tag or digest");
                        }
                        Base::Pallet(short.to_string())
                    }
                    None => Base::Image(item),
                }
            }
        };
        let packages = file
            .packages
            .iter()
            .map(|p| p.parse().with_context(|| format!("field packages: {p:?}")))
            .collect::<Result<Vec<ItemRef>>>()?;
        let copies = file
            .copy
            .iter()
            .map(|c| FileCopy::parse(c).context("field copy"))
            .collect::<Result<Vec<_>>>()?;
        let env = file
            .env
            .iter()
            .map(|e| parse_env(e).context("field env"))
            .collect::<Result<Vec<_>>>()?;
        for (i, link) in file.link.iter().enumerate() {
            check_link(link).with_context(|| format!("[[link]] #{} ({:?})", i + 1, link.path))?;
        }
        if let Some(workdir) = &file.workdir {
            if !workdir.starts_with('/') {
                bail!("field workdir: {workdir:?} must be absolute");
            }
        }
        let pallet = Pallet {
            name: name.to_string(),
            description: file.description,
            base,
            packages,
            copies,
            env,
            entrypoint: file.entrypoint,
            cmd: file.cmd,
            user: file.user,
            workdir: file.workdir,
            links: file.link,
        };
        Ok((pallet, unknown))
    }
}

/// The field names a pallet file knows in the table at `path`.
fn known_fields(path: &[Segment]) -> &'static [&'static str] {
    match path {
        [] => fields_of::<PalletFile>(),
        [Segment::Key(k), Segment::Index(_)] if k == "link" => fields_of::<Link>(),
        _ => &[],
    }
}

/// An ordered step of an expanded pallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every layer of a package image, in order.
    Package(ItemRef),
    /// A single file taken from another image (which adds no other files).
    Copy { pallet: String, copy: FileCopy },
    /// The links of one pallet (with `{arch}` not yet replaced).
    Links { pallet: String, links: Vec<Link> },
}

/// The config of the composed image, before the inherited env is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigPlan {
    /// The package image whose config is inherited (the bottom of the base
    /// chain), if any.
    pub inherit: Option<ItemRef>,
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
}

impl ConfigPlan {
    /// Applies the directives over the inherited run config: env values are
    /// expanded in order against the env built so far. Setting an
    /// entrypoint resets an inherited cmd (as in a Containerfile).
    pub fn apply(&self, inherited: &RunConfig) -> Result<RunConfig> {
        let mut run = inherited.clone();
        for (name, value) in &self.env {
            let expanded = expand_vars(value, |n| run.env_var(n).map(str::to_string))
                .with_context(|| format!("env {name}"))?;
            run.set_env_var(name, &expanded);
        }
        if let Some(entrypoint) = &self.entrypoint {
            run.entrypoint = Some(entrypoint.clone());
            run.cmd = None;
        }
        if let Some(cmd) = &self.cmd {
            run.cmd = Some(cmd.clone());
        }
        if let Some(user) = &self.user {
            run.user = Some(user.clone());
        }
        if let Some(workdir) = &self.workdir {
            run.working_dir = Some(workdir.clone());
        }
        Ok(run)
    }
}

/// The expansion of an expression: ordered steps and the config plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub config: ConfigPlan,
}

impl Plan {
    /// Every image reference that must be resolved, first use first.
    pub fn references(&self) -> Vec<ItemRef> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut add = |r: &ItemRef| {
            if seen.insert(r.clone()) {
                out.push(r.clone());
            }
        };
        if let Some(inherit) = &self.config.inherit {
            add(inherit);
        }
        for step in &self.steps {
            match step {
                Step::Package(r) => add(r),
                Step::Copy { copy, .. } => add(&copy.from),
                Step::Links { .. } => {}
            }
        }
        out
    }
}

/// All pallet definitions, by short name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub pallets: BTreeMap<String, Pallet>,
    /// Keys the pallet files carry that this version does not know
    /// (ignored; the CLI warns, or `lint` refuses).
    pub unknown_fields: Vec<UnknownField>,
}

impl Catalog {
    /// Reads every `*.toml` in `dir` (README and other files are ignored)
    /// and validates the set.
    pub fn load(dir: &Path) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        catalog.read_toml_dir(dir)?;
        catalog
            .validate(None)
            .with_context(|| format!("pallet definitions in {}", dir.display()))?;
        Ok(catalog)
    }

    /// The pallets of a StageX tree, `packages/pallet/<name>/Containerfile`
    /// (see `pallet::containerfile`), then `pallets/<name>.toml`: a TOML
    /// file of the same name overrides the Containerfile. Either directory
    /// may be missing.
    pub fn load_with_tree(pallets_dir: &Path, packages_dir: &Path) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        let tree = packages_dir.join("pallet");
        if tree.is_dir() {
            catalog.read_containerfiles(&tree)?;
        }
        if pallets_dir.is_dir() {
            catalog.read_toml_dir(pallets_dir)?;
        }
        catalog.validate(None).with_context(|| {
            format!(
                "pallet definitions in {} and {}",
                tree.display(),
                pallets_dir.display()
            )
        })?;
        Ok(catalog)
    }

    /// Every `<dir>/<name>/Containerfile`, sorted.
    fn read_containerfiles(&mut self, dir: &Path) -> Result<()> {
        for path in sorted_entries(dir)? {
            let file = path.join("Containerfile");
            if !file.is_file() {
                continue;
            }
            let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
            let text =
                fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let pallet = super::containerfile::parse(name, &file.display().to_string(), &text)?;
            self.pallets.insert(pallet.name.clone(), pallet);
        }
        Ok(())
    }

    fn read_toml_dir(&mut self, dir: &Path) -> Result<()> {
        for path in sorted_entries(dir)? {
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let (pallet, unknown) = Pallet::parse_lenient(stem, &path, &text)
                .with_context(|| path.display().to_string())?;
            self.unknown_fields.extend(unknown);
            self.pallets.insert(pallet.name.clone(), pallet);
        }
        Ok(())
    }

    /// Builds a catalog from `(name, toml)` pairs (tests, embedded use).
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        for (name, text) in sources {
            let pallet = Pallet::parse(name, text).with_context(|| format!("pallet {name}"))?;
            catalog.pallets.insert(name.to_string(), pallet);
        }
        catalog.validate(None)?;
        Ok(catalog)
    }

    /// The short pallet name `name` refers to (`rust` or `pallet-rust`).
    pub fn pallet_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        if let Some(short) = pallet_short(name) {
            return self.pallets.contains_key(short).then_some(short);
        }
        self.pallets.contains_key(name).then_some(name)
    }

    /// Checks references between pallets (unknown pallets, cycles of bases
    /// or of pallet packages) and, when `known_packages` is given (names
    /// like `core-busybox`), that every package exists.
    pub fn validate(&self, known_packages: Option<&BTreeSet<String>>) -> Result<()> {
        for pallet in self.pallets.values() {
            let check_item = |item: &ItemRef, field: &str| -> Result<()> {
                if let Some(short) = pallet_short(&item.name) {
                    if !self.pallets.contains_key(short) {
                        bail!(
                            "pallet {}: {field} names unknown pallet {:?} (no pallets/{short}.toml)",
                            pallet.name,
                            item.name
                        );
                    }
                } else if let Some(known) = known_packages {
                    if !known.contains(&item.name) {
                        bail!(
                            "pallet {}: {field} names unknown package {:?} (not in packages/)",
                            pallet.name,
                            item.name
                        );
                    }
                }
                Ok(())
            };
            match &pallet.base {
                Base::Pallet(short) if !self.pallets.contains_key(short) => bail!(
                    "pallet {}: base names unknown pallet \"pallet-{short}\" (no pallets/{short}.toml)",
                    pallet.name
                ),
                Base::Image(item) => check_item(item, "base")?,
                _ => {}
            }
            for item in &pallet.packages {
                check_item(item, "packages")?;
            }
            for copy in &pallet.copies {
                if pallet_short(&copy.from.name).is_some() {
                    bail!(
                        "pallet {}: copy source {:?} must be a package image, not a pallet",
                        pallet.name,
                        copy.from.name
                    );
                }
                check_item(&copy.from, "copy")?;
            }
            self.files_of(&pallet.name, &mut Vec::new(), &mut Vec::new())?;
        }
        Ok(())
    }

    /// Appends the file steps of pallet `name` to `steps`; `stack` holds
    /// the pallets being expanded, for cycle detection.
    fn files_of(&self, name: &str, stack: &mut Vec<String>, steps: &mut Vec<Step>) -> Result<()> {
        if let Some(at) = stack.iter().position(|s| s == name) {
            let mut cycle: Vec<String> = stack[at..].to_vec();
            cycle.push(name.to_string());
            bail!(
                "cycle of pallets: {} (a pallet cannot include itself through base or packages)",
                cycle.join(" -> ")
            );
        }
        let pallet = self
            .pallets
            .get(name)
            .ok_or_else(|| anyhow!("unknown pallet {name:?}"))?;
        stack.push(name.to_string());
        match &pallet.base {
            Base::Scratch => {}
            Base::Pallet(base) => self.files_of(base, stack, steps)?,
            Base::Image(item) => steps.push(Step::Package(item.clone())),
        }
        for item in &pallet.packages {
            match pallet_short(&item.name) {
                Some(short) => self.files_of(short, stack, steps)?,
                None => steps.push(Step::Package(item.clone())),
            }
        }
        for copy in &pallet.copies {
            steps.push(Step::Copy {
                pallet: name.to_string(),
                copy: copy.clone(),
            });
        }
        if !pallet.links.is_empty() {
            steps.push(Step::Links {
                pallet: name.to_string(),
                links: pallet.links.clone(),
            });
        }
        stack.pop();
        Ok(())
    }

    /// The config plan of pallet `name`: inherited image + directives of
    /// every pallet down the base chain, bottom first.
    fn config_of(&self, name: &str, depth: usize) -> Result<ConfigPlan> {
        if depth > self.pallets.len() {
            bail!("cycle of pallet bases through {name:?}");
        }
        let pallet = &self.pallets[name];
        let mut plan = match &pallet.base {
            Base::Scratch => ConfigPlan::default(),
            Base::Pallet(base) => self.config_of(base, depth + 1)?,
            Base::Image(item) => ConfigPlan {
                inherit: Some(item.clone()),
                ..ConfigPlan::default()
            },
        };
        plan.env.extend(pallet.env.iter().cloned());
        if pallet.entrypoint.is_some() {
            plan.entrypoint = pallet.entrypoint.clone();
            plan.cmd = None;
        }
        if pallet.cmd.is_some() {
            plan.cmd = pallet.cmd.clone();
        }
        if pallet.user.is_some() {
            plan.user = pallet.user.clone();
        }
        if pallet.workdir.is_some() {
            plan.workdir = pallet.workdir.clone();
        }
        Ok(plan)
    }

    /// Expands an expression into ordered, de-duplicated steps and a config
    /// plan. The first item plays the base: its config is the image's.
    pub fn expand(&self, expr: &Expr) -> Result<Plan> {
        let mut steps = Vec::new();
        let mut config = None;
        for item in &expr.items {
            let pallet = self.pallet_name(&item.name);
            if pallet_short(&item.name).is_some() && pallet.is_none() {
                bail!("unknown pallet {:?} (no such file in pallets/)", item.name);
            }
            match pallet {
                Some(short) => {
                    if item.tag.is_some() || item.digest.is_some() {
                        bail!("{item}: a pallet takes no tag or digest (pin its packages instead)");
                    }
                    self.files_of(short, &mut Vec::new(), &mut steps)?;
                    if config.is_none() {
                        config = Some(self.config_of(short, 0)?);
                    }
                }
                None => {
                    steps.push(Step::Package(item.clone()));
                    if config.is_none() {
                        config = Some(ConfigPlan {
                            inherit: Some(item.clone()),
                            ..ConfigPlan::default()
                        });
                    }
                }
            }
        }
        // Union in order: a package (same name and pin) or a pallet's
        // copies/links appear once, at their first position.
        let mut seen_packages = BTreeSet::new();
        let mut seen_extras = BTreeSet::new();
        steps.retain(|step| match step {
            Step::Package(item) => seen_packages.insert(item.clone()),
            Step::Copy { pallet, copy } => {
                seen_extras.insert((pallet.clone(), format!("{copy:?}")))
            }
            Step::Links { pallet, .. } => seen_extras.insert((pallet.clone(), String::new())),
        });
        Ok(Plan {
            steps,
            config: config.unwrap_or_default(),
        })
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = fs::read_dir(dir)
        .with_context(|| format!("reading pallet definitions in {}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    Ok(paths)
}

/// The package image names under a `packages/` tree laid out as
/// `packages/<stage>/<name>/package.toml` -> `<stage>-<name>`. Empty when
/// the directory does not exist.
pub fn known_packages(packages_dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let Ok(stages) = fs::read_dir(packages_dir) else {
        return Ok(names);
    };
    for stage in stages {
        let stage = stage?;
        if !stage.file_type()?.is_dir() {
            continue;
        }
        for package in fs::read_dir(stage.path())? {
            let package = package?;
            if package.path().join("package.toml").is_file() {
                names.insert(format!(
                    "{}-{}",
                    stage.file_name().to_string_lossy(),
                    package.file_name().to_string_lossy()
                ));
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_sources([
            (
                "clang",
                r#"base = "core-profile"
packages = ["core-musl", "core-llvm"]
entrypoint = ["/usr/bin/clang"]"#,
            ),
            (
                "rust",
                r#"base = "pallet-clang"
packages = ["core-rust", "core-musl", "core-busybox"]
entrypoint = ["/usr/bin/cargo"]
env = ["A=1", "B=${A}:${PATH}"]
[[link]]
kind = "dir"
path = "/usr/lib/rustlib/{arch}-unknown-linux-musl/bin/gcc-ld"
[[link]]
kind = "hardlink"
path = "/usr/lib/rustlib/{arch}-unknown-linux-musl/bin/rust-lld"
target = "/bin/lld""#,
            ),
            (
                "gnu",
                r#"base = "scratch"
packages = ["core-make", "pallet-clang"]
copy = ["core-bash:/bin/bash -> /bin/sh"]"#,
            ),
        ])
        .unwrap()
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::Package(i) => i.to_string(),
                Step::Copy { copy, .. } => format!("copy {}", copy.path),
                Step::Links { pallet, .. } => format!("links {pallet}"),
            })
            .collect()
    }

    #[test]
    fn expands_bases_in_order_and_removes_duplicates() {
        let c = catalog();
        let plan = c.expand(&"rust+clang+core-jq".parse().unwrap()).unwrap();
        assert_eq!(
            names(&plan),
            [
                "core-profile",
                "core-musl",
                "core-llvm",
                "core-rust",
                "core-busybox",
                "links rust",
                "core-jq"
            ]
        );
        assert_eq!(plan.config.inherit, Some(ItemRef::named("core-profile")));
        assert_eq!(
            plan.config.entrypoint,
            Some(vec!["/usr/bin/cargo".to_string()])
        );
        let plan = c.expand(&"pallet-gnu".parse().unwrap()).unwrap();
        assert_eq!(
            names(&plan),
            [
                "core-make",
                "core-profile",
                "core-musl",
                "core-llvm",
                "copy /bin/sh"
            ]
        );
        // A pallet used as a package gives files, not config.
        assert_eq!(plan.config, ConfigPlan::default());
        assert_eq!(plan.references().last().unwrap().name, "core-bash");
    }

    #[test]
    fn env_expands_in_order_against_inherited_env() {
        let plan = catalog().expand(&"rust".parse().unwrap()).unwrap();
        let mut inherited = RunConfig::default();
        inherited.set_env_var("PATH", "/bin");
        inherited.cmd = Some(vec!["x".into()]);
        let run = plan.config.apply(&inherited).unwrap();
        assert_eq!(
            run.env.unwrap(),
            ["PATH=/bin", "A=1", "B=1:/bin"].map(String::from).to_vec()
        );
        assert_eq!(run.cmd, None);
    }

    #[test]
    fn variable_expansion_forms() {
        let lookup = |n: &str| (n == "X").then(|| "x".to_string());
        assert_eq!(
            expand_vars("$X-${X}-${Y:-d}-${X:+a}-${Y:+a}-\\$X-$", lookup).unwrap(),
            "x-x-d-a--$X-$"
        );
        assert!(expand_vars("${X", lookup).is_err());
    }

    #[test]
    fn validation_errors_are_clear() {
        let err = |sources: Vec<(&str, &str)>| {
            format!("{:#}", Catalog::from_sources(sources).unwrap_err())
        };
        assert!(err(vec![("a", "base = \"pallet-b\"")]).contains("unknown pallet"));
        let cycle = err(vec![
            ("a", "base = \"pallet-b\""),
            ("b", "packages = [\"pallet-a\"]\nbase = \"scratch\""),
        ]);
        assert!(cycle.contains("cycle of pallets: a -> b -> a"), "{cycle}");
        assert!(err(vec![(
            "a",
            "base = \"scratch\"\n[[link]]\nkind = \"hardlink\"\npath = \"/x\""
        )])
        .contains("needs a non-empty target"));
        assert!(err(vec![(
            "a",
            "base = \"scratch\"\n[[link]]\nkind = \"dir\"\npath = \"/x/../y\""
        )])
        .contains("normalized"));
        assert!(err(vec![(
            "a",
            "base = \"scratch\"\n[[link]]\nkind = \"dir\"\npath = \"/{os}/y\""
        )])
        .contains("placeholder"));
        // Unknown keys are listed, not errors (`lint` makes them errors).
        let text =
            "base = \"scratch\"\npakages = []\n[[link]]\nkind = \"dir\"\npath = \"/x\"\nmode = 1";
        let (_, unknown) = Pallet::parse_lenient("a", Path::new("p/a.toml"), text).unwrap();
        let unknown: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        assert_eq!(
            unknown,
            [
                "p/a.toml:2: unknown field `pakages` (did you mean `packages`?)",
                "p/a.toml:6: unknown field `link[0].mode`",
            ]
        );
        assert!(err(vec![(
            "a",
            "base = \"scratch\"\ncopy = [\"core-bash /bin/bash\"]"
        )])
        .contains("copy"));
        let c = catalog();
        let known: BTreeSet<String> = ["core-profile", "core-musl"].map(String::from).into();
        let e = format!("{:#}", c.validate(Some(&known)).unwrap_err());
        assert!(e.contains("unknown package \"core-llvm\""), "{e}");
        let e = format!(
            "{:#}",
            c.expand(&"pallet-nope".parse().unwrap()).unwrap_err()
        );
        assert!(e.contains("unknown pallet"), "{e}");
    }

    #[test]
    fn links_take_the_arch() {
        let c = catalog();
        let link = c.pallets["rust"].links[1].for_arch("x86_64");
        assert_eq!(
            link.path,
            "/usr/lib/rustlib/x86_64-unknown-linux-musl/bin/rust-lld"
        );
        assert_eq!(link.target.as_deref(), Some("/bin/lld"));
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn every_shipped_pallet_parses_and_expands() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pallets");
        let catalog = Catalog::load(&dir).unwrap();
        assert_eq!(catalog.pallets.len(), 20);
        for name in catalog.pallets.keys() {
            let plan = catalog.expand(&name.parse().unwrap()).unwrap();
            assert!(!plan.steps.is_empty(), "{name}");
        }
        let rust = catalog.expand(&"rust".parse().unwrap()).unwrap();
        assert!(matches!(rust.steps.last(), Some(Step::Links { links, .. }) if links.len() == 7));
        let python = catalog.expand(&"python".parse().unwrap()).unwrap();
        let musl = python
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Package(i) if i.name == "core-musl"))
            .count();
        assert_eq!(musl, 1, "pallet-python lists core-musl twice");
        let go = catalog.expand(&"go".parse().unwrap()).unwrap();
        let mut inherited = RunConfig::default();
        inherited.set_env_var("PATH", "/usr/bin:/bin");
        let run = go.config.apply(&inherited).unwrap();
        assert_eq!(run.env_var("PATH"), Some("/cache/go/bin:/usr/bin:/bin"));
        assert_eq!(run.env_var("GO_LDFLAGS"), Some("-w -s -buildid="));
    }
}
