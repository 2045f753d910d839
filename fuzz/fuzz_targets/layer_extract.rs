#![no_main]
//! Owns: fuzzing extraction of an untrusted uncompressed layer into a
//! temporary directory, with the rule that a layer only ever writes inside
//! its target: a sibling directory beside the target must be exactly as it
//! was afterwards, whatever the layer held (`..`, symlinks written
//! through, hard links out, whiteouts of `..`).
use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stagex::layer::{extract_layer, ExtractOptions};
use stagex::oci::media_type::LayerCompression;

const SENTINEL: &[u8] = b"must not change";

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().expect("a temp dir");
    let outside = scratch.path().join("outside");
    fs::create_dir(&outside).expect("outside dir");
    fs::write(outside.join("sentinel"), SENTINEL).expect("sentinel");
    let target = scratch.path().join("root");
    let options = ExtractOptions { chown: false };
    if let Err(e) = extract_layer(data, LayerCompression::None, &target, &options) {
        let _ = format!("{e:#}");
    }
    assert_untouched(scratch.path(), &outside);
});

/// The scratch dir holds only `outside/` and `root/`, `outside/` only the
/// unchanged sentinel.
fn assert_untouched(scratch: &Path, outside: &Path) {
    let mut names: Vec<_> = fs::read_dir(scratch)
        .expect("list scratch")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["outside", "root"],
        "a layer wrote beside its target"
    );
    let inside: Vec<_> = fs::read_dir(outside)
        .expect("list outside")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(inside, ["sentinel"], "a layer wrote outside its target");
    let meta = fs::symlink_metadata(outside.join("sentinel")).expect("sentinel stat");
    assert!(meta.file_type().is_file(), "sentinel replaced");
    assert_eq!(
        fs::read(outside.join("sentinel")).expect("sentinel"),
        SENTINEL
    );
}
