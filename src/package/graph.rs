//! The dependency graph between packages: which `stagex/<stage>-<name>`
//! images a Containerfile uses (`FROM`, `COPY --from=`, `RUN --mount=from=`)
//! or a native package declares (`native.base`), and a deterministic
//! topological order with cycles and missing packages reported as chains.
//! Containerfile parsing is pure (text in, references out); `instructions`
//! is the crate's one Containerfile line reader (the pallet reader uses it).
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _, Result};

use super::load::PackageTree;
use super::model::{Package, Recipe};

/// What a Containerfile refers to outside itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerfileRefs {
    /// Package ids (`core-busybox`) from `stagex/...` references, sorted.
    pub packages: BTreeSet<String>,
    /// Other images (not `scratch`, not a stage of the same file), sorted.
    pub external: BTreeSet<String>,
}

/// One Containerfile instruction, as `instructions` yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The 1-based line it starts on (for errors naming file and line).
    pub line: usize,
    /// The keyword, upper-cased (`FROM`, `RUN`).
    pub keyword: String,
    /// What follows the keyword, continuations joined, trimmed.
    pub rest: String,
}

/// The one Containerfile reader of the crate (the dependency graph and
/// the pallet reader both use it): joins `\` continuation lines (each
/// line trimmed, joined by one space), drops comments and blank lines
/// between instructions, skips heredoc bodies (`<<EOF` ... `EOF`, in order)
/// and yields each instruction with the line it starts on. A trailing
/// continuation at the end of the text is still an instruction.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    let mut pending: Option<(usize, String)> = None;
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let (start, mut full) = pending.take().unwrap_or((index + 1, String::new()));
        if let Some(body) = trimmed.strip_suffix('\\') {
            full.push_str(body);
            full.push(' ');
            pending = Some((start, full));
            continue;
        }
        full.push_str(trimmed);
        // Skip heredoc bodies, in order.
        for (delim, dash) in heredoc_delimiters(&full) {
            for (_, body) in lines.by_ref() {
                let candidate = if dash {
                    body.trim_start_matches('\t')
                } else {
                    body
                };
                if candidate.trim_end() == delim {
                    break;
                }
            }
        }
        out.push(instruction(start, &full));
    }
    if let Some((start, full)) = pending {
        out.push(instruction(start, &full));
    }
    out
}

fn instruction(line: usize, full: &str) -> Instruction {
    let full = full.trim();
    let (keyword, rest) = full.split_once(char::is_whitespace).unwrap_or((full, ""));
    Instruction {
        line,
        keyword: keyword.to_ascii_uppercase(),
        rest: rest.trim().to_string(),
    }
}

/// `<<EOF`, `<<-EOF`, `<<'EOF'`, `<<"EOF"` markers on an instruction line.
fn heredoc_delimiters(line: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("<<") {
        let mut after = &rest[at + 2..];
        let dash = after.starts_with('-');
        if dash {
            after = &after[1..];
        }
        let word: String = after
            .trim_start_matches(['\'', '"'])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() {
            found.push((word, dash));
        }
        rest = after;
    }
    found
}

/// Substitutes `$NAME` / `${NAME}` / `${NAME:-default}` from `args`.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            if let Some(end) = inner.find('}') {
                let expr = &inner[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                let value = args
                    .get(name)
                    .map(String::as_str)
                    .or(default)
                    .unwrap_or_default();
                out.push_str(value);
                rest = &inner[end + 1..];
                continue;
            }
        }
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(args.get(&name).map(String::as_str).unwrap_or_default());
            rest = &after[name.len()..];
        }
    }
    out.push_str(rest);
    out
}

/// The package id an image reference names, if it is `stagex/...`:
/// `stagex/core-musl:1.2@sha256:..` -> `core-musl`.
pub fn stagex_package_id(image: &str) -> Option<String> {
    let rest = image.strip_prefix("stagex/")?;
    let rest = rest.split('@').next().unwrap_or_default();
    let rest = rest.split(':').next().unwrap_or_default();
    (!rest.is_empty()).then(|| rest.to_string())
}

