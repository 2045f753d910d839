//! Owns: the tests of "what was hashed is what gets signed, recorded and
//! published": sign's targets, the digests `stagex digests` writes and
//! the images `stagex publish` loads are taken from the integrity check's
//! snapshot (`image::checked`), so a `stagex build` that rewrites
//! `out/<id>/index.json` to another valid, built image after the check
//! changes none of them.
use std::path::Path;

use crate::publish_support::{make_package, make_release, Package};
use stagex::image::integrity;
use stagex::image::verdicts::Verdicts;
use stagex::image::{CheckedImages, OutDir};
use stagex::oci::descriptor::Platform;
use stagex::oci::digest::Digest;
use stagex::publish::release::{load_checked, read_digests};
use stagex::release::digests::scan_checked;
use stagex::sign::image::Resolver;

/// Checks `out/<id>` with a verdict cache of this test only.
fn check(out: &Path, id: &str) -> CheckedImages {
    integrity::check(&OutDir::open(out), &[id.to_string()], &Verdicts::open(None)).unwrap()
}

/// What a `stagex build` finishing after the check does: `out/<id>/`
/// gets the blobs of another valid image and its index.json points at it.
fn rebuild_in_place(root: &Path, id: &str) -> Package {
    let other = make_package(&root.join("rebuilt"), id, "2.0", 4096, 99);
    let from = root.join("rebuilt").join(id);
    let to = root.join("out").join(id);
    for entry in std::fs::read_dir(from.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            to.join("blobs/sha256").join(entry.file_name()),
        )
        .unwrap();
    }
    std::fs::copy(from.join("index.json"), to.join("index.json")).unwrap();
    other
}

/// The per-platform manifest digests `out/<id>` holds now.
fn held_now(out: &Path, id: &str) -> Vec<Digest> {
    let now = check(out, id);
    let image = now.get(id).unwrap();
    image
        .manifests()
        .unwrap()
        .into_iter()
        .map(|m| m.descriptor.digest)
        .collect()
}

#[test]
fn targets_digests_and_release_come_from_the_checked_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = root.join("out");
    let checked_package = make_release(root, "core", 1, 4096, 7).remove(0);
    let id = checked_package.name.as_str();

    let snapshot = check(&out, id);
    let rebuilt = rebuild_in_place(root, id);
    assert_ne!(rebuilt.manifest, checked_package.manifest);
    // The rewrite is a valid, built image: a check now sees only it.
    assert_eq!(held_now(&out, id), vec![rebuilt.manifest.clone()]);

    // sign/verify: the target is the manifest that was hashed.
    let resolver = Resolver {
        out: &out,
        packages: &root.join("packages"),
        namespace: "stagex",
    };
    let image = snapshot.get(id).unwrap();
    let targets = resolver.package_targets(image).unwrap();
    let digests: Vec<&Digest> = targets.iter().map(|t| &t.digest).collect();
    assert_eq!(digests, vec![&checked_package.manifest]);
    assert_eq!(targets[0].identity, format!("stagex/{id}:1.0"));
    assert_eq!(targets[0].platform.as_deref(), Some("linux/amd64"));
    // The bytes kept are the ones that hash to the target.
    let document = &image.documents[&checked_package.manifest];
    assert_eq!(Digest::of_bytes(&document.bytes), checked_package.manifest);

    // digests / digests --check: the recorded digest is the checked one.
    let by_stage = scan_checked(&snapshot, &Platform::new("linux", "amd64")).unwrap();
    assert_eq!(
        by_stage["core"],
        vec![(id.to_string(), checked_package.manifest.clone())]
    );

    // publish: root, manifests and targets are the checked image's.
    let listed = read_digests(&root.join("digests")).unwrap();
    let release = load_checked(&listed, &snapshot, &resolver).unwrap();
    assert_eq!(release.len(), 1);
    assert_eq!(release[0].root.digest, checked_package.index);
    let pushed: Vec<&Digest> = release[0].manifests.iter().map(|m| &m.digest).collect();
    assert_eq!(
        pushed,
        vec![&checked_package.manifest, &checked_package.index]
    );
    assert_eq!(release[0].targets[0].digest, checked_package.manifest);
    assert_eq!(release[0].version, "1.0");
}
