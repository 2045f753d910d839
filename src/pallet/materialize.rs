//! The I/O half of composition, against the local store:
//! - layer indexes: computed once when a blob arrives and kept as store
//!   metadata (`layer-index`, keyed by the compressed layer digest), so a
//!   warm compose never decompresses a package layer;
//! - extra layers (copies, links): built from their plan with the layer
//!   writer (mtime 1, pinned gzip), file bytes read from the package layer
//!   named in the plan and checked against the indexed content digest;
//!   cached under `extra-layer` keyed by the plan's digest;
//! - `--flatten`: one layer holding the merged tree.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::compose::{Composition, ExtraEntry, ExtraLayer, PlannedLayer};
use crate::layer::reader::{decompress, index_layer, tree_path_of, LayerIndex, PathMeaning};
use crate::layer::tree::{EntryKind, FileSource, FileTree, TreeEntry};
use crate::layer::writer::{write_layer_to_layout, LayerOptions};
use crate::oci::config::History;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::image::ImageLayer;
use crate::oci::media_type;
use crate::store::Store;

/// Store metadata kind of layer indexes.
pub const META_LAYER_INDEX: &str = "layer-index";
/// Store metadata kind of built extra layers.
pub const META_EXTRA_LAYER: &str = "extra-layer";

fn compression(descriptor: &Descriptor) -> Result<media_type::LayerCompression> {
    media_type::layer_compression(&descriptor.media_type).ok_or_else(|| {
        anyhow!(
            "layer {} has media type {:?}, which is not a layer",
            descriptor.digest,
            descriptor.media_type
        )
    })
}

/// Indexes a layer blob of the store unless its index is cached. Call it
/// when the blob arrives.
pub fn ensure_layer_index(store: &Store, descriptor: &Descriptor) -> Result<()> {
    if store
        .read_meta(META_LAYER_INDEX, &descriptor.digest)
        .is_some()
    {
        return Ok(());
    }
    let blob = store
        .layout()
        .open_blob(&descriptor.digest, Some(descriptor.size))?;
    let index = index_layer(blob, compression(descriptor)?)
        .with_context(|| format!("indexing layer {}", descriptor.digest))?;
    store.write_meta(
        META_LAYER_INDEX,
        &descriptor.digest,
        &serde_json::to_vec(&index)?,
    )
}

/// The cached index of a layer (indexing it first if needed).
pub fn layer_index(store: &Store, descriptor: &Descriptor) -> Result<LayerIndex> {
    ensure_layer_index(store, descriptor)?;
    let bytes = store
        .read_meta(META_LAYER_INDEX, &descriptor.digest)
        .ok_or_else(|| {
            anyhow!(
                "layer index of {} vanished from the store",
                descriptor.digest
            )
        })?;
    let index: LayerIndex = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "corrupt cached index of layer {} (delete it from the store's meta/)",
            descriptor.digest
        )
    })?;
    Ok(index)
}

/// Reads the regular files `paths` of a layer blob (hard links inside the
/// layer are not followed: the plan names the data entry).
fn read_files(
    store: &Store,
    layer: &Descriptor,
    paths: &BTreeSet<String>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let blob = store.layout().open_blob(&layer.digest, Some(layer.size))?;
    let mut archive = tar::Archive::new(decompress(blob, compression(layer)?)?);
    let mut found = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let PathMeaning::Entry(path) = tree_path_of(&raw)? else {
            continue;
        };
        if paths.contains(&path) && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            found.insert(path, bytes);
            if found.len() == paths.len() {
                break;
            }
        }
    }
    Ok(found)
}

#[derive(Serialize, Deserialize)]
struct CachedLayer {
    descriptor: Descriptor,
    diff_id: Digest,
}

