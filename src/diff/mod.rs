//! Owns: `stagex diff`'s model (`Cause`, `Level`, `Report`, `DiffError`)
//! and the walk that ties the steps together: two resolved sides (every
//! blob in the store) are compared top down (index, manifest, config,
//! layers, files) and the findings are reported innermost first.
//!
//! The steps, one concern each:
//! - `side`: what A and B name, fetched into the store (verified);
//! - `manifest`: index and manifest fields, platform by platform;
//! - `config`: the field-level JSON diff of the configs;
//! - `layer`: one layer pair classified (identical, compression only,
//!   tar encoding only, different content) and the gzip header fields;
//! - `scan`: a layer's entries with what a diff needs (mtime, xattrs, tar
//!   header format), cached in the store (the one use of the store's
//!   layer index lives there);
//! - `files`: the file-level diff of two scanned layers;
//! - `render`: human text;
//! - `extract`: `--files` (both versions of changed files side by side)
//!   and `--diffoscope`.
pub mod config;
pub mod extract;
pub mod files;
pub mod layer;
pub mod manifest;
pub mod render;
pub mod scan;
pub mod side;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::store::Store;

pub use side::{ResolvedSide, SideSpec};

/// Why a diff could not be made (exit 2): one clear message naming the
/// side, blob or file and what to do.
#[derive(Debug, Error)]
pub enum DiffError {
    #[error("{side}: {spec:?} is not an image reference: {reason}")]
    BadSpec {
        side: &'static str,
        spec: String,
        reason: String,
    },
    #[error("{side} ({spec}) cannot be read: {source:#}")]
    Side {
        side: &'static str,
        spec: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("image {digest}: {source:#}")]
    Image {
        digest: Digest,
        #[source]
        source: anyhow::Error,
    },
    #[error("layer {digest}: {source:#}")]
    Layer {
        digest: Digest,
        #[source]
        source: anyhow::Error,
    },
    #[error(
        "layer {digest} decompresses to {actual}, but its config says diff_id {expected}: \
         the image is corrupt (rebuild or re-pull it)"
    )]
    DiffIdMismatch {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("--files {dir}: {reason}")]
    Files { dir: String, reason: String },
    #[error("--diffoscope: {0}")]
    Diffoscope(String),
}

/// How deep a cause lies: the order is innermost first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// A file (or directory, link...) of a layer.
    File,
    /// The tar bytes of a layer whose files are the same.
    Encoding,
    /// The compressed bytes of a layer whose tar is the same.
    Compression,
    /// The image config.
    Config,
    /// The image manifest (and its list of layers).
    Manifest,
    /// The image index.
    Index,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::File => "file",
            Level::Encoding => "encoding",
            Level::Compression => "compression",
            Level::Config => "config",
            Level::Manifest => "manifest",
            Level::Index => "index",
        }
    }
}

/// One difference found.
#[derive(Clone, Debug, Serialize)]
pub struct Cause {
    pub level: Level,
    /// Where: the platform and layer (`linux/amd64 layer 2`), empty for
    /// a single image's top level.
    pub scope: String,
    /// What differs, stable for machines: `content`, `mtime_only`, `mode`,
    /// `owner`, `added`, `removed`, `type`, `link_target`, `hardlink`,
    /// `xattrs`, `device`, `compression`, `entry_order`, `tar_format`,
    /// `uname_gname`, `padding`, `tar_header`, `field`, `media_type`,
    /// `annotation`, `platform`, `layer_count`, `kind`, `descriptor`,
    /// `digest`.
    pub kind: String,
    /// The file path or JSON field path the cause is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Side A's value (absent: A lacks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Value>,
    /// Side B's value (absent: B lacks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Value>,
    /// Every field that differs, when several do (`content`, `mtime`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// For a summarized cause (`mtime_only`): how many entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For a summarized cause with `--all`: every path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// One human sentence.
    pub detail: String,
    /// True when an inner cause explains this one (a digest that differs
    /// because what it names differs); not counted in the verdict.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub consequence: bool,
}

impl Cause {
    pub fn new(level: Level, scope: &str, kind: &str, detail: impl Into<String>) -> Cause {
        Cause {
            level,
            scope: scope.to_string(),
            kind: kind.to_string(),
            path: None,
            a: None,
            b: None,
            fields: Vec::new(),
            count: None,
            paths: Vec::new(),
            detail: detail.into(),
            consequence: false,
        }
    }

    pub fn path(mut self, path: impl Into<String>) -> Cause {
        self.path = Some(path.into());
        self
    }

    pub fn values(mut self, a: Option<Value>, b: Option<Value>) -> Cause {
        self.a = a;
        self.b = b;
        self
    }

    pub fn consequence(mut self) -> Cause {
        self.consequence = true;
        self
    }
}

/// A regular file whose content differs, for `--files`/`--diffoscope`.
#[derive(Clone, Debug, Serialize)]
pub struct ChangedFile {
    pub scope: String,
    pub path: String,
    pub a_layer: Descriptor,
    pub b_layer: Descriptor,
}

/// What `diff` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub a: String,
    pub b: String,
    pub identical: bool,
    /// Causes (not consequences), innermost first.
    pub cause_count: usize,
    /// Every finding, innermost first; consequences flagged.
    pub causes: Vec<Cause>,
    #[serde(skip)]
    pub changed_files: Vec<ChangedFile>,
}

/// How much to say.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// List entries that differ only in mtime one by one.
    pub all: bool,
}

/// Findings collected while walking down.
#[derive(Default)]
pub struct Findings {
    pub causes: Vec<Cause>,
    pub changed_files: Vec<ChangedFile>,
}

/// Compares two resolved sides (their blobs are in `store`).
pub fn diff(
    store: &Store,
    a: &ResolvedSide,
    b: &ResolvedSide,
    options: DiffOptions,
) -> Result<Report, DiffError> {
    let mut findings = Findings::default();
    if a.top.digest != b.top.digest {
        let walk = manifest::Walk { store, options };
        walk.compare_tops(&a.top, &b.top, &mut findings)?;
    }
    let mut causes = findings.causes;
    // Stable: within a level, the order of discovery (layer by layer,
    // path by path) is kept.
    causes.sort_by_key(|c| (c.consequence, c.level));
    let cause_count = causes.iter().filter(|c| !c.consequence).count();
    Ok(Report {
        a: a.label.clone(),
        b: b.label.clone(),
        identical: a.top.digest == b.top.digest,
        cause_count,
        causes,
        changed_files: findings.changed_files,
    })
}
