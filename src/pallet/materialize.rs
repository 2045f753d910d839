//! The I/O half of composition, against the local store:
//! - layer indexes: computed once when a blob arrives and kept as store
//!   metadata (`layer-index`, keyed by the compressed layer digest), so a
//!   warm compose never decompresses a package layer;
//! - extra layers (copies, links): built from their plan with the layer
//!   writer (mtime 1, pinned gzip), file bytes read from the package layer
//!   named in the plan and checked against the indexed content digest;
//!   cached under `extra-layer` keyed by the plan's digest;
//! - `--flatten`: the store side of `layer::squash` (blobs opened from the
//!   store, the squashed layer written into it).
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::compose::{Composition, ExtraEntry, ExtraLayer, PlannedLayer};
use crate::layer::entries::{EntryType, LayerTar};
use crate::layer::reader::{index_layer, LayerIndex};
use crate::layer::squash::{squash, SquashInput};
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
    let mut tar = LayerTar::new(blob, compression(layer)?)?;
    let mut found = BTreeMap::new();
    for entry in tar.entries()? {
        let mut entry = entry.with_context(|| format!("reading layer {}", layer.digest))?;
        if entry.kind == EntryType::File && paths.contains(&entry.path) {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading /{} of layer {}", entry.path, layer.digest))?;
            found.insert(entry.path.clone(), bytes);
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

/// `--flatten`: one layer holding the merged tree of `layers` (see
/// `layer::squash` for the rules), written to the store.
pub fn flatten(store: &Store, layers: &[ImageLayer], history: &History) -> Result<ImageLayer> {
    let inputs = layers
        .iter()
        .map(|layer| {
            let descriptor = &layer.descriptor;
            Ok(SquashInput {
                name: descriptor.digest.to_string(),
                blob: Box::new(
                    store
                        .layout()
                        .open_blob(&descriptor.digest, Some(descriptor.size))?,
                ),
                compression: compression(descriptor)?,
                diff_id: Some(layer.diff_id.clone()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let written = squash(inputs, &LayerOptions::default(), store.layout()).context("--flatten")?;
    Ok(ImageLayer {
        descriptor: written.descriptor(),
        diff_id: written.diff_id,
        history: history.clone(),
    })
}
