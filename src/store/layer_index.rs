//! Owns: the store's layer indexes: a layer blob's file index (entries,
//! diff_id, tar size and the entry rules' verdict, see `layer::reader`),
//! computed once when the blob arrives and kept as store metadata, and the
//! one way to read it back: `Store::layer_index` (by descriptor, indexing
//! the blob if needed) and `Store::cached_layer_index` (by blob digest).
//! `pallet` composes from these and `diff` compares them.
//!
//! The metadata kind carries the format's version (`layer-index-v2`): an
//! index written by an older stagex lacks the verdict and the size, so it
//! is never read as one; the layer is indexed again. A cached index names
//! the layer it was made from, and reading it checks that name and the
//! size limit (`STAGEX_MAX_LAYER_BYTES`, which may have been lowered since).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::layer::entries::{max_layer_bytes, EntryError, LayerTooLarge};
use crate::layer::reader::{index_layer, LayerIndex};
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::media_type;
use crate::oci::media_type::LayerCompression;

/// Store metadata kind of layer indexes (versioned: see the module doc).
pub const META_LAYER_INDEX: &str = "layer-index-v2";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a layer's index cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum LayerIndexError {
    #[error("layer {digest} has media type {media_type:?}, which is not a layer")]
    NotALayer { digest: Digest, media_type: String },
    #[error("indexing layer {digest}")]
    Indexing {
        digest: Digest,
        #[source]
        source: BoxError,
    },
    #[error("layer {digest}")]
    TooLarge {
        digest: Digest,
        #[source]
        source: LayerTooLarge,
    },
    #[error("{0}")]
    Limit(#[from] EntryError),
    #[error(
        "the cached index of layer {digest} ({path}) is corrupt: {source}; \
         delete that file and run again"
    )]
    Corrupt {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the cached index {path} was made from layer {found}, not {digest}: the store's \
         metadata is damaged; delete that file and run again"
    )]
    Mismatch {
        digest: Digest,
        found: Digest,
        path: PathBuf,
    },
    #[error("recording the index of layer {digest} in the store")]
    Write {
        digest: Digest,
        #[source]
        source: BoxError,
    },
}

/// What is stored: the index and the layer it was made from.
#[derive(Serialize, Deserialize)]
struct CachedIndex {
    layer: Digest,
    index: LayerIndex,
}

impl Store {
    /// Where the index of the layer blob `digest` is kept (for messages
    /// telling what to delete).
    pub fn layer_index_path(&self, digest: &Digest) -> PathBuf {
        self.meta_path(META_LAYER_INDEX, digest)
    }

    /// True when the layer's index (current format) is in the store.
    pub fn has_layer_index(&self, digest: &Digest) -> bool {
        self.meta_path(META_LAYER_INDEX, digest).is_file()
    }

    /// Indexes a layer blob of the store unless its index is there. Call
    /// it when the blob arrives.
    pub fn ensure_layer_index(&self, layer: &Descriptor) -> Result<(), LayerIndexError> {
        if !self.has_layer_index(&layer.digest) {
            self.index_and_record(layer)?;
        }
        Ok(())
    }

    /// The index of a layer blob of the store, indexing it first if needed.
    pub fn layer_index(&self, layer: &Descriptor) -> Result<LayerIndex, LayerIndexError> {
        match self.cached_layer_index(&layer.digest)? {
            Some(index) => Ok(index),
            None => self.index_and_record(layer),
        }
    }

    /// The cached index of the layer blob `digest`, if it was made before.
    pub fn cached_layer_index(
        &self,
        digest: &Digest,
    ) -> Result<Option<LayerIndex>, LayerIndexError> {
        let Some(bytes) = self.read_meta(META_LAYER_INDEX, digest) else {
            return Ok(None);
        };
        let path = self.meta_path(META_LAYER_INDEX, digest);
        let cached: CachedIndex =
            serde_json::from_slice(&bytes).map_err(|source| LayerIndexError::Corrupt {
                digest: digest.clone(),
                path: path.clone(),
                source,
            })?;
        if cached.layer != *digest {
            return Err(LayerIndexError::Mismatch {
                digest: digest.clone(),
                found: cached.layer,
                path,
            });
        }
        check_size(digest, &cached.index)?;
        Ok(Some(cached.index))
    }

    fn index_and_record(&self, layer: &Descriptor) -> Result<LayerIndex, LayerIndexError> {
        let digest = &layer.digest;
        let compression = self.layer_compression(layer)?;
        let index = self
            .layout()
            .open_blob(digest, Some(layer.size))
            .and_then(|blob| index_layer(blob, compression))
            .map_err(|e| self.indexing_error(digest, e))?;
        self.record_layer_index(digest, index)
    }

