//! The PURE pallet composer: from an expanded plan and the resolved package
//! images (manifests, configs and a file index per layer) to the new image's
//! layer list, conflict report and run config. No I/O: it never reads a
//! blob. Extra layers (single-file copies, links) come out as *plans* naming
//! where each file's bytes live (layer digest + path in that layer); the
//! caller materializes them (`materialize.rs`).
//!
//! Rules, and why they keep the merged file tree unchanged:
//! - Package layers are reused verbatim (same descriptor, same diff_id), in
//!   plan order.
//! - A layer whose digest was already listed is dropped only when no layer
//!   listed since its first occurrence touches any of its paths with a
//!   different entry (identical directories do not count). Then the first
//!   occurrence still decides every one of its paths, and dropping the
//!   repeat is invisible. Otherwise the repeat is kept (an OCI manifest may
//!   list a blob twice) and noted in `kept_duplicates`.
//! - A layer the entry rules refuse (`entry_rules`: its index's verdict,
//!   or an entry written through a symlink of the tree below it) is
//!   REJECTED with an error naming the package, layer and entry, as
//!   extraction and `--flatten` would refuse it. Device nodes and fifos
//!   only with `ComposeOptions::allow_special_files`.
//! - Whiteouts and opaque markers inside a package layer are REJECTED with
//!   an error naming the package, layer and path: in a composed image they
//!   would delete files of the packages below it. StageX package images are
//!   built FROM scratch and never need one; rebuild the package instead.
//! - Conflicts are computed per package (a package's own layers override
//!   each other silently: that is its own tree) against what the packages
//!   before it left at each path: same path with different type, content,
//!   link target, mode or owner; a directory in one and a symlink in the
//!   other.
//!   The later package wins in the image, as with `COPY --from`.
//! - A hard link's target is resolved through the merged tree, following
//!   symlinks (also the last one), so the link is to the regular file the
//!   target names and works wherever it lives.
//! - A hard link in a tar layer can only point at a file of the same layer,
//!   so a link layer also carries the target file (same bytes, mode and
//!   owner as in the merged tree: no visible change), taken from the
//!   package layer that holds it. Parent directories that exist are
//!   repeated with their merged metadata; missing ones are created 0755
//!   root. A parent that is a symlink is an error (the link layer would
//!   replace it with a directory).
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::definition::{FileCopy, Link, LinkKind, Plan, Step};
use super::entry_rules::{check_over_below, check_verdict, node_of};
use super::expr::ItemRef;
use crate::layer::reader::{EntryType, LayerEntry, LayerIndex};
use crate::layer::rules::{Node, SpecialFiles, TreeView};
use crate::oci::config::{rfc3339_utc, History, ImageConfig, RunConfig};
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::image::ImageLayer;
use crate::oci::manifest::ImageManifest;

/// `created` of every composed image and history entry.
pub const CREATED_EPOCH: i64 = 1;
/// Manifest annotation / config label listing `name@digest` of every
/// composed package, comma-separated, in layer order.
pub const LABEL_PACKAGES: &str = "org.stagex.pallet.packages";
/// Prefix of one annotation/label per package: `org.stagex.package.<name>`.
pub const LABEL_PACKAGE_PREFIX: &str = "org.stagex.package.";
/// The expression the image was composed from.
pub const LABEL_EXPRESSION: &str = "org.stagex.pallet.expression";

/// A resolved, pinned package image.
#[derive(Clone, Debug)]
pub struct PackageImage {
    /// The image name (`core-busybox`).
    pub name: String,
    /// The platform manifest's digest (the pin).
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: ImageConfig,
    /// One index per manifest layer, same order.
    pub layers: Vec<LayerIndex>,
}

/// How two packages disagree about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    /// Regular files with different bytes.
    Content,
    /// Different entry types (file vs symlink, ...).
    Type,
    /// A directory in one package, a symlink in the other (usr-merge).
    DirectoryVsSymlink,
    /// Symlinks to different targets.
    LinkTarget,
    /// Same type and content, different permission bits.
    Mode,
    /// Same type and content, different uid/gid.
    Owner,
}

/// One path two packages disagree about. `packages[0]` is what was there
/// before, `packages[1]` the package that wins in the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: String,
    pub kind: ConflictKind,
    pub packages: [String; 2],
    pub detail: String,
}

/// Where a file of an extra layer takes its bytes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef {
    /// The package layer holding the bytes.
    pub layer: Descriptor,
    /// The path of the regular file entry in that layer.
    pub path: String,
    pub content: Digest,
    pub size: u64,
}

/// An entry of an extra (copy/link) layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ExtraEntry {
    Directory {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        from: Box<ContentRef>,
    },
    Symlink {
        target: String,
        uid: u32,
        gid: u32,
    },
    HardLink {
        target: String,
    },
}

/// A small deterministic layer to build: sorted path -> entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraLayer {
    pub entries: BTreeMap<String, ExtraEntry>,
}

impl ExtraLayer {
    /// The cache key: digest of the canonical JSON of the plan. Same plan,
    /// same layer bytes.
    pub fn key(&self) -> Result<Digest> {
        Ok(Digest::of_bytes(&serde_json::to_vec(self)?))
    }
}

/// One layer of the composed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlannedLayer {
    /// A package layer, reused verbatim.
    Reuse(Box<ImageLayer>),
    /// A layer to build from a plan.
    Extra { layer: ExtraLayer, history: History },
}

