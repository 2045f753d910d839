//! Owns: the property tests (proptest) of invariants clearer stated than
//! shown by examples: a layer written from a tree reads back as that tree
//! (index and extraction), a layer's bytes do not depend on the order its
//! entries were given or created on disk nor on the compression threads, a
//! digests file reads back what was written, and a signature payload
//! survives its JSON bytes. Case counts are modest so the file runs in
//! seconds; the fuzz targets in fuzz/ cover malformed input.
use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use stagex::layer::{
    extract_layer, index_layer, EntryKind, EntryType, ExtractOptions, FileSource, FileTree,
    LayerOptions, TreeEntry,
};
use stagex::oci::media_type::LayerCompression;
use stagex::oci::Digest;
use stagex::release::digests::{self, DigestsByStage};
use stagex::sign::payload::Payload;

/// One entry a generated tree may hold; hard links name an earlier file.
#[derive(Clone, Debug)]
enum Spec {
    Dir(u32),
    File(Vec<u8>, u32),
    Symlink(String),
    HardLink(usize),
}

/// Path components: short, a dot name, non-ASCII, and one long enough to
/// need a pax/GNU long name.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("bin".to_string()),
        Just(".hidden".to_string()),
        Just("naïve".to_string()),
        Just("l".repeat(120)),
        "[a-z]{1,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..4).prop_map(|parts| parts.join("/"))
}

fn mode() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0o644u32),
        Just(0o755),
        Just(0o4755),
        Just(0o2711),
        Just(0o1777),
        0u32..0o10000,
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        mode().prop_map(Spec::Dir),
        (prop::collection::vec(any::<u8>(), 0..600), mode()).prop_map(|(b, m)| Spec::File(b, m)),
        prop_oneof![
            Just("/bin/sh".to_string()),
            Just("../x".to_string()),
            "[a-z/.]{1,12}"
        ]
        .prop_map(Spec::Symlink),
        any::<usize>().prop_map(Spec::HardLink),
    ]
}

fn specs() -> impl Strategy<Value = Vec<(String, Spec)>> {
    prop::collection::vec((path(), spec()), 1..12)
}

/// Builds a tree from `specs` in the given order, skipping entries the
/// tree refuses (a file under a file, a hard link with no earlier file).
fn tree_of(specs: &[(String, Spec)]) -> FileTree {
    let mut tree = FileTree::new();
    for (path, spec) in specs {
        let entry = match spec {
            Spec::Dir(mode) => TreeEntry::dir(*mode),
            Spec::File(bytes, mode) => TreeEntry::file(FileSource::Bytes(bytes.clone()), *mode),
            Spec::Symlink(target) => TreeEntry::symlink(target.clone()),
            Spec::HardLink(pick) => {
                let files: Vec<String> = tree
                    .entries()
                    .filter(|(p, e)| {
                        matches!(e.kind, EntryKind::File(_)) && p.as_str() < path.as_str()
                    })
                    .map(|(p, _)| p.clone())
                    .collect();
                if files.is_empty() {
                    continue;
                }
                TreeEntry::hard_link(files[pick % files.len()].clone(), 0o644)
            }
        };
        let _ = tree.insert(path, entry);
    }
    // A later insert may replace a hard link's target by a non-file.
    drop_broken_links(tree)
}

fn drop_broken_links(tree: FileTree) -> FileTree {
    let mut kept = FileTree::new();
    for (path, entry) in tree.entries() {
        let mut entry = entry.clone();
        if let EntryKind::HardLink { target } = &entry.kind {
            match tree.get(target) {
                // A hard link shares its file's inode, so its mode.
                Some(
                    file @ TreeEntry {
                        kind: EntryKind::File(_),
                        ..
                    },
                ) => entry.mode = file.mode,
                _ => continue,
            }
        }
        kept.insert(path, entry).expect("a valid tree stays valid");
    }
    kept
}

fn write(tree: &FileTree, compression: LayerCompression, workers: usize) -> Vec<u8> {
    let options = LayerOptions {
        compression,
        workers,
        ..LayerOptions::default()
    };
    let mut out = Vec::new();
    stagex::layer::write_layer(tree, &options, &mut out).expect("a valid tree writes");
    out
}

/// An index entry as compared: path, kind, mode, link target, content digest.
type IndexedAs = (String, EntryType, u32, Option<String>, Option<Digest>);