    /// How layer `layer` is compressed, or why it is not a layer.
    pub(super) fn layer_compression(
        &self,
        layer: &Descriptor,
    ) -> Result<LayerCompression, LayerIndexError> {
        media_type::layer_compression(&layer.media_type).ok_or_else(|| LayerIndexError::NotALayer {
            digest: layer.digest.clone(),
            media_type: layer.media_type.clone(),
        })
    }

    /// The typed error of a failed `index_layer` run on layer `digest`.
    pub(super) fn indexing_error(&self, digest: &Digest, source: anyhow::Error) -> LayerIndexError {
        match source.downcast::<EntryError>() {
            Ok(EntryError::TooLarge(source)) => LayerIndexError::TooLarge {
                digest: digest.clone(),
                source,
            },
            Ok(other) => LayerIndexError::Indexing {
                digest: digest.clone(),
                source: other.into(),
            },
            Err(source) => LayerIndexError::Indexing {
                digest: digest.clone(),
                source: source.into(),
            },
        }
    }

    /// Keeps `index` as the index of the stored layer blob `digest`.
    pub(super) fn record_layer_index(
        &self,
        digest: &Digest,
        index: LayerIndex,
    ) -> Result<LayerIndex, LayerIndexError> {
        let cached = CachedIndex {
            layer: digest.clone(),
            index,
        };
        let write_error = |source: BoxError| LayerIndexError::Write {
            digest: digest.clone(),
            source,
        };
        let bytes = serde_json::to_vec(&cached).map_err(|e| write_error(e.into()))?;
        self.write_meta(META_LAYER_INDEX, digest, &bytes)
            .map_err(|e| write_error(e.into()))?;
        Ok(cached.index)
    }
}

/// A cached index of a layer larger than the limit in force is refused as
/// the layer itself would be.
fn check_size(digest: &Digest, index: &LayerIndex) -> Result<(), LayerIndexError> {
    let limit = max_layer_bytes()?;
    if index.tar_size > limit {
        return Err(LayerIndexError::TooLarge {
            digest: digest.clone(),
            source: LayerTooLarge { limit },
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layer::tree::{FileSource, FileTree, TreeEntry};
    use crate::layer::writer::{write_layer_to_layout, LayerOptions};

    /// A store holding one layer with the regular file `a` (also used by
    /// the pallet materializer's tests).
    pub(crate) fn store_with_layer() -> (tempfile::TempDir, Store, Descriptor) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let mut tree = FileTree::new();
        tree.insert(
            "a",
            TreeEntry::file(FileSource::Bytes(b"a".to_vec()), 0o644),
        )
        .unwrap();
        let written =
            write_layer_to_layout(&tree, &LayerOptions::default(), store.layout()).unwrap();
        (dir, store, written.descriptor())
    }

    #[test]
    fn an_index_is_made_once_and_read_back_by_digest() {
        let (_dir, store, layer) = store_with_layer();
        // An index of the old format (no verdict) is not read as current.
        store
            .write_meta("layer-index", &layer.digest, b"{\"entries\":[]}")
            .unwrap();
        assert!(!store.has_layer_index(&layer.digest));
        assert!(store.cached_layer_index(&layer.digest).unwrap().is_none());
        let index = store.layer_index(&layer).unwrap();
        assert_eq!(index.entries.len(), 1);
        assert!(index.tar_size >= 1024);
        assert_eq!(
            store.cached_layer_index(&layer.digest).unwrap(),
            Some(index)
        );
        assert!(store.has_layer_index(&layer.digest));
    }

    #[test]
    fn an_index_of_another_layer_or_garbage_is_a_typed_error() {
        let (_dir, store, layer) = store_with_layer();
        let index = store.layer_index(&layer).unwrap();
        let other = Digest::of_bytes(b"other");
        let foreign = serde_json::to_vec(&CachedIndex {
            layer: layer.digest.clone(),
            index,
        })
        .unwrap();
        store
            .write_meta(META_LAYER_INDEX, &other, &foreign)
            .unwrap();
        let error = store.cached_layer_index(&other).unwrap_err();
        assert!(matches!(error, LayerIndexError::Mismatch { .. }), "{error}");
        store
            .write_meta(META_LAYER_INDEX, &layer.digest, b"{")
            .unwrap();
        let error = store.layer_index(&layer).unwrap_err();
        assert!(matches!(error, LayerIndexError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("delete that file"), "{error}");
    }
}