/// A package as composed (for the report and labels).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComposedPackage {
    pub name: String,
    pub reference: String,
    pub digest: Digest,
}

/// The result of composition for one platform.
#[derive(Clone, Debug)]
pub struct Composition {
    pub platform: Platform,
    pub layers: Vec<PlannedLayer>,
    pub run: RunConfig,
    pub annotations: BTreeMap<String, String>,
    pub packages: Vec<ComposedPackage>,
    pub conflicts: Vec<Conflict>,
    /// Repeated layers kept because dropping them would change the tree.
    pub kept_duplicates: Vec<Digest>,
    /// Repeated layers dropped (safe).
    pub dropped_duplicates: Vec<Digest>,
}

/// Options of a composition.
#[derive(Clone, Debug, Default)]
pub struct ComposeOptions {
    /// The expression text, recorded as an annotation.
    pub expression: String,
    /// Any conflict is an error.
    pub strict: bool,
    /// Compose layers holding device nodes or fifos.
    pub allow_special_files: bool,
}

impl ComposeOptions {
    fn special_files(&self) -> SpecialFiles {
        match self.allow_special_files {
            true => SpecialFiles::Allow,
            false => SpecialFiles::Refuse,
        }
    }
}

/// The merged tree's view of one path.
#[derive(Clone, Debug)]
struct Merged {
    entry: LayerEntry,
    package: String,
    /// Where a regular file's bytes are (layer + path of the data entry).
    bytes: Option<(usize, String)>,
}

/// A package's own tree so far: path -> (resolved entry, where its bytes
/// are).
type OwnTree = BTreeMap<String, (LayerEntry, Option<(usize, String)>)>;

/// What an entry of a package layer is applied onto: the package's own
/// entries so far over the merged tree of the packages below.
struct Below<'x> {
    own: &'x OwnTree,
    merged: &'x BTreeMap<String, Merged>,
}

impl TreeView for Below<'_> {
    fn node(&self, path: &str) -> Option<Node> {
        let entry = match self.own.get(path) {
            Some((entry, _)) => entry,
            None => &self.merged.get(path)?.entry,
        };
        Some(node_of(entry))
    }
}

struct Composer<'a> {
    images: &'a BTreeMap<ItemRef, PackageImage>,
    special_files: SpecialFiles,
    /// Kept layers so far: descriptor + index.
    kept: Vec<(Descriptor, &'a LayerIndex)>,
    merged: BTreeMap<String, Merged>,
    conflicts: Vec<Conflict>,
    reported: BTreeSet<(String, String, String)>,
    /// Paths of each extra layer, with `kept.len()` when it was added.
    extra_paths: Vec<(usize, Vec<String>)>,
}

fn pinned(item: &ItemRef, image: &PackageImage) -> String {
    format!("{}@{}", item.name, image.manifest_digest)
}

/// True when two entries are the same file-system object for merging.
fn same_entry(a: &LayerEntry, b: &LayerEntry) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.content_digest == b.content_digest
        && (a.kind == EntryType::HardLink || a.link_target == b.link_target)
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

fn classify(before: &LayerEntry, after: &LayerEntry) -> Option<(ConflictKind, String)> {
    use EntryType::*;
    let k = |e: &LayerEntry| format!("{:?}", e.kind).to_lowercase();
    match (before.kind, after.kind) {
        (Directory, Symlink) | (Symlink, Directory) => Some((
            ConflictKind::DirectoryVsSymlink,
            format!("{} vs {}", k(before), k(after)),
        )),
        (a, b) if a != b => Some((ConflictKind::Type, format!("{} vs {}", k(before), k(after)))),
        (File, File) if before.content_digest != after.content_digest => Some((
            ConflictKind::Content,
            format!(
                "{} vs {}",
                before
                    .content_digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                after
                    .content_digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ),
        )),
        (Symlink, Symlink) if before.link_target != after.link_target => Some((
            ConflictKind::LinkTarget,
            format!(
                "-> {} vs -> {}",
                before.link_target.as_deref().unwrap_or(""),
                after.link_target.as_deref().unwrap_or("")
            ),
        )),
        _ if before.mode != after.mode => Some((
            ConflictKind::Mode,
            format!("{:o} vs {:o}", before.mode, after.mode),
        )),
        _ if (before.uid, before.gid) != (after.uid, after.gid) => Some((
            ConflictKind::Owner,
            format!(
                "{}:{} vs {}:{}",
                before.uid, before.gid, after.uid, after.gid
            ),
        )),
        _ => None,
    }
}

/// Resolves hard links inside one layer: the entry as a file with the
/// target's content, and the path holding the bytes.
fn resolve_in_layer(layer: &LayerIndex, entry: &LayerEntry) -> (LayerEntry, Option<String>) {
    match entry.kind {
        EntryType::File => (entry.clone(), Some(entry.path.clone())),
        EntryType::HardLink => {
            let target = entry.link_target.as_deref().unwrap_or("");
            match layer
                .entries
                .iter()
                .find(|e| e.path == target && e.kind == EntryType::File)
            {
                Some(t) => (
                    LayerEntry {
                        kind: EntryType::File,
                        link_target: None,
                        content_digest: t.content_digest.clone(),
                        size: t.size,
                        ..entry.clone()
                    },
                    Some(t.path.clone()),
                ),
                None => (entry.clone(), None),
            }
        }
        _ => (entry.clone(), None),
    }
}

