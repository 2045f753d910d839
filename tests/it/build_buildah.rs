//! Containerfile packages built by a real buildah (vfs storage, runc,
//! --network none): a FROM-scratch package holding the host's static
//! busybox, one that `COPY --from=stagex/core-bbox`, and one `FROM
//! stagex/core-bbox`. Built twice from trees whose file mtimes differ ->
//! identical digests; the result runs under podman.
use crate::build_support;
use crate::peers;

use std::path::{Path, PathBuf};
use std::process::Command;

use peers::podman::Podman;
use peers::tools::{self, run_ok};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packages/buildah")
}

/// A repo root with the fixture packages and a busybox source pointing at
/// the host's static busybox; every file's mtime set to `mtime`. The
/// source sets its own `version`: only then does StageX (targets.py) pass
/// `BUSYBOX_SOURCE`, which the bbox Containerfile uses.
fn repo(busybox: &Path, mtime: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let packages = root.path().join("packages");
    tools::copy_dir(&fixture(), &packages);
    let hash = hex::encode(Sha256::digest(std::fs::read(busybox).unwrap()));
    std::fs::write(
        packages.join("core/bbox/package.toml"),
        format!(
            "[package]\nname = \"bbox\"\nversion = \"1.0\"\n\n[sources.busybox]\nhash = \"{hash}\"\nversion = \"1.0\"\nmirrors = [\"file://{}\"]\n",
            busybox.display()
        ),
    )
    .unwrap();
    run_ok(
        tools::stagex()
            .arg("--root")
            .arg(root.path())
            .args(["fetch", "core-bbox"]),
    );
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("find . -exec touch -h -d @{mtime} {{}} +"))
            .current_dir(root.path()),
    );
    root
}

