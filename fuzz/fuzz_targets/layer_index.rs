#![no_main]
//! Owns: fuzzing a layer blob through the one tar walk as the index sees
//! it (uncompressed, gzip, and zstd, which must be a clear error): every
//! entry it yields has a normalized relative path, so no consumer can be
//! led outside its root by a path the walk accepted.
use libfuzzer_sys::fuzz_target;
use stagex::layer::{index_layer, EntryType, LayerIndex};
use stagex::oci::media_type::LayerCompression;

fuzz_target!(|data: &[u8]| {
    for compression in [LayerCompression::None, LayerCompression::Gzip] {
        match index_layer(data, compression) {
            Ok(index) => check(&index),
            Err(e) => {
                let _ = format!("{e:#}");
            }
        }
    }
    assert!(index_layer(data, LayerCompression::Zstd).is_err());
});

fn check(index: &LayerIndex) {
    for entry in &index.entries {
        let root_opaque = entry.kind == EntryType::OpaqueWhiteout && entry.path.is_empty();
        if !root_opaque {
            assert_normalized(&entry.path);
        }
        if entry.kind == EntryType::HardLink {
            assert_normalized(
                entry
                    .link_target
                    .as_deref()
                    .expect("a hard link has a target"),
            );
        }
        if entry.kind == EntryType::File {
            assert!(entry.content_digest.is_some(), "{entry:?}");
        }
    }
}

fn assert_normalized(path: &str) {
    assert!(!path.is_empty(), "empty entry path");
    assert!(!path.starts_with('/'), "absolute entry path {path:?}");
    assert!(
        path.split('/').all(|c| !matches!(c, "" | "." | "..")),
        "unnormalized entry path {path:?}"
    );
    assert!(!path.contains('\0'), "NUL in entry path {path:?}");
}
