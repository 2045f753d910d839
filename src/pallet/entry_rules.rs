//! Owns: whether a package layer may be composed into a pallet, by the same
//! entry rules extraction and `--flatten` apply (`layer::rules`):
//! - the layer standing alone: the verdict its index recorded when it was
//!   made (absolute paths, writes through its own symlinks, hard links to
//!   targets it does not hold, to directories or to `/etc/passwd`, device
//!   nodes and fifos), so a layer is checked once, not on every compose;
//! - the layer over what is below it in the pallet: no entry may be written
//!   through a symlink another package (or an earlier layer) left there.
//!
//! A refusal is an `UnusableLayer`, naming the package, the layer digest
//! and the entry. Special files (device nodes, fifos) are refused unless
//! the caller allows them (`stagex pallet --allow-special-files`).
use crate::layer::reader::{EntryType, LayerEntry, LayerIndex};
use crate::layer::rules::{check_parents, Finding, Node, SpecialFiles, TreeView};
use crate::oci::digest::Digest;

/// A package layer the composer refuses.
#[derive(Debug, thiserror::Error)]
#[error(
    "package {package}: layer {layer} cannot be composed: {finding}{more}; {fix}",
    more = more(*.total),
    fix = fix(&self.finding)
)]
pub struct UnusableLayer {
    /// `name@sha256:…` of the package image.
    pub package: String,
    pub layer: Digest,
    /// The first offending entry.
    pub finding: Box<Finding>,
    /// How many entries of the layer break the same class of rule.
    pub total: u64,
}

fn more(total: u64) -> String {
    match total {
        0 | 1 => String::new(),
        n => format!(" (and {} more such entries)", n - 1),
    }
}

fn fix(finding: &Finding) -> &'static str {
    if finding.violation.is_special_file() {
        "pass --allow-special-files to compose device nodes and fifos anyway"
    } else {
        "rebuild the package so that its layers hold only safe entries"
    }
}

/// Refuses a layer whose index verdict is not clean under `special`.
pub fn check_verdict(
    package: &str,
    layer: &Digest,
    index: &LayerIndex,
    special: SpecialFiles,
) -> Result<(), UnusableLayer> {
    match index.verdict.refusal(special) {
        None => Ok(()),
        Some((finding, total)) => Err(UnusableLayer {
            package: package.to_string(),
            layer: layer.clone(),
            finding: Box::new(finding.clone()),
            total,
        }),
    }
}

/// The node a (hard-link-resolved) index entry leaves at its path, for
/// the composer's view of the tree below a layer.
pub fn node_of(entry: &LayerEntry) -> Node {
    match entry.kind {
        EntryType::Directory => Node::Directory,
        EntryType::File | EntryType::HardLink => Node::File,
        EntryType::Symlink => Node::Symlink {
            target: entry.link_target.clone().unwrap_or_default(),
        },
        _ => Node::Other,
    }
}

/// Refuses an entry whose parents, in `view`, are not all directories.
pub fn check_over_below(
    package: &str,
    layer: &Digest,
    entry: &LayerEntry,
    view: &dyn TreeView,
) -> Result<(), UnusableLayer> {
    check_parents(&entry.path, view).map_err(|violation| UnusableLayer {
        package: package.to_string(),
        layer: layer.clone(),
        finding: Box::new(Finding {
            path: entry.path.clone(),
            violation,
        }),
        total: 1,
    })
}