impl<'a> Composer<'a> {
    fn image(&self, item: &ItemRef) -> Result<&'a PackageImage> {
        self.images
            .get(item)
            .ok_or_else(|| anyhow!("package image {item} was not resolved"))
    }

    /// True when dropping a repeat of kept layer `first` cannot change the
    /// merged tree.
    fn repeat_is_invisible(&self, first: usize) -> bool {
        let layer = self.kept[first].1;
        let paths: BTreeMap<&str, &LayerEntry> =
            layer.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let untouched_by_layers = self.kept[first + 1..].iter().all(|(_, later)| {
            later
                .entries
                .iter()
                .all(|e| match paths.get(e.path.as_str()) {
                    None => true,
                    Some(mine) => e.kind == EntryType::Directory && same_entry(mine, e),
                })
        });
        // Extra (copy/link) layers written since then count too.
        let untouched_by_extras = self
            .extra_paths
            .iter()
            .filter(|(after, _)| *after > first)
            .all(|(_, written)| written.iter().all(|p| !paths.contains_key(p.as_str())));
        untouched_by_layers && untouched_by_extras
    }

    /// A whiteout or opaque marker in a package layer is an error naming
    /// the package, the layer and (when there is one) the file it would
    /// delete.
    fn refuse_whiteouts(
        &self,
        package: &str,
        descriptor: &Descriptor,
        files: &LayerIndex,
    ) -> Result<()> {
        let Some(w) = files
            .entries
            .iter()
            .find(|e| matches!(e.kind, EntryType::Whiteout | EntryType::OpaqueWhiteout))
        else {
            return Ok(());
        };
        let victim = self
            .merged
            .iter()
            .find(|(p, _)| {
                **p == w.path || w.path.is_empty() || p.starts_with(&format!("{}/", w.path))
            })
            .map(|(p, m)| format!(" (/{p} of {})", m.package))
            .unwrap_or_default();
        bail!(
            "package {package} layer {} holds a {} for /{}: in a pallet it would delete files of other packages{victim}; rebuild the package without deletions",
            descriptor.digest,
            if w.kind == EntryType::Whiteout { "whiteout" } else { "opaque-directory marker" },
            w.path
        );
    }

    fn add_package(
        &mut self,
        item: &ItemRef,
        layers_out: &mut Vec<PlannedLayer>,
        report: &mut Composition,
    ) -> Result<()> {
        let image = self.image(item)?;
        if image.layers.len() != image.manifest.layers.len()
            || image.config.rootfs.diff_ids.len() != image.manifest.layers.len()
        {
            bail!(
                "package {}: manifest lists {} layers, config {} diff_ids, index {}",
                pinned(item, image),
                image.manifest.layers.len(),
                image.config.rootfs.diff_ids.len(),
                image.layers.len()
            );
        }
        report.packages.push(ComposedPackage {
            name: item.name.clone(),
            reference: item.to_string(),
            digest: image.manifest_digest.clone(),
        });
        // The package's own tree (its layers override each other).
        let mut own = OwnTree::new();
        for (i, (descriptor, files)) in image.manifest.layers.iter().zip(&image.layers).enumerate()
        {
            check_verdict(
                &pinned(item, image),
                &descriptor.digest,
                files,
                self.special_files,
            )?;
            if files.diff_id != image.config.rootfs.diff_ids[i] {
                bail!(
                    "package {}: layer {} index has diff_id {}, config says {}",
                    pinned(item, image),
                    descriptor.digest,
                    files.diff_id,
                    image.config.rootfs.diff_ids[i]
                );
            }
            self.refuse_whiteouts(&pinned(item, image), descriptor, files)?;
            let first = self
                .kept
                .iter()
                .position(|(d, _)| d.digest == descriptor.digest);
            let index = match first {
                Some(first) if self.repeat_is_invisible(first) => {
                    report.dropped_duplicates.push(descriptor.digest.clone());
                    continue;
                }
                Some(_) => {
                    report.kept_duplicates.push(descriptor.digest.clone());
                    self.kept.len()
                }
                None => self.kept.len(),
            };
            self.kept.push((descriptor.clone(), files));
            layers_out.push(PlannedLayer::Reuse(Box::new(ImageLayer {
                descriptor: descriptor.clone(),
                diff_id: files.diff_id.clone(),
                history: History {
                    created: Some(rfc3339_utc(CREATED_EPOCH)),
                    created_by: Some(format!(
                        "stagex pallet: {} layer {}/{}",
                        pinned(item, image),
                        i + 1,
                        image.manifest.layers.len()
                    )),
                    ..History::default()
                },
            })));
            for entry in &files.entries {
                let below = Below {
                    own: &own,
                    merged: &self.merged,
                };
                check_over_below(&pinned(item, image), &descriptor.digest, entry, &below)?;
                let (resolved, bytes) = resolve_in_layer(files, entry);
                own.insert(entry.path.clone(), (resolved, bytes.map(|p| (index, p))));
            }
        }
        self.merge_package(&item.name, own);
        Ok(())
    }

    /// Records a package's own tree in the merged tree, reporting conflicts
    /// with what the packages before it left.
    fn merge_package(&mut self, package: &str, own: OwnTree) {
        for (path, (entry, _)) in &own {
            if let Some(before) = self.merged.get(path) {
                if before.package != package {
                    if let Some((kind, detail)) = classify(&before.entry, entry) {
                        self.conflict(path, kind, &before.package.clone(), package, detail);
                    }
                }
            }
        }
        for (path, (entry, bytes)) in own {
            self.merged.insert(
                path,
                Merged {
                    entry,
                    package: package.to_string(),
                    bytes,
                },
            );
        }
    }

    fn conflict(
        &mut self,
        path: &str,
        kind: ConflictKind,
        before: &str,
        after: &str,
        detail: String,
    ) {
        if self
            .reported
            .insert((path.to_string(), before.to_string(), after.to_string()))
        {
            self.conflicts.push(Conflict {
                path: format!("/{path}"),
                kind,
                packages: [before.to_string(), after.to_string()],
                detail,
            });
        }
    }

    /// Follows symlinks through the merged tree (all components but the
    /// last unless `follow_last`). Returns the resolved normalized path.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<String> {
        resolve_path(path, follow_last, |p| {
            self.merged
                .get(p)
                .filter(|m| m.entry.kind == EntryType::Symlink)
                .and_then(|m| m.entry.link_target.clone())
        })
    }

    /// Adds parents of `path` to an extra layer: existing directories with
    /// their merged metadata, missing ones 0755 root; a symlink parent is
    /// an error.
    fn add_parents(&self, extra: &mut ExtraLayer, path: &str, what: &str) -> Result<()> {
        for parent in ancestors(path) {
            match self.merged.get(parent) {
                Some(m) if m.entry.kind == EntryType::Directory => {
                    extra.entries.insert(
                        parent.to_string(),
                        ExtraEntry::Directory {
                            mode: m.entry.mode,
                            uid: m.entry.uid,
                            gid: m.entry.gid,
                        },
                    );
                }
                Some(m) => bail!(
                    "{what}: parent /{parent} is a {:?} from {} (not a directory); write the path through its resolved location",
                    m.entry.kind,
                    m.package
                ),
                None => {
                    extra
                        .entries
                        .entry(parent.to_string())
                        .or_insert(ExtraEntry::Directory { mode: 0o755, uid: 0, gid: 0 });
                }
            }
        }
        Ok(())
    }

    fn content_ref(&self, path: &str, what: &str) -> Result<(ContentRef, &Merged)> {
        let merged = self
            .merged
            .get(path)
            .ok_or_else(|| anyhow!("{what}: /{path} is not provided by any package before it"))?;
        let (layer, data_path) = merged.bytes.as_ref().ok_or_else(|| {
            anyhow!(
                "{what}: /{path} from {} is a {:?}, not a regular file",
                merged.package,
                merged.entry.kind
            )
        })?;
        Ok((
            ContentRef {
                layer: self.kept[*layer].0.clone(),
                path: data_path.clone(),
                content: merged
                    .entry
                    .content_digest
                    .clone()
                    .unwrap_or_else(|| Digest::of_bytes(b"")),
                size: merged.entry.size,
            },
            merged,
        ))
    }

    fn links_layer(&self, pallet: &str, links: &[Link], arch: &str) -> Result<ExtraLayer> {
        let mut extra = ExtraLayer::default();
        for link in links {
            let link = link.for_arch(arch);
            let what = format!("pallet-{pallet} link {}", link.path);
            let path = link.path.trim_start_matches('/').to_string();
            if let Some(existing) = self.merged.get(&path) {
                if (existing.entry.kind == EntryType::Directory) != (link.kind == LinkKind::Dir) {
                    {
                        bail!(
                            "{what}: /{path} already exists as a {:?} from {}",
                            existing.entry.kind,
                            existing.package
                        );
                    }
                }
            }
            self.add_parents(&mut extra, &path, &what)?;
            match link.kind {
                LinkKind::Dir => {
                    let (mode, uid, gid) = match self.merged.get(&path) {
                        Some(m) => (m.entry.mode, m.entry.uid, m.entry.gid),
                        None => (0o755, 0, 0),
                    };
                    extra
                        .entries
                        .insert(path, ExtraEntry::Directory { mode, uid, gid });
                }
                LinkKind::Symlink => {
                    let target = link.target.clone().unwrap_or_default();
                    extra.entries.insert(
                        path,
                        ExtraEntry::Symlink {
                            target,
                            uid: 0,
                            gid: 0,
                        },
                    );
                }
                LinkKind::Hardlink => {
                    let target = link.target.as_deref().unwrap_or("").trim_start_matches('/');
                    let resolved = self.resolve(target, true).with_context(|| what.clone())?;
                    let (from, merged) = self.content_ref(&resolved, &what)?;
                    // The target file travels with its links (same layer).
                    self.add_parents(&mut extra, &resolved, &what)?;
                    extra.entries.insert(
                        resolved.clone(),
                        ExtraEntry::File {
                            mode: merged.entry.mode,
                            uid: merged.entry.uid,
                            gid: merged.entry.gid,
                            from: Box::new(from),
                        },
                    );
                    extra
                        .entries
                        .insert(path, ExtraEntry::HardLink { target: resolved });
                }
            }
        }
        Ok(extra)
    }

    /// A pallet's single-file copy as its own small layer; its source
    /// package joins the provenance list.
    fn add_copy(
        &mut self,
        pallet: &str,
        copy: &FileCopy,
        packages: &mut Vec<ComposedPackage>,
    ) -> Result<PlannedLayer> {
        let extra = self.copy_layer(pallet, copy)?;
        // The copy's source is part of the provenance too.
        let source = self.image(&copy.from)?;
        if !packages.iter().any(|p| p.name == copy.from.name) {
            packages.push(ComposedPackage {
                name: copy.from.name.clone(),
                reference: copy.from.to_string(),
                digest: source.manifest_digest.clone(),
            });
        }
        self.apply_extra(&extra, &format!("pallet-{pallet}"));
        Ok(PlannedLayer::Extra {
            layer: extra,
            history: History {
                created: Some(rfc3339_utc(CREATED_EPOCH)),
                created_by: Some(format!(
                    "stagex pallet: pallet-{pallet} copy {}:{} -> {}",
                    copy.from, copy.source, copy.path
                )),
                ..History::default()
            },
        })
    }

    fn copy_layer(&self, pallet: &str, copy: &FileCopy) -> Result<ExtraLayer> {
        let what = format!(
            "pallet-{pallet} copy {}:{} -> {}",
            copy.from, copy.source, copy.path
        );
        let image = self.image(&copy.from)?;
        // The source image's own tree, from layers the rules accept.
        let mut tree: BTreeMap<&str, (usize, &LayerEntry, &LayerIndex)> = BTreeMap::new();
        for (i, files) in image.layers.iter().enumerate() {
            let layer = image.manifest.layers.get(i).ok_or_else(|| {
                anyhow!(
                    "{what}: {} has more indexes than layers",
                    pinned(&copy.from, image)
                )
            })?;
            check_verdict(
                &pinned(&copy.from, image),
                &layer.digest,
                files,
                self.special_files,
            )?;
            for e in &files.entries {
                tree.insert(e.path.as_str(), (i, e, files));
            }
        }
        let source = resolve_path(copy.source.trim_start_matches('/'), true, |p| {
            tree.get(p)
                .filter(|(_, e, _)| e.kind == EntryType::Symlink)
                .and_then(|(_, e, _)| e.link_target.clone())
        })
        .with_context(|| what.clone())?;
        let (layer, entry, files) = tree
            .get(source.as_str())
            .ok_or_else(|| anyhow!("{what}: {} holds no /{source}", pinned(&copy.from, image)))?;
        let (resolved, data) = resolve_in_layer(files, entry);
        let data = data.ok_or_else(|| {
            anyhow!(
                "{what}: /{source} is a {:?}, not a regular file",
                entry.kind
            )
        })?;
        let path = copy.path.trim_start_matches('/').to_string();
        if let Some(m) = self.merged.get(&path) {
            if m.entry.kind == EntryType::Directory {
                bail!("{what}: /{path} is a directory from {}", m.package);
            }
        }
        let mut extra = ExtraLayer::default();
        self.add_parents(&mut extra, &path, &what)?;
        extra.entries.insert(
            path,
            ExtraEntry::File {
                mode: resolved.mode,
                uid: resolved.uid,
                gid: resolved.gid,
                from: Box::new(ContentRef {
                    layer: image.manifest.layers[*layer].clone(),
                    path: data,
                    content: resolved
                        .content_digest
                        .clone()
                        .unwrap_or_else(|| Digest::of_bytes(b"")),
                    size: resolved.size,
                }),
            },
        );
        Ok(extra)
    }

    /// Records an extra layer's entries in the merged tree.
    fn apply_extra(&mut self, extra: &ExtraLayer, owner: &str) {
        // Directories repeated with their merged metadata change nothing.
        let written = extra
            .entries
            .iter()
            .filter(|(_, e)| !matches!(e, ExtraEntry::Directory { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        self.extra_paths.push((self.kept.len(), written));
        for (path, entry) in &extra.entries {
            let (kind, mode, uid, gid, link_target, content, size) = match entry {
                ExtraEntry::Directory { mode, uid, gid } => {
                    (EntryType::Directory, *mode, *uid, *gid, None, None, 0)
                }
                ExtraEntry::File {
                    mode,
                    uid,
                    gid,
                    from,
                } => (
                    EntryType::File,
                    *mode,
                    *uid,
                    *gid,
                    None,
                    Some(from.content.clone()),
                    from.size,
                ),
                ExtraEntry::Symlink { target, uid, gid } => (
                    EntryType::Symlink,
                    0o777,
                    *uid,
                    *gid,
                    Some(target.clone()),
                    None,
                    0,
                ),
                ExtraEntry::HardLink { target } => match self.merged.get(target) {
                    Some(m) => (
                        EntryType::File,
                        m.entry.mode,
                        m.entry.uid,
                        m.entry.gid,
                        None,
                        m.entry.content_digest.clone(),
                        m.entry.size,
                    ),
                    None => continue,
                },
            };
            let bytes = match entry {
                ExtraEntry::HardLink { target } => {
                    self.merged.get(target).and_then(|m| m.bytes.clone())
                }
                _ => None,
            };
            self.merged.insert(
                path.clone(),
                Merged {
                    entry: LayerEntry {
                        path: path.clone(),
                        kind,
                        mode,
                        uid,
                        gid,
                        size,
                        link_target,
                        content_digest: content,
                    },
                    package: owner.to_string(),
                    bytes,
                },
            );
        }
    }
}

/// Resolves symlinks in `path` (normalized, relative) with `symlink(p)`
/// giving the target of `p` when it is a symlink. At most 40 hops.
pub fn resolve_path(
    path: &str,
    follow_last: bool,
    symlink: impl Fn(&str) -> Option<String>,
) -> Result<String> {
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = if done.is_empty() {
            part.clone()
        } else {
            format!("{}/{part}", done.join("/"))
        };
        let is_last = pending.is_empty();
        match symlink(&candidate) {
            Some(target) if !is_last || follow_last => {
                hops += 1;
                if hops > 40 {
                    bail!("too many levels of symbolic links resolving /{path}");
                }
                if target.starts_with('/') {
                    done.clear();
                }
                for p in target.split('/').rev() {
                    pending.push(p.to_string());
                }
            }
            _ => done.push(part),
        }
    }
    Ok(done.join("/"))
}

/// Composes the plan for one platform. `images` maps every reference of
/// `plan.references()` to its resolved image for this platform.
pub fn compose(
    plan: &Plan,
    images: &BTreeMap<ItemRef, PackageImage>,
    platform: &Platform,
    options: &ComposeOptions,
) -> Result<Composition> {
    let mut composer = Composer {
        images,
        special_files: options.special_files(),
        kept: Vec::new(),
        merged: BTreeMap::new(),
        conflicts: Vec::new(),
        reported: BTreeSet::new(),
        extra_paths: Vec::new(),
    };
    let mut report = Composition {
        platform: platform.clone(),
        layers: Vec::new(),
        run: RunConfig::default(),
        annotations: BTreeMap::new(),
        packages: Vec::new(),
        conflicts: Vec::new(),
        kept_duplicates: Vec::new(),
        dropped_duplicates: Vec::new(),
    };
    let mut layers = Vec::new();
    let arch = platform.uname_machine().to_string();
    for step in &plan.steps {
        match step {
            Step::Package(item) => composer.add_package(item, &mut layers, &mut report)?,
            Step::Copy { pallet, copy } => {
                layers.push(composer.add_copy(pallet, copy, &mut report.packages)?)
            }
            Step::Links { pallet, links } => {
                let extra = composer.links_layer(pallet, links, &arch)?;
                composer.apply_extra(&extra, &format!("pallet-{pallet}"));
                layers.push(PlannedLayer::Extra {
                    layer: extra,
                    history: History {
                        created: Some(rfc3339_utc(CREATED_EPOCH)),
                        created_by: Some(format!("stagex pallet: pallet-{pallet} links ({arch})")),
                        ..History::default()
                    },
                });
            }
        }
    }
    if options.strict {
        refuse_conflicts(&composer.conflicts)?;
    }
    let (run, annotations) = run_config(plan, &composer, &report.packages, &options.expression)?;
    report.layers = layers;
    report.run = run;
    report.annotations = annotations;
    report.conflicts = composer.conflicts;
    Ok(report)
}

/// `--strict`: any conflict is an error listing every conflicting path.
fn refuse_conflicts(conflicts: &[Conflict]) -> Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "{} ({:?}: {} vs {}; {})",
                c.path, c.kind, c.packages[0], c.packages[1], c.detail
            )
        })
        .collect();
    bail!(
        "--strict: {} conflicting path(s): {}",
        list.len(),
        list.join(", ")
    );
}

