//! Layers: an in-memory file tree, the deterministic tar writer and its
//! pinned parallel gzip, the tar reader/index, and safe extraction.
//!
//! `tree` is pure data; `writer` and `compress` turn a tree into exact layer
//! bytes (the reproducibility contract lives there); `reader` and `extract`
//! consume layers from anywhere and never trust them.
pub mod compress;
pub mod extract;
pub mod reader;
pub mod tree;
pub mod writer;

pub use extract::{extract_layer, ExtractOptions};
pub use reader::{
    decompress, index_layer, tree_path_of, EntryType, LayerEntry, LayerIndex, PathMeaning,
};
pub use tree::{normalize_path, EntryKind, FileSource, FileTree, TreeEntry};
pub use writer::{write_layer, write_layer_to_layout, LayerOptions, WrittenLayer};
