//! Owns: what changed between two releases of the StageX tree, as data:
//! packages added and removed, version changes, rebuilds (same version,
//! another committed digest), subpackage changes of a definition; and the
//! Markdown a release manager pastes into the signed tag. Pure: two
//! snapshots in, `Notes` out.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::snapshot::Snapshot;

/// The changes from one release to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Notes {
    pub from: String,
    pub to: String,
    pub added: Vec<Versioned>,
    pub removed: Vec<Versioned>,
    pub version_changes: Vec<VersionChange>,
    pub rebuilds: Vec<Rebuild>,
    pub subpackage_changes: Vec<SubpackageChange>,
    /// Commit authors between the two refs (git refs only).
    pub authors: Vec<Contributor>,
    /// Valid signatures of the `to` release per trusted maintainer (with
    /// `--lookaside`).
    pub signers: Vec<Contributor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Versioned {
    pub package: String,
    pub version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    pub package: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rebuild {
    pub package: String,
    pub version: Option<String>,
    pub old_digest: String,
    pub new_digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubpackageChange {
    /// The defining package (`core-llvm`).
    pub definition: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// A person and how many commits or signed images they count for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Contributor {
    pub name: String,
    pub count: usize,
}

/// Compares `from` with `to`.
pub fn compare(from: &Snapshot, to: &Snapshot) -> Notes {
    let mut notes = Notes {
        from: from.label.clone(),
        to: to.label.clone(),
        ..Notes::default()
    };
    for (id, new) in &to.packages {
        match from.packages.get(id) {
            None => notes.added.push(Versioned {
                package: id.clone(),
                version: new.version.clone(),
            }),
            Some(old) if old.version != new.version => notes.version_changes.push(VersionChange {
                package: id.clone(),
                old: old.version.clone(),
                new: new.version.clone(),
            }),
            Some(_) => {
                if let Some(rebuild) = rebuild(id, from, to) {
                    notes.rebuilds.push(rebuild);
                }
            }
        }
    }
    notes.removed = from
        .packages
        .iter()
        .filter(|(id, _)| !to.packages.contains_key(*id))
        .map(|(id, old)| Versioned {
            package: id.clone(),
            version: old.version.clone(),
        })
        .collect();
    notes.subpackage_changes = subpackage_changes(from, to);
    notes
}

/// Same version in both, another committed digest in each.
fn rebuild(id: &str, from: &Snapshot, to: &Snapshot) -> Option<Rebuild> {
    let (old, new) = (from.digests.get(id)?, to.digests.get(id)?);
    (old != new).then(|| Rebuild {
        package: id.to_string(),
        version: to.packages[id].version.clone(),
        old_digest: old.to_string(),
        new_digest: new.to_string(),
    })
}

/// For every definition with subpackages in either tree, the images it
/// gained and lost.
fn subpackage_changes(from: &Snapshot, to: &Snapshot) -> Vec<SubpackageChange> {
    let (old, new) = (families(from), families(to));
    let definitions: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let empty = BTreeSet::new();
    definitions
        .into_iter()
        .filter_map(|definition| {
            let (was, is) = (
                old.get(definition).unwrap_or(&empty),
                new.get(definition).unwrap_or(&empty),
            );
            let change = SubpackageChange {
                definition: definition.clone(),
                added: is.difference(was).cloned().collect(),
                removed: was.difference(is).cloned().collect(),
            };
            (!change.added.is_empty() || !change.removed.is_empty()).then_some(change)
        })
        .collect()
}

fn families(snapshot: &Snapshot) -> BTreeMap<String, BTreeSet<String>> {
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, package) in &snapshot.packages {
        if let Some(origin) = &package.origin {
            families
                .entry(origin.clone())
                .or_default()
                .insert(id.clone());
        }
    }
    families
}

/// The notes as Markdown for a signed tag's message.
pub fn markdown(notes: &Notes) -> String {
    let mut out = format!("# StageX {}\n\nChanges since {}.\n", notes.to, notes.from);
    let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "latest".to_string());
    section(
        &mut out,
        "Added",
        notes
            .added
            .iter()
            .map(|p| format!("`{}` {}", p.package, version(&p.version))),
    );
    section(
        &mut out,
        "Removed",
        notes
            .removed
            .iter()
            .map(|p| format!("`{}` {}", p.package, version(&p.version))),
    );
    section(
        &mut out,
        "Updated",
        notes
            .version_changes
            .iter()
            .map(|c| format!("`{}` {} → {}", c.package, version(&c.old), version(&c.new))),
    );
    section(
        &mut out,
        "Rebuilt (same version, new digest)",
        notes.rebuilds.iter().map(|r| {
            format!(
                "`{}` {}: `{}` → `{}`",
                r.package,
                version(&r.version),
                short(&r.old_digest),
                short(&r.new_digest)
            )
        }),
    );
    section(
        &mut out,
        "Subpackages",
        notes.subpackage_changes.iter().map(|c| {
            let mut parts = Vec::new();
            if !c.added.is_empty() {
                parts.push(format!("added {}", c.added.join(", ")));
            }
            if !c.removed.is_empty() {
                parts.push(format!("removed {}", c.removed.join(", ")));
            }
            format!("`{}`: {}", c.definition, parts.join("; "))
        }),
    );
    section(
        &mut out,
        "Code contributors",
        notes
            .authors
            .iter()
            .map(|a| format!("{} ({} commits)", a.name, a.count)),
    );
    section(
        &mut out,
        "Signers of this release",
        notes
            .signers
            .iter()
            .map(|s| format!("{} ({} images)", s.name, s.count)),
    );
    out
}

fn section(out: &mut String, title: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        return;
    }
    out.push_str(&format!("\n## {title} ({})\n\n", items.len()));
    for item in items {
        out.push_str(&format!("- {item}\n"));
    }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
