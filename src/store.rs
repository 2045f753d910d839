//! The local content-addressed store: one OCI image layout used as the cache
//! for every command (pulled package images, composed pallets, built
//! packages), plus derived metadata kept beside the blobs (e.g. a layer's
//! file index, computed once when the blob arrives).
//!
//! Location: `$STAGEX_STORE`, else `$XDG_CACHE_HOME/stagex/store`, else
//! `~/.cache/stagex/store`. Metadata lives in `<store>/meta/<kind>/<hex>`;
//! being outside `blobs/`, it never confuses OCI tools reading the layout.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::oci::digest::Digest;
use crate::oci::layout::{write_atomic, Layout};

pub mod intake;
pub mod layer_index;
pub use intake::{IntakeError, Tee};
pub use layer_index::{LayerIndexError, META_LAYER_INDEX};

/// A local store rooted at a directory.
#[derive(Clone, Debug)]
pub struct Store {
    layout: Layout,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Ok(Store {
            layout: Layout::create(path)?,
        })
    }

    /// Opens the store at its default location.
    pub fn open_default() -> Result<Store> {
        Store::open(Store::default_location()?)
    }

    /// The default store directory (see the module doc).
    pub fn default_location() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("STAGEX_STORE").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        match user_cache_dir() {
            Some(cache) => Ok(cache.join("store")),
            None => {
                bail!("cannot locate the stagex store: set STAGEX_STORE (or HOME / XDG_CACHE_HOME)")
            }
        }
    }

    /// The store's OCI image layout (blobs are verified on every read).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    fn meta_path(&self, kind: &str, digest: &Digest) -> PathBuf {
        self.root().join("meta").join(kind).join(digest.hex())
    }

    /// Derived metadata of `kind` for a blob, if computed before.
    pub fn read_meta(&self, kind: &str, digest: &Digest) -> Option<Vec<u8>> {
        fs::read(self.meta_path(kind, digest)).ok()
    }

    /// Records derived metadata for a blob (atomic replace).
    pub fn write_meta(&self, kind: &str, digest: &Digest, bytes: &[u8]) -> Result<()> {
        assert!(
            !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "metadata kind must be a plain name"
        );
        write_atomic(&self.meta_path(kind, digest), bytes)
    }
}

/// The user's stagex cache directory, home of the store and of every cache
/// file: `$XDG_CACHE_HOME/stagex` (when absolute, as the XDG spec says), else
/// `~/.cache/stagex`; `None` without either variable.
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("stagex"))
}

/// A cache file: the path in `$env` (`off` or empty disables it), else
/// `name` in `user_cache_dir()`.
pub fn cache_file(env: &str, name: &str) -> Option<PathBuf> {
    match std::env::var_os(env) {
        Some(value) if value == "off" || value.is_empty() => None,
        Some(value) => Some(PathBuf::from(value)),
        None => user_cache_dir().map(|dir| dir.join(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_a_layout_with_side_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let digest = store.layout().write_blob(b"layer").unwrap();
        assert!(store.read_meta("layer-index", &digest).is_none());
        store.write_meta("layer-index", &digest, b"{}").unwrap();
        assert_eq!(store.read_meta("layer-index", &digest).unwrap(), b"{}");
        // Re-opening sees the same content and still validates as a layout.
        let again = Store::open(dir.path().join("s")).unwrap();
        assert_eq!(again.layout().read_blob(&digest).unwrap(), b"layer");
        Layout::open(dir.path().join("s")).unwrap();
    }
}
