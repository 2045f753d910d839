//! Owns: what `stagex pallet --list` and `stagex pallet EXPR --dry-run`
//! report, computed from a `ReleaseCatalog` alone: the pallets with their
//! packages, and an expression's pinned package list with the conflicts
//! the catalog already shows (two pins of one package, the config of a
//! later pallet that is not used). Pure: no store, no network; the output
//! is stable (definition and plan order, no times).
use std::collections::BTreeMap;

use serde::Serialize;

use super::catalog::{Origin, Pinning, ReleaseCatalog};
use super::definition::{Base, ConfigPlan, Plan, Step};
use super::expr::{Expr, ItemRef};
use anyhow::Result;

/// `stagex pallet --list`.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    pub release: Option<String>,
    pub origin: Origin,
    pub pinning: Pinning,
    /// How many packages the release's digests pin.
    pub digests: usize,
    pub pallets: Vec<ListedPallet>,
    /// Pallet -> its packages the digests do not pin (only when pinning
    /// by release: such a pallet cannot be composed without --latest).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub undigested: BTreeMap<String, Vec<String>>,
}

/// One pallet of the listing.
#[derive(Clone, Debug, Serialize)]
pub struct ListedPallet {
    pub name: String,
    /// The published image (`pallet-rust`).
    pub image: String,
    pub base: String,
    pub entrypoint: Option<Vec<String>>,
    /// Every package it is made of, in composition order.
    pub packages: Vec<String>,
}

/// The listing of `catalog`, pallets by name.
pub fn listing(catalog: &ReleaseCatalog) -> Result<Listing> {
    let mut pallets = Vec::new();
    for (name, pallet) in &catalog.definitions.pallets {
        let plan = catalog.definitions.expand(&single(name))?;
        pallets.push(ListedPallet {
            name: name.clone(),
            image: format!("pallet-{name}"),
            base: match &pallet.base {
                Base::Scratch => "scratch".to_string(),
                Base::Pallet(base) => format!("pallet-{base}"),
                Base::Image(item) => item.to_string(),
            },
            entrypoint: plan.config.entrypoint.clone(),
            packages: plan.references().into_iter().map(|i| i.name).collect(),
        });
    }
    Ok(Listing {
        release: catalog.release.clone(),
        origin: catalog.origin.clone(),
        pinning: catalog.pinning,
        digests: catalog.digests.len(),
        pallets,
        undigested: match catalog.pinning {
            Pinning::Release => catalog.undigested_packages(),
            _ => BTreeMap::new(),
        },
    })
}

fn single(name: &str) -> Expr {
    Expr {
        items: vec![ItemRef::named(name)],
    }
}

/// `stagex pallet EXPR --dry-run`.
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    pub expression: String,
    pub release: Option<String>,
    pub origin: Origin,
    pub pinning: Pinning,
    /// True when every package is resolved by digest.
    pub pinned: bool,
    pub packages: Vec<PlannedPackage>,
    /// Single-file copies, `from:source -> path`.
    pub copies: Vec<String>,
    /// Pallets whose links (directories, hard and symbolic links) are made.
    pub links: Vec<String>,
    /// The image's entrypoint (from the first item).
    pub entrypoint: Option<Vec<String>>,
    pub conflicts: Vec<KnownConflict>,
}

/// One package as it will be resolved.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedPackage {
    pub name: String,
    /// Where it is read from, with its pin (`HOST/NS/core-rust@sha256:…`).
    pub reference: String,
    /// `release` (the catalog's digest), `as-written` (a pin in the
    /// expression or definition), `tag` (resolved now, not pinned).
    pub pin: &'static str,
    /// The expression items that bring it.
    pub from: Vec<String>,
}

/// A conflict visible in the catalog before any image is read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KnownConflict {
    /// `two-pins` or `config-not-used`.
    pub kind: &'static str,
    pub items: Vec<String>,
    pub detail: String,
}