fn build(root: &Path, builder: &str) -> Value {
    let out = run_ok(
        tools::stagex()
            .arg("--json")
            .arg("--root")
            .arg(root)
            .args(["build", "--builder", builder, "core-hello", "core-layered"])
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn digests(report: &Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = report["built"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["package"].as_str().unwrap().to_string(),
                r["manifests"][0]["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    all.sort();
    all
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

#[test]
fn buildah_builds_are_reproducible_and_run_under_podman() {
    let Some(found) = tools::require(&["buildah", "runc", "busybox"]) else {
        return;
    };
    let busybox = found[2].canonicalize().unwrap();
    let one = repo(&busybox, "1000000000");
    let first = build(one.path(), "buildah");
    let two = repo(&busybox, "1700000000");
    let second = build(two.path(), "buildah");
    let d1 = digests(&first);
    assert_eq!(
        d1.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["core-bbox", "core-hello", "core-layered"],
        "dependency built first, in the report"
    );
    assert_eq!(first["built"][0]["package"], "core-bbox");
    assert_eq!(d1, digests(&second), "builds from different mtimes differ");

    // core-layered is FROM stagex/core-bbox: its first layer is bbox's, reused.
    let out = one.path().join("out");
    let manifest_of = |id: &str| {
        let d = &d1.iter().find(|(i, _)| i == id).unwrap().1;
        json_blob(&out.join(id), d)
    };
    let bbox = manifest_of("core-bbox");
    let layered = manifest_of("core-layered");
    assert_eq!(layered["layers"].as_array().unwrap().len(), 2);
    assert_eq!(layered["layers"][0], bbox["layers"][0]);
    let hello = manifest_of("core-hello");
    assert_eq!(
        hello["annotations"]["org.opencontainers.image.version"],
        "2.0"
    );
    let config = json_blob(
        &out.join("core-hello"),
        hello["config"]["digest"].as_str().unwrap(),
    );
    assert_eq!(config["created"], "1970-01-01T00:00:01Z");
    assert!(config["config"]["Labels"].is_null(), "{config}");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/busybox"])
    );

    // A package deleting a file of its base is flattened: one layer, no file.
    run_ok(tools::stagex().arg("--root").arg(one.path()).args([
        "build",
        "--builder",
        "buildah",
        "core-pruned",
    ]));
    let layout = out.join("core-pruned");
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let index = json_blob(&layout, top["manifests"][0]["digest"].as_str().unwrap());
    let pruned = json_blob(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(pruned["layers"].as_array().unwrap().len(), 1);
    let hex = pruned["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = std::fs::File::open(layout.join("blobs/sha256").join(hex)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let paths: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(paths.iter().any(|p| p == "usr/bin/busybox"), "{paths:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("hello") || p.contains(".wh.")),
        "{paths:?}"
    );

    // The result runs.
    let Some(podman) = Podman::new() else {
        return;
    };
    // podman as the builder gives the very same images.
    let three = repo(&busybox, "1500000000");
    assert_eq!(
        d1,
        digests(&build(three.path(), "podman")),
        "podman differs from buildah"
    );
    // podman names an image pulled from oci:PATH after PATH (must be
    // lowercase): go through a lowercase symlink.
    let link = PathBuf::from(format!("/tmp/stagex-test-{}-hello", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(out.join("core-hello"), &link).unwrap();
    let pulled = run_ok(
        podman
            .command()
            .args(["pull", "--quiet"])
            .arg(format!("oci:{}", link.display())),
    );
    std::fs::remove_file(&link).unwrap();
    let image = String::from_utf8_lossy(&pulled.stdout).trim().to_string();
    let said = podman.run(&image, &[]);
    assert_eq!(said, "hello 2.0\n");
    let said = podman.run(&image, &["echo", "busybox runs"]);
    assert_eq!(said, "busybox runs\n");
}

/// The files of the single layer of `out/<id>/`, with their contents.
fn layer_files(out: &Path, id: &str) -> Vec<(String, String)> {
    let layout = out.join(id);
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let index = json_blob(&layout, top["manifests"][0]["digest"].as_str().unwrap());
    let manifest = json_blob(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1, "{id}");
    let hex = manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    let blob = std::fs::File::open(layout.join("blobs/sha256").join(hex)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            files.push((path, text));
        }
    }
    files
}

fn dry_run(root: &Path) -> Vec<(String, bool)> {
    let out = run_ok(
        tools::stagex()
            .arg("--json")
            .arg("--root")
            .arg(root)
            .args(["build", "--dry-run", "core-multi-a", "core-multi-b"])
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    plan["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["up_to_date"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn subpackages_are_two_images_from_one_containerfile() {
    let Some(found) = tools::require(&["buildah", "runc", "busybox"]) else {
        return;
    };
    let busybox = found[2].canonicalize().unwrap();
    let root = repo(&busybox, "1000000000");
    let names = |plan: &[(String, bool)]| plan.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let before = dry_run(root.path());
    assert_eq!(
        names(&before),
        ["core-bbox", "core-multi-a", "core-multi-b"]
    );
    assert!(before.iter().all(|(_, fresh)| !fresh), "{before:?}");

    let report: Value = serde_json::from_slice(
        &run_ok(
            build_support::buildah_build(root.path(), &["core-multi-a", "core-multi-b"])
                .env_remove("SOURCE_DATE_EPOCH"),
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(
        build_support::built(&report),
        ["core-bbox", "core-multi-a", "core-multi-b"]
    );
    let out = root.path().join("out");
    // Each image holds its own stage's files only, built with VERSION.
    assert_eq!(
        layer_files(&out, "core-multi-a"),
        [("usr/share/multi/a.txt".to_string(), "a 3.0\n".to_string())]
    );
    assert_eq!(
        layer_files(&out, "core-multi-b"),
        [("usr/share/multi/b.txt".to_string(), "b 3.0\n".to_string())]
    );
    assert!(
        !out.join("core-multi").exists(),
        "the definition is no image"
    );

    // Built -> up to date; a changed dependency makes its dependants stale.
    let after = dry_run(root.path());
    assert!(after.iter().all(|(_, fresh)| *fresh), "{after:?}");
    let bbox = root.path().join("packages/core/bbox/Containerfile");
    let mut text = std::fs::read_to_string(&bbox).unwrap();
    text.push_str("# changed\n");
    std::fs::write(&bbox, text).unwrap();
    let changed = dry_run(root.path());
    assert!(changed.iter().all(|(_, fresh)| !fresh), "{changed:?}");
}

#[test]
fn a_missing_builder_is_one_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("packages/core/alone");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("package.toml"), "[package]\nname = \"alone\"\n").unwrap();
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch AS package\nCOPY package.toml /\n",
    )
    .unwrap();
    let out = tools::stagex()
        .arg("--root")
        .arg(root.path())
        .args(["build", "core-alone"])
        .env("PATH", root.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no OCI builder found") && stderr.contains("apt-get install buildah"),
        "{stderr}"
    );
}