/// Builds (or finds in the cache) the layer an `ExtraLayer` plans.
pub fn materialize_extra(
    store: &Store,
    extra: &ExtraLayer,
    history: &History,
) -> Result<ImageLayer> {
    let key = extra.key()?;
    if let Some(bytes) = store.read_meta(META_EXTRA_LAYER, &key) {
        if let Ok(cached) = serde_json::from_slice::<CachedLayer>(&bytes) {
            if store.layout().has_blob(&cached.descriptor.digest) {
                return Ok(ImageLayer {
                    descriptor: cached.descriptor,
                    diff_id: cached.diff_id,
                    history: history.clone(),
                });
            }
        }
    }
    // Bytes needed, grouped by source layer.
    let mut wanted: BTreeMap<Digest, (Descriptor, BTreeSet<String>)> = BTreeMap::new();
    for entry in extra.entries.values() {
        if let ExtraEntry::File { from, .. } = entry {
            wanted
                .entry(from.layer.digest.clone())
                .or_insert_with(|| (from.layer.clone(), BTreeSet::new()))
                .1
                .insert(from.path.clone());
        }
    }
    let mut bytes: BTreeMap<(Digest, String), Vec<u8>> = BTreeMap::new();
    for (digest, (descriptor, paths)) in &wanted {
        for (path, data) in read_files(store, descriptor, paths)? {
            bytes.insert((digest.clone(), path), data);
        }
    }
    let mut tree = FileTree::new();
    // A hard link must sort after its target in the tar: if it does not,
    // the link's path carries the bytes and the target links to it.
    let mut swapped: BTreeMap<String, String> = BTreeMap::new();
    for (path, entry) in &extra.entries {
        if let ExtraEntry::HardLink { target } = entry {
            if target.as_str() > path.as_str() {
                swapped.insert(target.clone(), path.clone());
            }
        }
    }
    for (path, entry) in &extra.entries {
        let tree_entry = match entry {
            ExtraEntry::Directory { mode, uid, gid } => TreeEntry {
                kind: EntryKind::Directory,
                mode: *mode,
                uid: *uid,
                gid: *gid,
            },
            ExtraEntry::Symlink { target, uid, gid } => TreeEntry {
                kind: EntryKind::Symlink {
                    target: target.clone(),
                },
                mode: 0o777,
                uid: *uid,
                gid: *gid,
            },
            ExtraEntry::File {
                mode,
                uid,
                gid,
                from,
            } => {
                let data = bytes
                    .get(&(from.layer.digest.clone(), from.path.clone()))
                    .ok_or_else(|| {
                        anyhow!(
                            "layer {} holds no regular file /{}",
                            from.layer.digest,
                            from.path
                        )
                    })?;
                let got = Digest::of_bytes(data);
                if got != from.content {
                    bail!(
                        "/{} in layer {} has content {got}, its index says {}: the store is corrupt",
                        from.path,
                        from.layer.digest,
                        from.content
                    );
                }
                let kind = match swapped.get(path) {
                    Some(link) => EntryKind::HardLink {
                        target: link.clone(),
                    },
                    None => EntryKind::File(FileSource::Bytes(data.clone())),
                };
                TreeEntry {
                    kind,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                }
            }
            ExtraEntry::HardLink { target } => {
                let ExtraEntry::File {
                    mode,
                    uid,
                    gid,
                    from,
                } = extra.entries.get(target).ok_or_else(|| {
                    anyhow!("hard link /{path}: target /{target} is not in the layer")
                })?
                else {
                    bail!("hard link /{path}: target /{target} is not a regular file");
                };
                let kind = if swapped.contains_key(target) {
                    let data = &bytes[&(from.layer.digest.clone(), from.path.clone())];
                    EntryKind::File(FileSource::Bytes(data.clone()))
                } else {
                    EntryKind::HardLink {
                        target: target.clone(),
                    }
                };
                TreeEntry {
                    kind,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                }
            }
        };
        tree.insert(path, tree_entry)?;
    }
    let written = write_layer_to_layout(&tree, &LayerOptions::default(), store.layout())?;
    let layer = ImageLayer {
        descriptor: written.descriptor(),
        diff_id: written.diff_id.clone(),
        history: history.clone(),
    };
    store.write_meta(
        META_EXTRA_LAYER,
        &key,
        &serde_json::to_vec(&CachedLayer {
            descriptor: layer.descriptor.clone(),
            diff_id: layer.diff_id.clone(),
        })?,
    )?;
    ensure_layer_index(store, &layer.descriptor)?;
    Ok(layer)
}

