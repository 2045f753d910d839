//! Shared by the layer tests: the golden tree spec (tests/fixtures/
//! golden-tree.toml), materializing it on disk, and the pinned digests.
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use serde::Deserialize;
use stagex::layer::{write_layer, FileTree, LayerOptions, WrittenLayer};

/// Pinned digests of the golden tree's layer (owners forced to 0:0,
/// mtime 1, gzip). They change when: the fixture changes, the tar header
/// rules in src/layer/writer.rs change (diff_id and digest), or the pinned
/// compressor changes: GZIP_LEVEL, BLOCK_SIZE, the gzip header, or the
/// flate2 backend/version (zlib-rs) in Cargo.toml (digest only).
pub const GOLDEN_DIFF_ID: &str =
    "sha256:c5387b9df92cf2c6a90154dbd9086c37c0db99542f4d0e10459d74516dd57fec";
pub const GOLDEN_DIGEST: &str =
    "sha256:13b842f87525fe675fdb8c9d95cf8f17437ade3d420ddf429c576935d14afa4e";

#[derive(Debug, Deserialize)]
pub struct Spec {
    pub entry: Vec<SpecEntry>,
}

#[derive(Debug, Deserialize)]
pub struct SpecEntry {
    pub path: String,
    pub kind: String,
    pub mode: Option<u32>,
    pub content: Option<String>,
    pub target: Option<String>,
}

pub fn load_spec() -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-tree.toml");
    let text = fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap()
}

/// Creates the spec's tree under `root`, in spec order or reversed (hard
/// links always after their targets exist), then sets every mode from the
/// spec (so neither umask nor creation order decides anything).
pub fn materialize(root: &Path, spec: &Spec, reverse: bool) {
    let dirs: Vec<&str> = spec
        .entry
        .iter()
        .filter(|e| e.kind == "dir")
        .map(|e| e.path.as_str())
        .collect();
    for e in &spec.entry {
        if let Some((parent, _)) = e.path.rsplit_once('/') {
            assert!(dirs.contains(&parent), "spec must list directory {parent}");
        }
    }
    let mut order: Vec<&SpecEntry> = spec.entry.iter().collect();
    if reverse {
        order.reverse();
    }
    for e in order.iter().filter(|e| e.kind != "hardlink") {
        let full = root.join(&e.path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        match e.kind.as_str() {
            "dir" => fs::create_dir_all(&full).unwrap(),
            "file" => fs::write(&full, e.content.as_deref().unwrap()).unwrap(),
            "symlink" => symlink(e.target.as_deref().unwrap(), &full).unwrap(),
            other => panic!("unknown kind {other}"),
        }
    }
    for e in order.iter().filter(|e| e.kind == "hardlink") {
        fs::hard_link(root.join(e.target.as_deref().unwrap()), root.join(&e.path)).unwrap();
    }
    let mut with_modes: Vec<&SpecEntry> = spec.entry.iter().filter(|e| e.mode.is_some()).collect();
    with_modes.sort_by(|a, b| b.path.cmp(&a.path));
    for e in with_modes {
        fs::set_permissions(
            root.join(&e.path),
            fs::Permissions::from_mode(e.mode.unwrap()),
        )
        .unwrap();
    }
}

/// Materializes the golden tree under `dir` and writes its layer.
pub fn golden_layer(dir: &Path, reverse: bool, options: &LayerOptions) -> (WrittenLayer, Vec<u8>) {
    let root = dir.join("tree");
    fs::create_dir(&root).unwrap();
    materialize(&root, &load_spec(), reverse);
    let mut tree = FileTree::from_dir(&root).unwrap();
    tree.set_owner_all(0, 0);
    let mut blob = Vec::new();
    let written = write_layer(&tree, options, &mut blob).unwrap();
    (written, blob)
}

/// (path, kind, mode, link target or content) for comparing trees that live
/// in different directories.
pub fn summary(tree: &FileTree) -> Vec<(String, String, u32, Vec<u8>)> {
    use stagex::layer::{EntryKind, FileSource};
    tree.entries()
        .map(|(p, e)| {
            let (kind, detail) = match &e.kind {
                EntryKind::Directory => ("dir", vec![]),
                EntryKind::File(FileSource::Path(f)) => ("file", fs::read(f).unwrap()),
                EntryKind::File(FileSource::Bytes(b)) => ("file", b.clone()),
                EntryKind::Symlink { target } => ("symlink", target.as_bytes().to_vec()),
                EntryKind::HardLink { target } => ("hardlink", target.as_bytes().to_vec()),
            };
            (p.clone(), kind.to_string(), e.mode, detail)
        })
        .collect()
}
