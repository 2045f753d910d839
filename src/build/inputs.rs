//! Owns: "the same inputs" of a package build, and its record in `out/`.
//! The inputs digest is the sha256 of a small text listing the image name,
//! target, version, platforms, every build argument, every file of the
//! package directory (path and sha256: package.toml, Containerfile,
//! patches...; the `fetch/` copy of the sources is left out, their hashes
//! are in package.toml) and, per dependency, the sha256 of its
//! `out/<dep>/index.json` (which pins the dependency's every byte).
//! A finished build writes it to `out/<id>/.stagex-inputs`; `stagex
//! preseed` writes it too, for an image pulled from a release, with the
//! inputs of the tree's definition and a second line `preseeded-from NS`
//! (where the image came from). A plan entry is up to date when that
//! record equals the digest computed now and every dependency in the plan
//! is up to date too.
//! Must not build, order or schedule anything.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::plan::PlanEntry;
use crate::oci::Digest;
use crate::package::{Package, PackageTree};

/// The record's file name inside `out/<id>/`.
pub const RECORD: &str = ".stagex-inputs";

/// The text whose sha256 is the inputs digest (pure).
pub fn inputs_text(
    entry: &PlanEntry,
    files: &[(String, Digest)],
    deps: &[(String, Digest)],
) -> String {
    let mut text = String::from("stagex-inputs 1\n");
    text.push_str(&format!("name {}\n", entry.name));
    text.push_str(&format!(
        "target {}\n",
        entry.target.as_deref().unwrap_or("-")
    ));
    text.push_str(&format!("version {}\n", entry.version));
    text.push_str(&format!("platforms {}\n", entry.platforms.join(",")));
    for (k, v) in &entry.build_args {
        text.push_str(&format!("arg {k}={v}\n"));
    }
    for (path, digest) in files {
        text.push_str(&format!("file {path} {digest}\n"));
    }
    for (id, digest) in deps {
        text.push_str(&format!("dep {id} {digest}\n"));
    }
    text
}

/// Every file of a package directory (sorted, relative), with its sha256;
/// a symlink counts by its target text.
fn package_files(dir: &Path) -> Result<Vec<(String, Digest)>> {
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == "fetch"));
    for entry in walk {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(dir)?.display().to_string();
        let digest = if entry.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            Digest::of_bytes(target.as_os_str().as_encoded_bytes())
        } else {
            let file = std::fs::File::open(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            Digest::of_reader(std::io::BufReader::new(file))
                .with_context(|| format!("reading {}", entry.path().display()))?
                .0
        };
        files.push((rel, digest));
    }
    Ok(files)
}