/// The image layers of a composition: package layers as they are, extra
/// layers built.
pub fn materialize(store: &Store, composition: &Composition) -> Result<Vec<ImageLayer>> {
    composition
        .layers
        .iter()
        .map(|layer| match layer {
            PlannedLayer::Reuse(layer) => Ok((**layer).clone()),
            PlannedLayer::Extra { layer, history } => materialize_extra(store, layer, history),
        })
        .collect()
}

/// `--flatten`: one layer holding the merged tree of `layers` (whiteouts
/// applied; hard links kept when their target still holds the same bytes
/// at the end, copied otherwise). Holds file bytes in memory.
pub fn flatten(store: &Store, layers: &[ImageLayer], history: &History) -> Result<ImageLayer> {
    let mut tree: BTreeMap<String, TreeEntry> = BTreeMap::new();
    let mut links: BTreeMap<String, (String, Digest)> = BTreeMap::new();
    for layer in layers {
        let descriptor = &layer.descriptor;
        let blob = store
            .layout()
            .open_blob(&descriptor.digest, Some(descriptor.size))?;
        let mut archive = tar::Archive::new(decompress(blob, compression(descriptor)?)?);
        let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let header = entry.header().clone();
            let mode = header.mode()? & 0o7777;
            let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
            let path = match tree_path_of(&raw)? {
                PathMeaning::Skip => continue,
                PathMeaning::Whiteout(p) => {
                    remove_subtree(&mut tree, &p, true);
                    continue;
                }
                PathMeaning::Opaque(p) => {
                    remove_subtree(&mut tree, &p, false);
                    continue;
                }
                PathMeaning::Entry(p) => p,
            };
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let kind = match header.entry_type() {
                tar::EntryType::Directory => EntryKind::Directory,
                tar::EntryType::Symlink => EntryKind::Symlink {
                    target: link.unwrap_or_default(),
                },
                tar::EntryType::Link => {
                    let target = crate::layer::tree::normalize_path(&link.unwrap_or_default())?;
                    let data = contents.get(&target).cloned().ok_or_else(|| {
                        anyhow!(
                            "layer {}: hard link /{path} to missing /{target}",
                            descriptor.digest
                        )
                    })?;
                    links.insert(path.clone(), (target, Digest::of_bytes(&data)));
                    contents.insert(path.clone(), data.clone());
                    EntryKind::File(FileSource::Bytes(data))
                }
                t if t.is_file() => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data)?;
                    contents.insert(path.clone(), data.clone());
                    links.remove(&path);
                    EntryKind::File(FileSource::Bytes(data))
                }
                other => bail!(
                    "--flatten: layer {} entry /{path} has unsupported type {other:?}",
                    descriptor.digest
                ),
            };
            if !matches!(kind, EntryKind::Directory) {
                remove_subtree(&mut tree, &path, true);
            } else if tree.get(&path).is_some_and(|e| !e.is_dir()) {
                tree.remove(&path);
            }
            tree.insert(
                path,
                TreeEntry {
                    kind,
                    mode,
                    uid,
                    gid,
                },
            );
        }
    }
    // Keep hard links whose target still holds the bytes they were made of.
    for (path, (target, digest)) in &links {
        let keep = target < path
            && matches!(tree.get(target), Some(TreeEntry { kind: EntryKind::File(FileSource::Bytes(b)), .. }) if Digest::of_bytes(b) == *digest)
            && matches!(
                tree.get(path),
                Some(TreeEntry {
                    kind: EntryKind::File(_),
                    ..
                })
            );
        if keep {
            let entry = tree.get_mut(path).expect("checked");
            entry.kind = EntryKind::HardLink {
                target: target.clone(),
            };
        }
    }
    let mut file_tree = FileTree::new();
    for (path, entry) in tree {
        file_tree.insert(&path, entry)?;
    }
    let written = write_layer_to_layout(&file_tree, &LayerOptions::default(), store.layout())?;
    Ok(ImageLayer {
        descriptor: written.descriptor(),
        diff_id: written.diff_id,
        history: history.clone(),
    })
}

fn remove_subtree(tree: &mut BTreeMap<String, TreeEntry>, path: &str, including_self: bool) {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let doomed: Vec<String> = tree
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        tree.remove(&k);
    }
    if including_self {
        tree.remove(path);
    }
}