/// The image config (inherited, then the pallet directives) with the
/// provenance labels, and the same provenance as manifest annotations.
fn run_config(
    plan: &Plan,
    composer: &Composer,
    packages: &[ComposedPackage],
    expression: &str,
) -> Result<(RunConfig, BTreeMap<String, String>)> {
    let inherited = match &plan.config.inherit {
        Some(item) => composer.image(item)?.config.config.clone(),
        None => RunConfig::default(),
    };
    let mut run = plan.config.apply(&inherited)?;
    let mut labels = run.labels.take().unwrap_or_default();
    let listing: Vec<String> = packages
        .iter()
        .map(|p| format!("{}@{}", p.name, p.digest))
        .collect();
    let mut annotations = BTreeMap::new();
    annotations.insert(LABEL_PACKAGES.to_string(), listing.join(","));
    if !expression.is_empty() {
        annotations.insert(LABEL_EXPRESSION.to_string(), expression.to_string());
    }
    for p in packages {
        annotations.insert(
            format!("{LABEL_PACKAGE_PREFIX}{}", p.name),
            p.digest.to_string(),
        );
    }
    labels.extend(annotations.clone());
    run.labels = Some(labels);
    Ok((run, annotations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media_type;
    use crate::pallet::definition::Catalog;

    pub(crate) fn file(path: &str, body: &str) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind: EntryType::File,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: body.len() as u64,
            link_target: None,
            content_digest: Some(Digest::of_bytes(body.as_bytes())),
        }
    }

    pub(crate) fn dir(path: &str) -> LayerEntry {
        LayerEntry {
            path: path.into(),
            kind: EntryType::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            link_target: None,
            content_digest: None,
        }
    }

    fn symlink(path: &str, target: &str) -> LayerEntry {
        LayerEntry {
            kind: EntryType::Symlink,
            mode: 0o777,
            link_target: Some(target.into()),
            content_digest: None,
            size: 0,
            ..dir(path)
        }
    }

    fn image(name: &str, layers: Vec<Vec<LayerEntry>>) -> PackageImage {
        let files: Vec<LayerIndex> = layers
            .into_iter()
            .map(|entries| LayerIndex {
                diff_id: Digest::of_bytes(format!("{entries:?}").as_bytes()),
                tar_size: 0,
                entries,
                verdict: Default::default(),
            })
            .collect();
        let descriptors: Vec<Descriptor> = files
            .iter()
            .map(|f| {
                Descriptor::new(
                    media_type::OCI_LAYER_GZIP,
                    Digest::of_bytes(f.diff_id.hex().as_bytes()),
                    10,
                )
            })
            .collect();
        let mut config = ImageConfig {
            created: None,
            author: None,
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            config: RunConfig::default(),
            rootfs: Default::default(),
            history: vec![],
        };
        config.rootfs.diff_ids = files.iter().map(|f| f.diff_id.clone()).collect();
        config.config.set_env_var("PATH", "/bin");
        let manifest = ImageManifest::new(
            Descriptor::new(media_type::OCI_CONFIG, Digest::of_bytes(name.as_bytes()), 1),
            descriptors,
        );
        PackageImage {
            name: name.into(),
            manifest_digest: Digest::of_bytes(format!("m-{name}").as_bytes()),
            manifest,
            config,
            layers: files,
        }
    }

    fn fs_layer() -> Vec<LayerEntry> {
        vec![dir("bin"), dir("etc"), file("etc/passwd", "root")]
    }

    fn images(list: Vec<PackageImage>) -> BTreeMap<ItemRef, PackageImage> {
        list.into_iter()
            .map(|i| (ItemRef::named(&i.name), i))
            .collect()
    }

    /// Composes `plan` from `world` for linux/amd64 with default options.
    fn compose_amd64(plan: &Plan, world: &BTreeMap<ItemRef, PackageImage>) -> Result<Composition> {
        compose(
            plan,
            world,
            &"linux/amd64".parse().unwrap(),
            &ComposeOptions::default(),
        )
    }

    /// core-x is the filesystem layer, core-y changes /etc/passwd to
    /// `passwd`, core-z repeats the filesystem layer.
    fn passwd_changed_world(passwd: &str) -> BTreeMap<ItemRef, PackageImage> {
        let fs = fs_layer();
        images(vec![
            image("core-x", vec![fs.clone()]),
            image("core-y", vec![vec![dir("etc"), file("etc/passwd", passwd)]]),
            image("core-z", vec![fs, vec![file("z", "z")]]),
        ])
    }

    fn catalog() -> Catalog {
        Catalog::from_sources([
            ("clang", "base = \"core-profile\"\npackages = [\"core-musl\", \"core-llvm\"]\nentrypoint = [\"/usr/bin/clang\"]"),
            ("rust", "base = \"pallet-clang\"\npackages = [\"core-rust\", \"core-musl\"]\nentrypoint = [\"/usr/bin/cargo\"]\nenv = [\"P=${PATH}:/x\"]\ncopy = [\"core-bash:/bin/bash -> /bin/sh\"]\n[[link]]\nkind = \"dir\"\npath = \"/usr/lib/rustlib/{arch}-unknown-linux-musl/bin/gcc-ld\"\n[[link]]\nkind = \"hardlink\"\npath = \"/usr/lib/rustlib/{arch}-unknown-linux-musl/bin/rust-lld\"\ntarget = \"/bin/lld\""),
        ])
        .unwrap()
    }

    fn world() -> BTreeMap<ItemRef, PackageImage> {
        images(vec![
            image(
                "core-profile",
                vec![vec![dir("etc"), file("etc/profile", "p")]],
            ),
            image(
                "core-musl",
                vec![fs_layer(), vec![dir("lib"), file("lib/libc.so", "musl")]],
            ),
            image(
                "core-llvm",
                vec![
                    fs_layer(),
                    vec![
                        dir("bin"),
                        file("bin/lld", "lld"),
                        LayerEntry {
                            kind: EntryType::HardLink,
                            link_target: Some("bin/lld".into()),
                            ..file("bin/ld.lld", "")
                        },
                    ],
                ],
            ),
            image(
                "core-rust",
                vec![vec![dir("bin"), file("bin/cargo", "cargo")]],
            ),
            image(
                "core-bash",
                vec![vec![dir("bin"), file("bin/bash", "bash")]],
            ),
        ])
    }

    #[test]
    fn reuses_package_layers_and_plans_link_and_copy_layers() {
        let plan = catalog().expand(&"rust".parse().unwrap()).unwrap();
        let world = world();
        let platform: Platform = "linux/amd64".parse().unwrap();
        let c = compose(
            &plan,
            &world,
            &platform,
            &ComposeOptions {
                expression: "rust".into(),
                strict: true,
                ..ComposeOptions::default()
            },
        )
        .unwrap();
        let reused: Vec<&Digest> = c
            .layers
            .iter()
            .filter_map(|l| match l {
                PlannedLayer::Reuse(l) => Some(&l.descriptor.digest),
                _ => None,
            })
            .collect();
        let w = |n: &str, i: usize| &world[&ItemRef::named(n)].manifest.layers[i].digest;
        // fs layer of core-llvm is a repeat of core-musl's: dropped.
        assert_eq!(
            reused,
            vec![
                w("core-profile", 0),
                w("core-musl", 0),
                w("core-musl", 1),
                w("core-llvm", 1),
                w("core-rust", 0)
            ]
        );
        assert_eq!(c.dropped_duplicates.len(), 1);
        assert!(c.conflicts.is_empty(), "{:?}", c.conflicts);
        let extras: Vec<&ExtraLayer> = c
            .layers
            .iter()
            .filter_map(|l| match l {
                PlannedLayer::Extra { layer, .. } => Some(layer),
                _ => None,
            })
            .collect();
        assert_eq!(extras.len(), 2);
        let copy = &extras[0].entries["bin/sh"];
        assert!(
            matches!(copy, ExtraEntry::File { from, .. } if from.path == "bin/bash" && &from.layer.digest == w("core-bash", 0))
        );
        let links = &extras[1].entries;
        assert!(links.contains_key("usr/lib/rustlib/x86_64-unknown-linux-musl/bin/gcc-ld"));
        assert_eq!(
            links["usr/lib/rustlib/x86_64-unknown-linux-musl/bin/rust-lld"],
            ExtraEntry::HardLink {
                target: "bin/lld".into()
            }
        );
        assert!(
            matches!(&links["bin/lld"], ExtraEntry::File { from, .. } if &from.layer.digest == w("core-llvm", 1))
        );
        assert_eq!(c.run.entrypoint, Some(vec!["/usr/bin/cargo".to_string()]));
        assert_eq!(c.run.env_var("P"), Some("/bin:/x"));
        assert!(c.annotations[LABEL_PACKAGES].starts_with("core-profile@sha256:"));
        assert_eq!(c.annotations.len(), 2 + 5);
    }

    #[test]
    fn reports_conflicts_with_path_and_both_packages() {
        let world = images(vec![
            image(
                "core-a",
                vec![vec![
                    dir("usr"),
                    dir("usr/bin"),
                    file("usr/bin/x", "a"),
                    dir("lib"),
                ]],
            ),
            image(
                "core-b",
                vec![vec![
                    dir("usr"),
                    dir("usr/bin"),
                    file("usr/bin/x", "b"),
                    symlink("lib", "usr/lib"),
                    file("usr/bin/y", "y"),
                ]],
            ),
            image(
                "core-c",
                vec![vec![
                    dir("usr"),
                    dir("usr/bin"),
                    LayerEntry {
                        mode: 0o644,
                        ..file("usr/bin/y", "y")
                    },
                ]],
            ),
        ]);
        let plan = Catalog::default()
            .expand(&"core-a+core-b+core-c".parse().unwrap())
            .unwrap();
        let platform: Platform = "linux/amd64".parse().unwrap();
        let c = compose(&plan, &world, &platform, &ComposeOptions::default()).unwrap();
        let got: Vec<(String, ConflictKind, [String; 2])> = c
            .conflicts
            .iter()
            .map(|c| (c.path.clone(), c.kind, c.packages.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "/lib".into(),
                    ConflictKind::DirectoryVsSymlink,
                    ["core-a".into(), "core-b".into()]
                ),
                (
                    "/usr/bin/x".into(),
                    ConflictKind::Content,
                    ["core-a".into(), "core-b".into()]
                ),
                (
                    "/usr/bin/y".into(),
                    ConflictKind::Mode,
                    ["core-b".into(), "core-c".into()]
                ),
            ]
        );
        let strict = compose(
            &plan,
            &world,
            &platform,
            &ComposeOptions {
                strict: true,
                ..Default::default()
            },
        );
        assert!(format!("{:#}", strict.unwrap_err()).contains("/usr/bin/x"));
    }

    #[test]
    fn whiteouts_in_package_layers_are_rejected() {
        let world = images(vec![image(
            "core-w",
            vec![vec![LayerEntry {
                kind: EntryType::Whiteout,
                content_digest: None,
                ..file("etc/passwd", "")
            }]],
        )]);
        let plan = Catalog::default()
            .expand(&"core-w".parse().unwrap())
            .unwrap();
        let error = compose_amd64(&plan, &world).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("core-w@sha256:") && text.contains("whiteout for /etc/passwd"),
            "{text}"
        );
    }

    #[test]
    fn repeated_layer_is_kept_when_something_in_between_changed_it() {
        let world = passwd_changed_world("changed");
        let plan = Catalog::default()
            .expand(&"core-x+core-y+core-z".parse().unwrap())
            .unwrap();
        let c = compose_amd64(&plan, &world).unwrap();
        assert_eq!(c.layers.len(), 4);
        assert_eq!(c.kept_duplicates.len(), 1);
    }

    #[test]
    fn repeated_layer_is_kept_when_a_copy_layer_changed_it() {
        let world = passwd_changed_world("other");
        let catalog = Catalog::from_sources([(
            "p",
            "base = \"core-x\"\ncopy = [\"core-y:/etc/passwd -> /etc/passwd\"]",
        )])
        .unwrap();
        let plan = catalog.expand(&"p+core-z".parse().unwrap()).unwrap();
        let c = compose_amd64(&plan, &world).unwrap();
        assert_eq!(c.kept_duplicates.len(), 1, "{:?}", c.layers);
        assert_eq!(c.layers.len(), 4);
    }

    #[test]
    fn bad_links_are_errors() {
        let plan = catalog().expand(&"rust".parse().unwrap()).unwrap();
        let mut world = world();
        world.insert(
            ItemRef::named("core-llvm"),
            image("core-llvm", vec![vec![dir("bin")]]),
        );
        let error = compose_amd64(&plan, &world).unwrap_err();
        assert!(
            format!("{error:#}").contains("/bin/lld is not provided"),
            "{error:#}"
        );
    }

    #[test]
    fn resolves_symlinks() {
        let links = |p: &str| match p {
            "bin" => Some("usr/bin".to_string()),
            "usr/bin/sh" => Some("busybox".to_string()),
            "loop" => Some("loop".to_string()),
            _ => None,
        };
        assert_eq!(resolve_path("bin/sh", false, links).unwrap(), "usr/bin/sh");
        assert_eq!(
            resolve_path("bin/sh", true, links).unwrap(),
            "usr/bin/busybox"
        );
        assert!(resolve_path("loop/x", true, links).is_err());
    }
}
