//! Layers: an in-memory file tree, the deterministic tar writer and its
//! pinned parallel gzip, the one tar entry iterator, the index, safe
//! extraction and squashing.
//!
//! `tree` is pure data; `writer` and `compress` turn a tree into exact layer
//! bytes (the reproducibility contract lives there); `entries` is the only
//! walk over a layer's tar, and `reader` (index), `extract` and `squash`
//! consume layers from anywhere through it and never trust them; `rules` is
//! the one rule set all of them (and the pallet composer) apply to entries.
pub mod compress;
pub mod entries;
pub mod extract;
pub mod reader;
pub mod rules;
pub mod squash;
pub mod tree;
pub mod writer;

pub use entries::{
    decompress, tree_path_of, Entry, EntryError, EntryInfo, EntryType, LayerTar, PathMeaning,
};
pub use extract::{extract_layer, ExtractOptions};
pub use reader::{index_layer, LayerEntry, LayerIndex, Verdict};
pub use rules::{Finding, SpecialFiles, Violation};
pub use squash::{squash, SquashInput};
pub use tree::{normalize_path, EntryKind, FileSource, FileTree, TreeEntry};
pub use writer::{write_layer, write_layer_to_layout, LayerOptions, WrittenLayer};
