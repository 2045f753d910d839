//! The I/O half of composition, against the local store (whose layer
//! indexes, `store::layer_index`, the composer plans from):
//! - extra layers (copies, links): built from their plan with the layer
//!   writer (mtime 1, pinned gzip), file bytes read from the package layer
//!   named in the plan and checked against the indexed content digest;
//!   cached under `extra-layer` keyed by the plan's digest;
//! - `--flatten`: the store side of `layer::squash` (blobs opened from the
//!   store, the squashed layer written into it).
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::compose::{Composition, ContentRef, ExtraEntry, ExtraLayer, PlannedLayer};
use crate::layer::entries::{EntryType, LayerTar};
use crate::layer::squash::{squash, SquashInput};
use crate::layer::tree::{EntryKind, FileSource, FileTree, TreeEntry};
use crate::layer::writer::{write_layer_to_layout, LayerOptions};
use crate::oci::config::History;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::image::ImageLayer;
use crate::oci::media_type;
use crate::store::Store;

/// Store metadata kind of built extra layers.
pub const META_EXTRA_LAYER: &str = "extra-layer";

/// The store's layer index and the layer itself disagree.
#[derive(Debug, thiserror::Error)]
#[error(
    "the index of layer {layer} lists the regular file /{path}, but the layer holds no \
     such file: the store's index is stale or damaged; delete {index} and run again"
)]
pub struct IndexMismatch {
    pub layer: Digest,
    pub path: String,
    pub index: PathBuf,
}

fn compression(descriptor: &Descriptor) -> Result<media_type::LayerCompression> {
    media_type::layer_compression(&descriptor.media_type).ok_or_else(|| {
        anyhow!(
            "layer {} has media type {:?}, which is not a layer",
            descriptor.digest,
            descriptor.media_type
        )
    })
}

/// Reads the regular files `paths` of a layer blob (hard links inside the
/// layer are not followed: the plan names the data entry). A path the
/// layer does not hold is an `IndexMismatch`: the plan came from its index.
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
    if let Some(missing) = paths.iter().find(|p| !found.contains_key(*p)) {
        return Err(IndexMismatch {
            layer: layer.digest.clone(),
            path: missing.clone(),
            index: store.layer_index_path(&layer.digest),
        }
        .into());
    }
    Ok(found)
}

/// The bytes of every file an extra layer plans, keyed by (source layer,
/// path in it), read from the source layers in the store.
fn read_planned_files(
    store: &Store,
    extra: &ExtraLayer,
) -> Result<BTreeMap<(Digest, String), Vec<u8>>> {
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
    let mut bytes = BTreeMap::new();
    for (digest, (descriptor, paths)) in &wanted {
        for (path, data) in read_files(store, descriptor, paths)? {
            bytes.insert((digest.clone(), path), data);
        }
    }
    Ok(bytes)
}

/// A hard link must sort after its target in the tar: where it does not,
/// the link's path carries the bytes and the target links to it. Returns
/// target -> link for those.
fn swapped_links(extra: &ExtraLayer) -> BTreeMap<String, String> {
    let mut swapped = BTreeMap::new();
    for (path, entry) in &extra.entries {
        if let ExtraEntry::HardLink { target } = entry {
            if target.as_str() > path.as_str() {
                swapped.insert(target.clone(), path.clone());
            }
        }
    }
    swapped
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
    let bytes = read_planned_files(store, extra)?;
    let swapped = swapped_links(extra);
    let mut tree = FileTree::new();
    for (path, entry) in &extra.entries {
        tree.insert(path, tree_entry(extra, path, entry, &bytes, &swapped)?)?;
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
    store.ensure_layer_index(&layer.descriptor)?;
    Ok(layer)
}

/// The file-tree entry of one planned entry: files from their bytes
/// (checked against the indexed digest), hard links swapped with their
/// target where the link sorts first (`swapped_links`).
fn tree_entry(
    extra: &ExtraLayer,
    path: &str,
    entry: &ExtraEntry,
    bytes: &BTreeMap<(Digest, String), Vec<u8>>,
    swapped: &BTreeMap<String, String>,
) -> Result<TreeEntry> {
    Ok(match entry {
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
            let data = file_bytes(bytes, from)?;
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
                let data = file_bytes(bytes, from)?;
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
    })
}

/// The bytes read for a planned file (`read_files` has checked that every
/// planned file was found).
fn file_bytes<'b>(
    bytes: &'b BTreeMap<(Digest, String), Vec<u8>>,
    from: &ContentRef,
) -> Result<&'b Vec<u8>> {
    bytes
        .get(&(from.layer.digest.clone(), from.path.clone()))
        .ok_or_else(|| {
            anyhow!(
                "layer {} holds no regular file /{}",
                from.layer.digest,
                from.path
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::layer_index::tests::store_with_layer;

    #[test]
    fn a_plan_naming_a_file_its_layer_lacks_is_a_typed_error_not_a_panic() {
        let (_dir, store, layer) = store_with_layer();
        // As planned from an index that does not match the layer: the
        // hard link sorts before its target, so the target's bytes are
        // looked up for the link first.
        let mut extra = ExtraLayer::default();
        extra
            .entries
            .insert("b-link".into(), ExtraEntry::HardLink { target: "z".into() });
        extra.entries.insert(
            "z".into(),
            ExtraEntry::File {
                mode: 0o644,
                uid: 0,
                gid: 0,
                from: Box::new(ContentRef {
                    layer: layer.clone(),
                    path: "not-in-the-layer".into(),
                    content: Digest::of_bytes(b"x"),
                    size: 1,
                }),
            },
        );
        let error = materialize_extra(&store, &extra, &History::default()).unwrap_err();
        let mismatch = error
            .downcast_ref::<IndexMismatch>()
            .expect("IndexMismatch");
        assert_eq!(mismatch.path, "not-in-the-layer");
        assert_eq!(mismatch.layer, layer.digest);
        assert!(error.to_string().contains("layer-index-v2"), "{error}");
    }
}