/// The dry run of `expression` (already name-checked) whose pinned plan is
/// `plan`; `locate` gives an image's location on the source.
pub fn dry_run(
    catalog: &ReleaseCatalog,
    expression: &str,
    plan: &Plan,
    locate: &dyn Fn(&str) -> String,
) -> Result<DryRun> {
    let expr: Expr = expression.parse()?;
    let per_item: Vec<(String, Plan)> = expr
        .items
        .iter()
        .map(|item| {
            let alone = Expr {
                items: vec![item.clone()],
            };
            Ok((item.to_string(), catalog.definitions.expand(&alone)?))
        })
        .collect::<Result<_>>()?;
    let packages: Vec<PlannedPackage> = plan
        .references()
        .into_iter()
        .map(|item| PlannedPackage {
            name: item.name.clone(),
            reference: format!("{}{}", locate(&item.name), pin_suffix(&item)),
            pin: pin_kind(catalog, &item),
            from: per_item
                .iter()
                .filter(|(_, p)| p.references().iter().any(|r| r.name == item.name))
                .map(|(text, _)| text.clone())
                .collect(),
        })
        .collect();
    let mut conflicts = two_pins(&packages);
    conflicts.extend(unused_configs(&per_item, &plan.config));
    Ok(DryRun {
        expression: expression.to_string(),
        release: catalog.release.clone(),
        origin: catalog.origin.clone(),
        pinning: catalog.pinning,
        pinned: packages.iter().all(|p| p.reference.contains('@')),
        packages,
        copies: plan.steps.iter().filter_map(copy_text).collect(),
        links: plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Links { pallet, .. } => Some(pallet.clone()),
                _ => None,
            })
            .collect(),
        entrypoint: plan.config.entrypoint.clone(),
        conflicts,
    })
}

fn pin_suffix(item: &ItemRef) -> String {
    match (&item.tag, &item.digest) {
        (_, Some(digest)) => format!("@{digest}"),
        (Some(tag), None) => format!(":{tag}"),
        (None, None) => ":latest".to_string(),
    }
}

fn pin_kind(catalog: &ReleaseCatalog, item: &ItemRef) -> &'static str {
    let release = catalog.pinning == Pinning::Release
        && item.tag.is_none()
        && item.digest.is_some()
        && catalog.digests.get(&item.name) == item.digest.as_ref();
    match (release, item.tag.is_some() || item.digest.is_some()) {
        (true, _) => "release",
        (false, true) => "as-written",
        (false, false) => "tag",
    }
}

fn copy_text(step: &Step) -> Option<String> {
    match step {
        Step::Copy { copy, .. } => Some(format!(
            "{}:{} -> {}",
            copy.from.name, copy.source, copy.path
        )),
        _ => None,
    }
}

/// One package name composed at two pins: both go in, the later wins.
fn two_pins(packages: &[PlannedPackage]) -> Vec<KnownConflict> {
    let mut out = Vec::new();
    for (i, package) in packages.iter().enumerate() {
        let first = packages.iter().position(|p| p.name == package.name);
        if first != Some(i) {
            continue;
        }
        let all: Vec<String> = packages
            .iter()
            .filter(|p| p.name == package.name)
            .map(|p| p.reference.clone())
            .collect();
        if all.len() > 1 {
            out.push(KnownConflict {
                kind: "two-pins",
                detail: format!(
                    "{} is composed at {} pins; files of the later one win (pin one)",
                    package.name,
                    all.len()
                ),
                items: all,
            });
        }
    }
    out
}

/// Later items whose own entrypoint or env the image does not take (the
/// config is the first item's).
fn unused_configs(per_item: &[(String, Plan)], used: &ConfigPlan) -> Vec<KnownConflict> {
    let mut out = Vec::new();
    let Some((first, _)) = per_item.first() else {
        return out;
    };
    for (item, plan) in per_item.iter().skip(1) {
        let own = &plan.config;
        let entrypoint_lost = own.entrypoint.is_some() && own.entrypoint != used.entrypoint;
        let env_lost = own.env.iter().any(|e| !used.env.contains(e));
        if entrypoint_lost || env_lost {
            out.push(KnownConflict {
                kind: "config-not-used",
                items: vec![first.clone(), item.clone()],
                detail: format!(
                    "{item}'s {} not used: the image's config is {first}'s (put {item} first to use it)",
                    match (entrypoint_lost, env_lost) {
                        (true, true) => "entrypoint and env are",
                        (true, false) => "entrypoint is",
                        _ => "env is",
                    }
                ),
            });
        }
    }
    out
}
