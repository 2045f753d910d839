//! `stagex image` read back by real peers: umoci unpacks our layout to the
//! same tree, skopeo pushes it to a real registry without changing the
//! manifest digest, podman loads our docker-archive and runs it, and the
//! oci-archive is read by skopeo.
use crate::peers;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use peers::podman::Podman;
use peers::registry::Registry;
use peers::tools::{self, run_ok, stagex};

/// A small tree with every entry kind the layer writer must keep.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(root.join("usr/bin/data"), vec![7u8; 10_000]).unwrap();
    fs::hard_link(root.join("usr/bin/data"), root.join("usr/bin/data-link")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let long = root.join("d".repeat(120)).join("e".repeat(120));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("f".repeat(60)), "deep\n").unwrap();
    if let Some(busybox) = tools::find("busybox") {
        fs::copy(busybox, root.join("usr/bin/busybox")).unwrap();
        fs::set_permissions(
            root.join("usr/bin/busybox"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
}

/// Runs `stagex image` and returns the manifest digest it reports.
fn stagex_image(tree: &Path, output: &str, store: &Path) -> String {
    let out = run_ok(
        stagex()
            .args(["--json", "image"])
            .arg(tree)
            .args(["--output", output, "--platform", "linux/amd64"])
            .args(["--entrypoint", "/usr/bin/busybox"])
            .env("STAGEX_STORE", store),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["manifest_digest"].as_str().unwrap().to_string()
}

/// A temporary directory holding the test tree (`tree/`) and a store
/// (`store/`) for `stagex image`.
struct Work {
    dir: tempfile::TempDir,
    tree: PathBuf,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        make_tree(&tree);
        Work { dir, tree }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `stagex image` of the tree to `output` with the shared store.
    fn image(&self, output: &str) -> String {
        stagex_image(&self.tree, output, &self.path("store"))
    }
}

fn assert_same_entry(source: &Path, unpacked: &Path, relative: &str) {
    let a = fs::symlink_metadata(source.join(relative)).unwrap();
    let b = fs::symlink_metadata(unpacked.join(relative))
        .unwrap_or_else(|e| panic!("{relative} missing after unpack: {e}"));
    assert_eq!(a.file_type(), b.file_type(), "{relative}: type");
    if !a.file_type().is_symlink() {
        assert_eq!(a.mode() & 0o7777, b.mode() & 0o7777, "{relative}: mode");
    } else {
        assert_eq!(
            fs::read_link(source.join(relative)).unwrap(),
            fs::read_link(unpacked.join(relative)).unwrap(),
            "{relative}: link target"
        );
    }
    if a.is_file() {
        assert_eq!(
            fs::read(source.join(relative)).unwrap(),
            fs::read(unpacked.join(relative)).unwrap()
        );
    }
}

#[test]
fn umoci_unpacks_our_layout_to_the_same_tree() {
    let Some(_) = tools::require(&["umoci"]) else {
        return;
    };
    let work = Work::new();
    let layout = work.path("layout");
    work.image(&format!("oci:{}:latest", layout.display()));
    let bundle = work.path("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let long = format!("{}/{}/{}", "d".repeat(120), "e".repeat(120), "f".repeat(60));
    for relative in [
        "usr/bin/tool",
        "usr/bin/data",
        "usr/bin/data-link",
        "bin",
        "empty",
        &long,
    ] {
        assert_same_entry(&work.tree, &rootfs, relative);
    }
    let data = fs::metadata(rootfs.join("usr/bin/data")).unwrap();
    let link = fs::metadata(rootfs.join("usr/bin/data-link")).unwrap();
    assert_eq!(
        (data.dev(), data.ino()),
        (link.dev(), link.ino()),
        "hard link not kept"
    );
}

#[test]
fn skopeo_pushes_our_layout_without_changing_the_digest() {
    let Some(_) = tools::require(&["skopeo"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = Work::new();
    let layout = work.path("layout");
    let digest = work.image(&format!("oci:{}:v1", layout.display()));
    let remote = format!("docker://{}/x/y:v1", registry.host());
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(&remote),
    );
    let inspect = run_ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", &remote]));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Digest"].as_str().unwrap(), digest);
}

#[test]
fn oci_archive_is_read_by_skopeo_with_the_same_digest() {
    let Some(_) = tools::require(&["skopeo"]) else {
        return;
    };
    let work = Work::new();
    let archive = work.path("image.tar");
    let digest = work.image(&format!("oci-archive:{}:v1", archive.display()));
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}:v1", archive.display())),
    );
    let actual = format!("sha256:{}", sha256_hex(&raw.stdout));
    assert_eq!(actual, digest);
}

#[test]
fn podman_loads_our_docker_archive_and_runs_it() {
    let Some(podman) = Podman::new() else { return };
    let Some(_) = tools::require(&["busybox"]) else {
        return;
    };
    let work = Work::new();
    let archive = work.path("docker.tar");
    work.image(&format!(
        "docker-archive:{}:stagex-test/tree:1",
        archive.display()
    ));
    let loaded = podman.load(&archive);
    assert!(
        loaded.contains("stagex-test/tree:1"),
        "podman load said: {loaded}"
    );
    let said = podman.run(
        "localhost/stagex-test/tree:1",
        &["sh", "-c", "cat /usr/bin/tool | tail -1"],
    );
    assert_eq!(said.trim(), "echo tool");
}

#[test]
fn same_tree_gives_the_same_digest_in_two_processes_and_stores() {
    let work = Work::new();
    let a = stagex_image(
        &work.tree,
        &format!("oci:{}", work.path("a").display()),
        &work.path("s1"),
    );
    let b = stagex_image(
        &work.tree,
        &format!("oci:{}", work.path("b").display()),
        &work.path("s2"),
    );
    assert_eq!(a, b);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn image_pushes_straight_to_a_registry_with_the_same_digest() {
    let Some(_) = tools::require(&["skopeo"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = Work::new();
    let remote = format!("{}/x/direct:v1", registry.host());
    let digest = work.image(&format!("docker://{remote}"));
    let inspect = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{remote}"),
    ]));
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Digest"].as_str().unwrap(), digest);
}

/// The owners of every entry of the image's only layer.
fn layer_owners(layout_dir: &Path) -> Vec<(u32, u32)> {
    use stagex::oci::layout::Layout;
    let layout = Layout::open(layout_dir).unwrap();
    let root = layout.resolve(Some("x")).unwrap();
    let (_, manifest, _) = layout.image_for_platform(&root, None).unwrap();
    let layer = &manifest.layers[0];
    let blob = layout.open_blob(&layer.digest, Some(layer.size)).unwrap();
    let index =
        stagex::layer::index_layer(blob, stagex::oci::media_type::LayerCompression::Gzip).unwrap();
    index.entries.iter().map(|e| (e.uid, e.gid)).collect()
}

#[test]
fn image_owners_are_0_0_unless_kept() {
    // A checkout owned by uid 1000 here and 1001 on a CI runner must give
    // the same digest: owners are forced to 0:0 by default.
    let work = Work::new();
    let tree = &work.tree;
    // Owned by someone other than root, whoever runs the test.
    if fs::metadata(tree).unwrap().uid() == 0 {
        for e in walkdir::WalkDir::new(tree) {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(1234), Some(1234)).unwrap();
        }
    }
    let plain = work.path("plain");
    work.image(&format!("oci:{}:x", plain.display()));
    let owners = layer_owners(&plain);
    assert!(!owners.is_empty());
    assert!(owners.iter().all(|&o| o == (0, 0)), "{owners:?}");

    let kept = work.path("kept");
    run_ok(
        stagex()
            .args(["image", "--keep-owners"])
            .arg(tree)
            .args(["--output", &format!("oci:{}:x", kept.display())])
            .args(["--platform", "linux/amd64"])
            .env("STAGEX_STORE", work.path("store")),
    );
    let disk = fs::metadata(tree.join("usr/bin/tool")).unwrap();
    assert_ne!(disk.uid(), 0);
    let kept = layer_owners(&kept);
    assert!(
        kept.iter().all(|&o| o == (disk.uid(), disk.gid())),
        "{kept:?}"
    );
}