/// What the index must say of each tree entry: kind, mode, link target,
/// content digest.
fn expected_index(tree: &FileTree) -> Vec<IndexedAs> {
    tree.entries()
        .map(|(path, entry)| {
            let (kind, target, digest) = match &entry.kind {
                EntryKind::Directory => (EntryType::Directory, None, None),
                EntryKind::File(FileSource::Bytes(b)) => {
                    (EntryType::File, None, Some(Digest::of_bytes(b)))
                }
                EntryKind::File(FileSource::Path(_)) => unreachable!("trees here hold bytes"),
                EntryKind::Symlink { target } => (EntryType::Symlink, Some(target.clone()), None),
                EntryKind::HardLink { target } => (EntryType::HardLink, Some(target.clone()), None),
            };
            (path.clone(), kind, entry.mode, target, digest)
        })
        .collect()
}

/// Creates `tree` on disk under `root`, its entries in the order of `order`
/// (a permutation of entry positions); parents first whatever the order.
fn create_on_disk(tree: &FileTree, order: &[usize], root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let entries: Vec<(&String, &TreeEntry)> = tree.entries().collect();
    let mut pending: Vec<usize> = order.to_vec();
    // Hard links need their target; directories their parent: repeat.
    while !pending.is_empty() {
        pending.retain(|&i| {
            let (path, entry) = entries[i];
            let full = root.join(path);
            if !full.parent().expect("under root").exists() {
                return true;
            }
            match &entry.kind {
                EntryKind::Directory => std::fs::create_dir(&full).unwrap(),
                EntryKind::File(FileSource::Bytes(b)) => std::fs::write(&full, b).unwrap(),
                EntryKind::File(FileSource::Path(_)) => unreachable!(),
                EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &full).unwrap(),
                EntryKind::HardLink { target } => {
                    let source = root.join(target);
                    if !source.exists() {
                        return true;
                    }
                    std::fs::hard_link(source, &full).unwrap();
                }
            }
            if !matches!(entry.kind, EntryKind::Symlink { .. } | EntryKind::Directory) {
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(entry.mode))
                    .unwrap();
            }
            false
        });
    }
    // Directory modes last, deepest first, so creation inside them works.
    for (path, entry) in entries.iter().rev() {
        if entry.is_dir() {
            let full = root.join(path);
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(entry.mode)).unwrap();
        }
    }
}