/// Parses a Containerfile's references to other images.
pub fn containerfile_refs(text: &str) -> ContainerfileRefs {
    let mut refs = ContainerfileRefs::default();
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: BTreeSet<String> = BTreeSet::new();
    let mut seen_from = false;
    let add = |image: &str, stages: &BTreeSet<String>, refs: &mut ContainerfileRefs| {
        let lower = image.to_ascii_lowercase();
        // `fetch` is StageX's named build context holding the sources.
        if image.is_empty() || lower == "scratch" || lower == "fetch" || stages.contains(&lower) {
            return;
        }
        if image.chars().all(|c| c.is_ascii_digit()) {
            return; // `COPY --from=0`: a stage by index
        }
        match stagex_package_id(image) {
            Some(id) => {
                refs.packages.insert(id);
            }
            None => {
                refs.external.insert(image.to_string());
            }
        }
    };
    for Instruction { keyword, rest, .. } in instructions(text) {
        match keyword.as_str() {
            "ARG" if !seen_from => {
                for decl in rest.split_whitespace() {
                    let (name, value) = decl.split_once('=').unwrap_or((decl, ""));
                    args.insert(name.to_string(), value.trim_matches('"').to_string());
                }
            }
            "FROM" => {
                seen_from = true;
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                if let Some(image) = words.first() {
                    add(&substitute(image, &args), &stages, &mut refs);
                }
                if words.len() >= 3 && words[1].eq_ignore_ascii_case("as") {
                    stages.insert(words[2].to_ascii_lowercase());
                }
            }
            "COPY" | "ADD" => {
                for word in rest.split_whitespace() {
                    if let Some(from) = word.strip_prefix("--from=") {
                        add(&substitute(from, &args), &stages, &mut refs);
                    }
                }
            }
            "RUN" => {
                for word in rest.split_whitespace() {
                    if let Some(mount) = word.strip_prefix("--mount=") {
                        for option in mount.split(',') {
                            if let Some(from) = option.strip_prefix("from=") {
                                add(&substitute(from, &args), &stages, &mut refs);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    refs
}

/// The packages a definition needs built first (sorted), read from its Containerfile or `native.base`.
pub fn definition_deps(package: &Package) -> Result<BTreeSet<String>> {
    let mut deps = BTreeSet::new();
    match &package.recipe {
        Some(Recipe::Native(native)) => {
            if let Some(base) = &native.base {
                deps.insert(stagex_package_id(base).unwrap_or_else(|| base.clone()));
            }
        }
        Some(Recipe::Containerfile(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            deps = containerfile_refs(&text).packages;
        }
        None => {}
    }
    Ok(deps)
}

/// The packages a loaded package needs built first (sorted, without
/// itself): what `PackageTree::load` read once per definition.
pub fn package_deps(package: &Package) -> Result<BTreeSet<String>> {
    Ok(package.deps.clone())
}

/// Dependencies of every package in a tree.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub deps: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn from_tree(tree: &PackageTree) -> Result<Graph> {
        let mut deps = BTreeMap::new();
        for (id, package) in &tree.packages {
            deps.insert(id.clone(), package_deps(package)?);
        }
        Ok(Graph { deps })
    }

    /// `roots` and everything they need, dependencies first. Among
    /// independent packages the order is by name, so it is deterministic.
    /// An empty `roots` means every package.
    pub fn build_order(&self, roots: &[String]) -> Result<Vec<String>> {
        let roots: Vec<String> = if roots.is_empty() {
            self.deps.keys().cloned().collect()
        } else {
            roots.to_vec()
        };
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut order = Vec::new();
        for root in &roots {
            let mut chain = Vec::new();
            self.visit(root, &mut chain, &mut done, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        id: &str,
        chain: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if done.contains(id) {
            return Ok(());
        }
        if let Some(at) = chain.iter().position(|c| c == id) {
            let mut cycle = chain[at..].to_vec();
            cycle.push(id.to_string());
            bail!("dependency cycle: {}", cycle.join(" -> "));
        }
        chain.push(id.to_string());
        let Some(deps) = self.deps.get(id) else {
            bail!(
                "missing package {id}: needed by {} (no packages/<stage>/<name>/package.toml defines it)",
                chain.join(" -> ")
            );
        };
        for dep in deps {
            self.visit(dep, chain, done, order)?;
        }
        chain.pop();
        done.insert(id.to_string());
        order.push(id.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_from_copy_and_mount_references() {
        let text = r#"
# syntax=docker/dockerfile:1
ARG BASE=stagex/core-filesystem
FROM stagex/core-busybox AS build
FROM ${BASE}:latest AS fs
COPY --from=stagex/core-musl . /
COPY --from=build /bin/sh /bin/sh
COPY --from=fs / /
COPY --from=fetch . .
COPY --chmod=644 <<-EOF /etc/x
	FROM stagex/core-nothere
	EOF
RUN --mount=type=bind,from=stagex/core-make,target=/m \
    true
COPY --from=stagex/core-zlib@sha256:0000 . /
FROM scratch AS package
COPY --from=0 / /
FROM debian:12
"#;
        let refs = containerfile_refs(text);
        assert_eq!(
            refs.packages.into_iter().collect::<Vec<_>>(),
            [
                "core-busybox",
                "core-filesystem",
                "core-make",
                "core-musl",
                "core-zlib"
            ]
        );
        assert_eq!(refs.external.into_iter().collect::<Vec<_>>(), ["debian:12"]);
    }

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        Graph {
            deps: edges
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    #[test]
    fn order_is_topological_and_deterministic() {
        let g = graph(&[("c", &["a", "b"]), ("b", &["a"]), ("a", &[]), ("d", &[])]);
        assert_eq!(g.build_order(&[]).unwrap(), ["a", "b", "c", "d"]);
        assert_eq!(g.build_order(&["c".into()]).unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn cycles_and_missing_packages_name_the_chain() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        let err = g.build_order(&["a".into()]).unwrap_err().to_string();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
        let g = graph(&[("a", &["b"]), ("b", &["zz"])]);
        let err = g.build_order(&[]).unwrap_err().to_string();
        assert!(
            err.contains("missing package zz") && err.contains("a -> b -> zz"),
            "{err}"
        );
    }
}
