//! Owns: the test that `stagex publish` pushes the index and manifest
//! bytes the integrity check hashed, not a second read of `out/<id>`: a
//! `stagex build` that swaps `out/<id>/index.json` and removes the checked
//! manifest blobs between the load and the push does not fail the push
//! (it used to, halfway through a release), and the registry serves the
//! checked root under the tag. Against a real docker-registry.
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::peers;
use crate::publish_support::{make_package, make_release, Package};
use peers::registry::Registry;
use stagex::image::integrity;
use stagex::image::verdicts::Verdicts;
use stagex::image::OutDir;
use stagex::net::retry::Policy;
use stagex::oci::digest::Digest;
use stagex::progress::NoProgress;
use stagex::publish::journal::Journal;
use stagex::publish::push::{push_all, RegistryNamespace, Run};
use stagex::publish::release::{load_checked, read_digests};
use stagex::publish::Request;
use stagex::registry::RegistryClient;
use stagex::sign::image::Resolver;

/// What a `stagex build` finishing after the load does to `out/<id>/`: the
/// blobs of another image copied in, index.json pointing at it, and the
/// old index and manifest blobs gone (configs and layers stay: they are
/// still streamed from the layout).
fn swap_documents(root: &Path, id: &str, checked: &Package) -> Package {
    let other = make_package(&root.join("rebuilt"), id, "2.0", 4096, 99);
    let from = root.join("rebuilt").join(id);
    let to = root.join("out").join(id);
    for entry in std::fs::read_dir(from.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let target = to.join("blobs/sha256").join(entry.file_name());
        std::fs::copy(entry.path(), target).unwrap();
    }
    std::fs::copy(from.join("index.json"), to.join("index.json")).unwrap();
    for gone in [&checked.manifest, &checked.index] {
        std::fs::remove_file(to.join("blobs/sha256").join(gone.hex())).unwrap();
    }
    other
}

/// One destination, no journal, no mirror, a fast backoff.
fn request(ns: &str) -> Request {
    Request {
        release: None,
        destinations: vec![RegistryNamespace::parse(ns).unwrap()],
        mirrors: Vec::new(),
        tags: vec!["{version}".into()],
        jobs: 1,
        dry_run: false,
        journal: None,
        policy: Policy {
            base: Duration::from_millis(20),
            ..Policy::default()
        },
    }
}

#[test]
fn push_sends_the_checked_documents_after_out_is_swapped() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = root.join("out");
    let checked = make_release(root, "core", 1, 4096, 7).remove(0);
    let id = checked.name.as_str();
    let snapshot = integrity::check(
        &OutDir::open(&out),
        &[id.to_string()],
        &Verdicts::open(None),
    )
    .unwrap();
    let resolver = Resolver {
        out: &out,
        packages: &root.join("packages"),
        namespace: "stagex",
    };
    let listed = read_digests(&root.join("digests")).unwrap();
    let release = load_checked(&listed, &snapshot, &resolver).unwrap();
    // The release carries the bytes the check hashed, of every manifest.
    for manifest in &release[0].manifests {
        let bytes = release[0].document(&manifest.digest).unwrap();
        assert_eq!(Digest::of_bytes(bytes), manifest.digest);
    }

    let rebuilt = swap_documents(root, id, &checked);
    assert_ne!(rebuilt.index, checked.index);

    let ns = format!("{}/stagex", registry.host());
    let request = request(&ns);
    let tags = vec![vec![release[0].version.clone()]];
    let journal = Journal::disabled();
    let run = Run::new(&request, &release, &tags, &journal, &NoProgress);
    push_all(&run, 1);

    let counters = &run.counters[0];
    let failed = counters.failed.lock().unwrap();
    assert!(failed.is_empty(), "{:?}", *failed);
    assert_eq!(counters.manifests_pushed.load(Relaxed), 1);
    assert_eq!(counters.tags_pushed.load(Relaxed), 1);
    // The registry serves the checked root, not the rebuilt one.
    let client = RegistryClient::new(&registry.host()).unwrap();
    let served = client
        .manifest_digest(&format!("stagex/{id}"), &release[0].version)
        .unwrap();
    assert_eq!(served, checked.index);
    let child = client
        .manifest_digest(&format!("stagex/{id}"), &checked.manifest.to_string())
        .unwrap();
    assert_eq!(child, checked.manifest);
}
