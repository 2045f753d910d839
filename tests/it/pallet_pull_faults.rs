//! Owns: what a cold `stagex pallet` from a registry leaves in the store
//! when a layer's bytes on the registry are not the layer its manifest
//! names (the registry's blob file overwritten on disk): the pull fails
//! naming the layer, and neither the blob nor its index nor a temp file
//! is left behind; with the registry's bytes repaired, the same store
//! composes. Both corruptions are bytes the layer reader indexes without
//! complaint (a whole smaller layer; the gzip header's mtime changed), so
//! only the digest check stands between them and the store.
use crate::pallet_support;
use crate::peers;

use std::path::Path;

use pallet_support::*;
use peers::registry::Registry;
use stagex::oci::digest::Digest;

/// Composes with `store` expecting a failure that names `layer`; then
/// checks that the store holds nothing of it and no temp file.
fn fails_and_leaves_nothing(store: &Path, source: &str, layer: &Digest) {
    let stderr = pallet_fails(store, &["core-busybox+core-git", "--source", source]);
    assert!(stderr.contains(&layer.to_string()), "{stderr}");
    assert_store_holds_nothing_of(store, layer);
}

#[test]
fn a_corrupt_layer_on_the_registry_leaves_neither_blob_nor_index() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let world = write_packages(&out, &["core-busybox", "core-git"]);
    seed_registry(&registry.host(), &out, &world);
    let source = format!("{}/stagex", registry.host());
    // core-busybox's layer holds busybox: larger than core-git's.
    let victim = world["core-busybox"].layers[1].clone();
    let stored = registry.blob_file(victim.hex());
    let original = std::fs::read(&stored).unwrap();

    // Another package's (smaller) layer: valid gzip and tar, whole.
    let other = registry.blob_file(world["core-git"].layers[1].hex());
    assert!(std::fs::metadata(&other).unwrap().len() < original.len() as u64);
    std::fs::copy(&other, &stored).unwrap();
    fails_and_leaves_nothing(&tmp.path().join("store-swapped"), &source, &victim);

    // The right layer with another mtime in its gzip header (same size,
    // same tar inside).
    let mut flipped = original.clone();
    flipped[4] ^= 0x40;
    std::fs::write(&stored, &flipped).unwrap();
    let store = tmp.path().join("store-flipped");
    fails_and_leaves_nothing(&store, &source, &victim);

    // Repaired: the same store pulls, indexes and composes.
    std::fs::write(&stored, &original).unwrap();
    let report = pallet_json(&store, &["core-busybox+core-git", "--source", &source]);
    assert!(report["digest"].is_string(), "{report}");
    let index = store.join("meta/layer-index-v2").join(victim.hex());
    assert!(index.is_file(), "no index at {}", index.display());
}