/// sha256 of `out/<id>/index.json`, `None` when it is not built.
fn built_digest(out_root: &Path, id: &str) -> Result<Option<Digest>> {
    let path = out_root.join(id).join("index.json");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(Digest::of_bytes(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The inputs digest of a package now; `None` when a dependency is not in
/// `out/` (nothing can be up to date on top of it).
pub fn inputs_digest(
    entry: &PlanEntry,
    package: &Package,
    out_root: &Path,
) -> Result<Option<Digest>> {
    let mut deps = Vec::new();
    for dep in &entry.deps {
        match built_digest(out_root, dep)? {
            Some(d) => deps.push((dep.clone(), d)),
            None => return Ok(None),
        }
    }
    let files = package_files(&package.dir)?;
    Ok(Some(Digest::of_bytes(
        inputs_text(entry, &files, &deps).as_bytes(),
    )))
}

fn record_path(out_root: &Path, id: &str) -> PathBuf {
    out_root.join(id).join(RECORD)
}

/// What `out/<id>/.stagex-inputs` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The inputs digest the image stands for.
    pub inputs: Digest,
    /// Pulled by `stagex preseed` from this namespace, not built here.
    pub preseeded_from: Option<String>,
}

const PRESEEDED_FROM: &str = "preseeded-from ";

/// Parses a record's text (pure): the digest on the first line, then
/// optionally `preseeded-from NS`. Anything else counts as no record (the
/// package is rebuilt).
pub fn parse_record(text: &str) -> Option<Record> {
    let mut lines = text.lines();
    let inputs = Digest::parse(lines.next()?.trim()).ok()?;
    let preseeded_from = match lines.next().map(str::trim) {
        None | Some("") => None,
        Some(line) => Some(line.strip_prefix(PRESEEDED_FROM)?.to_string()),
    };
    Some(Record {
        inputs,
        preseeded_from,
    })
}

/// The record of `out/<id>/`, if any.
pub fn read_record(out_root: &Path, id: &str) -> Option<Record> {
    parse_record(&std::fs::read_to_string(record_path(out_root, id)).ok()?)
}

/// The recorded inputs digest of `out/<id>/`, if any.
pub fn recorded(out_root: &Path, id: &str) -> Option<Digest> {
    read_record(out_root, id).map(|r| r.inputs)
}

/// Writes the record of a finished build (temp file, fsync, rename).
pub fn write_record(out_root: &Path, id: &str, digest: &Digest) -> Result<()> {
    crate::oci::layout::write_atomic(&record_path(out_root, id), format!("{digest}\n").as_bytes())
}

/// Writes the record of an image `stagex preseed` placed from `source`.
pub fn write_preseed_record(
    out_root: &Path,
    id: &str,
    digest: &Digest,
    source: &str,
) -> Result<()> {
    let text = format!("{digest}\n{PRESEEDED_FROM}{source}\n");
    crate::oci::layout::write_atomic(&record_path(out_root, id), text.as_bytes())
}

/// Fills `up_to_date` of every entry of a plan in build order: the record
/// matches and every dependency in the plan is up to date.
pub fn mark_up_to_date(plan: &mut [PlanEntry], tree: &PackageTree, out_root: &Path) -> Result<()> {
    let mut fresh: BTreeMap<String, bool> = BTreeMap::new();
    for entry in plan.iter_mut() {
        let deps_fresh = entry
            .deps
            .iter()
            .all(|d| fresh.get(d).copied().unwrap_or(true));
        let record = read_record(out_root, &entry.name);
        entry.up_to_date = deps_fresh
            && match &record {
                Some(record) => {
                    inputs_digest(entry, tree.get(&entry.name)?, out_root)?.as_ref()
                        == Some(&record.inputs)
                }
                None => false,
            };
        entry.preseeded_from = record
            .and_then(|r| r.preseeded_from)
            .filter(|_| entry.up_to_date);
        fresh.insert(entry.name.clone(), entry.up_to_date);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> PlanEntry {
        PlanEntry {
            name: "core-clang".into(),
            origin: "core-llvm".into(),
            version: "1".into(),
            target: Some("package-clang".into()),
            platforms: vec!["linux/amd64".into()],
            deps: vec!["core-musl".into()],
            build_args: [("VERSION".to_string(), "1".to_string())].into(),
            containerfile: Some("packages/core/llvm/Containerfile".into()),
            up_to_date: false,
            preseeded_from: None,
        }
    }

    #[test]
    fn every_input_changes_the_text() {
        let d = |s: &str| Digest::of_bytes(s.as_bytes());
        let files = vec![("Containerfile".to_string(), d("a"))];
        let deps = vec![("core-musl".to_string(), d("m"))];
        let base = inputs_text(&entry(), &files, &deps);
        let mut e = entry();
        e.build_args.insert("VERSION".into(), "2".into());
        assert_ne!(base, inputs_text(&e, &files, &deps));
        let mut e = entry();
        e.target = None;
        assert_ne!(base, inputs_text(&e, &files, &deps));
        let mut e = entry();
        e.platforms.push("linux/arm64".into());
        assert_ne!(base, inputs_text(&e, &files, &deps));
        assert_ne!(
            base,
            inputs_text(&entry(), &[("Containerfile".into(), d("b"))], &deps)
        );
        assert_ne!(
            base,
            inputs_text(&entry(), &files, &[("core-musl".into(), d("n"))])
        );
        // Where the tree lives and whether it is up to date do not count.
        let mut e = entry();
        e.containerfile = Some("/elsewhere/Containerfile".into());
        e.up_to_date = true;
        e.preseeded_from = Some("127.0.0.1:5000/stagex".into());
        assert_eq!(base, inputs_text(&e, &files, &deps));
    }

    #[test]
    fn a_record_is_a_digest_and_maybe_where_it_was_preseeded_from() {
        let d = Digest::of_bytes(b"x");
        let built = parse_record(&format!("{d}\n")).unwrap();
        assert_eq!(built.inputs, d);
        assert_eq!(built.preseeded_from, None);
        let pulled = parse_record(&format!("{d}\npreseeded-from 127.0.0.1:5000/stagex\n")).unwrap();
        assert_eq!(
            pulled.preseeded_from.as_deref(),
            Some("127.0.0.1:5000/stagex")
        );
        assert_eq!(parse_record("not a digest\n"), None);
        assert_eq!(parse_record(&format!("{d}\nsomething else\n")), None);
    }
}