/// The tree with every directory and file readable and writable by its
/// owner, so that any user can create, walk and read it back.
fn owner_accessible(tree: &FileTree) -> FileTree {
    let mut out = FileTree::new();
    for (path, entry) in tree.entries() {
        let mut entry = entry.clone();
        match entry.kind {
            EntryKind::Directory => entry.mode |= 0o700,
            EntryKind::File(_) | EntryKind::HardLink { .. } => entry.mode |= 0o600,
            EntryKind::Symlink { .. } => {}
        }
        out.insert(path, entry).expect("a valid tree stays valid");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Writer -> reader: the index of a written layer lists exactly the
    /// tree's entries, in order, with their kinds, modes, link targets and
    /// content digests, and the diff_id the writer reported.
    #[test]
    fn a_written_layer_indexes_as_its_tree(specs in specs(), gzip in any::<bool>()) {
        let tree = tree_of(&specs);
        let compression = if gzip { LayerCompression::Gzip } else { LayerCompression::None };
        let blob = write(&tree, compression, 1);
        let index = index_layer(blob.as_slice(), compression).expect("our own layer reads");
        let plain = write(&tree, LayerCompression::None, 1);
        prop_assert_eq!(&index.diff_id, &Digest::of_bytes(&plain));
        let got: Vec<_> = index
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.kind, e.mode, e.link_target.clone(), e.content_digest.clone()))
            .collect();
        prop_assert_eq!(got, expected_index(&tree));
    }

    /// The same entries given in any order, and compressed on any number
    /// of threads, make the same bytes.
    #[test]
    fn layer_bytes_ignore_input_order_and_threads(
        specs in specs(),
        seed in any::<u64>(),
        workers in 1usize..4,
    ) {
        let tree = tree_of(&specs);
        // Re-insert the resulting entries in a shuffled order.
        let mut entries: Vec<(String, TreeEntry)> =
            tree.entries().map(|(p, e)| (p.clone(), e.clone())).collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        rng.shuffle(&mut entries);
        let mut shuffled = FileTree::new();
        for (path, entry) in &entries {
            // Implicit parents made by a child first are replaced by the
            // directory's own entry when it comes.
            shuffled.insert(path, entry.clone()).expect("a valid tree in any order");
        }
        prop_assert_eq!(&shuffled, &tree);
        prop_assert_eq!(
            write(&shuffled, LayerCompression::Gzip, workers),
            write(&tree, LayerCompression::Gzip, 1)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Tree -> layer -> extracted directory -> tree -> layer: the same
    /// bytes, whatever order the files were created in on disk (readdir
    /// order differs), so a layer made from a directory is determined by
    /// its content alone.
    #[test]
    fn a_layer_made_from_a_directory_ignores_creation_order(
        specs in specs(),
        seed in any::<u64>(),
    ) {
        let tree = owner_accessible(&tree_of(&specs));
        let mut order: Vec<usize> = (0..tree.len()).collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut order);
        let disk = tempfile::tempdir().unwrap();
        create_on_disk(&tree, &order, disk.path());
        let mut from_disk = FileTree::from_dir(disk.path()).expect("reads back");
        from_disk.set_owner_all(0, 0);
        let layer = write(&from_disk, LayerCompression::None, 1);
        prop_assert_eq!(&layer, &write(&tree, LayerCompression::None, 1));
        let extracted = tempfile::tempdir().unwrap();
        let target = extracted.path().join("root");
        extract_layer(layer.as_slice(), LayerCompression::None, &target, &ExtractOptions::default())
            .expect("our own layer extracts");
        let mut again = FileTree::from_dir(&target).expect("reads back");
        again.set_owner_all(0, 0);
        prop_assert_eq!(write(&again, LayerCompression::None, 1), layer);
    }
}

fn stage_name() -> impl Strategy<Value = String> {
    "[a-z]{1,8}"
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(|b| Digest::of_bytes(&b))
}

fn digests_by_stage() -> impl Strategy<Value = DigestsByStage> {
    prop::collection::btree_map(
        stage_name(),
        prop::collection::btree_map("[a-z0-9][a-z0-9._+-]{0,15}", digest(), 0..6),
        1..4,
    )
    .prop_map(|stages| {
        stages
            .into_iter()
            .map(|(stage, names)| {
                let entries = names
                    .into_iter()
                    .map(|(name, digest)| (format!("{stage}-{name}"), digest))
                    .collect();
                (stage, entries)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// `digests` writes `<stage>.txt` files that the release reader reads
    /// back to exactly the digests written, from the directory or each file.
    #[test]
    fn digests_files_read_back_what_was_written(by_stage in digests_by_stage()) {
        let dir = tempfile::tempdir().unwrap();
        let files = digests::write(&by_stage, dir.path()).expect("writes");
        let mut all = BTreeMap::new();
        for (stage, entries) in &by_stage {
            let file = dir.path().join(format!("{stage}.txt"));
            prop_assert!(files.contains(&file));
            let one: BTreeMap<String, Digest> = entries.iter().cloned().collect();
            prop_assert_eq!(digests::read_release(&file).expect("reads"), one.clone());
            all.extend(one);
        }
        let some_entries = by_stage.values().any(|e| !e.is_empty());
        if some_entries {
            prop_assert_eq!(digests::read_release(dir.path()).expect("reads"), all);
        }
    }

    /// The payload we sign parses back to itself, whatever the reference,
    /// creator and timestamp hold (JSON escaping, non-ASCII, extremes).
    #[test]
    fn payload_json_round_trips(
        docker_reference in any::<String>(),
        manifest_digest in digest(),
        creator in prop::option::of(any::<String>()),
        timestamp in prop::option::of(any::<i64>()),
    ) {
        let payload = Payload { docker_reference, manifest_digest, creator, timestamp };
        let bytes = payload.to_bytes();
        prop_assert_eq!(Payload::parse(&bytes), Ok(payload.clone()));
        let (again, format) = Payload::parse_any(&bytes).expect("parses");
        prop_assert_eq!(again, payload);
        prop_assert_eq!(format, stagex::sign::payload::PayloadFormat::Current);
    }
}
