//! `stagex pallet rust+clang` against a real docker-registry on 127.0.0.1
//! seeded with test package images named after the real packages: the
//! composed image reuses the package layer blobs verbatim, umoci unpacks
//! every package's files and pallet-rust's hard links, podman runs it,
//! skopeo reads every output, the digest does not depend on the source or
//! the store, and a push to the same registry mounts instead of uploading.
use crate::pallet_support;
use crate::peers;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use pallet_support::*;
use peers::podman::Podman;
use peers::registry::Registry;
use peers::tools::{self, run_ok};

fn digests(report: &serde_json::Value, origin: &str) -> Vec<String> {
    layers_of(report, origin)
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// `skopeo inspect` of `image` (with `flags` first), as JSON.
fn skopeo_inspect(flags: &[&str], image: &str) -> serde_json::Value {
    let inspect = run_ok(Command::new("skopeo").arg("inspect").args(flags).arg(image));
    serde_json::from_slice(&inspect.stdout).unwrap()
}

#[test]
fn rust_plus_clang_from_a_registry_end_to_end() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(_) = tools::require(&["umoci", "skopeo"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let world = rust_clang_world(&out);
    seed_registry(&registry.host(), &out, &world);
    let source = format!("{}/stagex", registry.host());
    let image_dir = tmp.path().join("rust-clang");
    let dest = format!("oci:{}:latest", image_dir.display());

    // Cold store, from the registry.
    let store1 = tmp.path().join("store1");
    // rust+clang from the registry with the first store, to `dest`.
    let compose_to = |dest: &str| {
        pallet_json(
            &store1,
            &["rust+clang", "--source", &source, "--output", dest],
        )
    };
    let report = compose_to(&dest);
    let digest = report["digest"].as_str().unwrap().to_string();

    // Every input pinned to its manifest digest.
    let pinned: BTreeSet<(String, String)> = report["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["manifest"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = world
        .values()
        .map(|p| (p.name.clone(), p.manifest.digest.to_string()))
        .collect();
    assert_eq!(pinned, expected);

    // Layers: the package layer blobs, verbatim, shared filesystem layer once.
    let reused = digests(&report, "reused");
    let mut package_layers: Vec<String> = Vec::new();
    for name in RUST_CLANG_PACKAGES {
        for layer in &world[*name].layers {
            let layer = layer.to_string();
            if !package_layers.contains(&layer) {
                package_layers.push(layer);
            }
        }
    }
    assert_eq!(reused, package_layers);
    assert_eq!(digests(&report, "built").len(), 1, "one link layer");
    assert!(report["platforms"][0]["conflicts"]
        .as_array()
        .unwrap()
        .is_empty());

    // umoci unpacks every package's files and the hard links under x86_64.
    let bundle = tmp.path().join("bundle");
    let rootfs = umoci_unpack(&format!("{}:latest", image_dir.display()), &bundle);
    for name in RUST_CLANG_PACKAGES {
        let id = std::fs::read_to_string(rootfs.join(format!("usr/share/doc/{name}/ID"))).unwrap();
        assert_eq!(id, format!("{name}\n"));
    }
    let arch = stagex::oci::descriptor::Platform::host()
        .uname_machine()
        .to_string();
    let rustlib = rootfs.join(format!("usr/lib/rustlib/{arch}-unknown-linux-musl/bin"));
    let lld = std::fs::metadata(rootfs.join("bin/lld")).unwrap();
    for link in [
        "rust-lld",
        "gcc-ld/ld.lld",
        "gcc-ld/ld64.lld",
        "gcc-ld/lld-link",
        "gcc-ld/wasm-ld",
    ] {
        let meta = std::fs::metadata(rustlib.join(link)).unwrap();
        assert_eq!(
            (meta.dev(), meta.ino()),
            (lld.dev(), lld.ino()),
            "{link} is a hard link of /bin/lld"
        );
    }
    let objcopy = std::fs::metadata(rootfs.join("bin/llvm-objcopy")).unwrap();
    assert_eq!(
        std::fs::metadata(rustlib.join("rust-objcopy"))
            .unwrap()
            .ino(),
        objcopy.ino()
    );
    assert_eq!(
        std::fs::read(rustlib.join("rust-lld")).unwrap(),
        b"lld program"
    );
    assert!(rootfs.join("bin/busybox").is_file());

    // Config: env inherited from core-profile, entrypoint from pallet-rust, provenance.
    let config = bundle_config(&bundle);
    let env = process_env(&config);
    assert!(env.contains(&"TZ=UTC"), "{env:?}");
    assert_eq!(config["process"]["args"][0], "/usr/bin/cargo");
    let inspect = skopeo_inspect(&[], &dest);
    assert_eq!(inspect["Digest"], digest.as_str());
    let labels = inspect["Labels"]["org.stagex.pallet.packages"]
        .as_str()
        .unwrap();
    assert!(labels.contains(&format!(
        "core-busybox@{}",
        world["core-busybox"].manifest.digest
    )));
    assert_eq!(inspect["Created"], "1970-01-01T00:00:01Z");

    // Warm store, fresh process: same digest, nothing fetched.
    let warm = pallet_json(&store1, &["rust+clang", "--source", &source]);
    assert_eq!(warm["digest"], digest.as_str());
    assert_eq!(warm["fetch"]["blobs_fetched"], 0);
    // From the local layouts, cold store: same digest.
    let local = pallet_json(
        &tmp.path().join("store2"),
        &["rust+clang", "--source", out.to_str().unwrap()],
    );
    assert_eq!(local["digest"], digest.as_str());
    // Registry again, another cold store and process: same digest.
    let cold = pallet_json(
        &tmp.path().join("store3"),
        &["rust+clang", "--source", &source],
    );
    assert_eq!(cold["digest"], digest.as_str());

    // podman runs busybox from the composed image.
    if let Some(podman) = Podman::new() {
        let archive = tmp.path().join("rust.tar");
        compose_to(&format!(
            "docker-archive:{}:localhost/rust-clang:test",
            archive.display()
        ));
        let loaded = podman.load(&archive);
        assert!(loaded.contains("rust-clang"), "{loaded}");
        let said = run_ok(podman.command().args([
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--entrypoint",
            "/bin/busybox",
            "localhost/rust-clang:test",
            "sh",
            "-c",
            "echo ok",
        ]));
        assert_eq!(String::from_utf8_lossy(&said.stdout).trim(), "ok");
    }

    // oci-archive read back by skopeo, same digest.
    let archive = tmp.path().join("rust-oci.tar");
    let oci_archive = format!("oci-archive:{}:v1", archive.display());
    compose_to(&oci_archive);
    let inspect = skopeo_inspect(&[], &oci_archive);
    assert_eq!(inspect["Digest"], digest.as_str());

    // Push to the registry the packages live in: package layers mounted,
    // only the config and the link layer uploaded.
    let remote = format!("docker://{}/me/rust-clang:1", registry.host());
    let pushed = compose_to(&remote);
    let push = &pushed["push"];
    assert_eq!(
        push["blobs_mounted"].as_u64().unwrap() as usize,
        package_layers.len()
    );
    let built_size: u64 = layers_of(&pushed, "built")
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    let config_size = pushed["platforms"][0]["manifest"]["size"].as_u64().unwrap();
    assert_eq!(push["blobs_uploaded"], 2, "config + link layer");
    assert!(push["bytes_uploaded"].as_u64().unwrap() >= built_size);
    assert!(config_size > 0);
    let inspect = skopeo_inspect(&["--tls-verify=false"], &remote);
    assert_eq!(inspect["Digest"], digest.as_str());

    // Packages only: a push uploads zero layer bytes (just the config).
    let plain = pallet_json(
        &store1,
        &[
            "core-busybox+core-git",
            "--source",
            &source,
            "--output",
            &format!("docker://{}/me/bb:1", registry.host()),
        ],
    );
    assert_eq!(
        plain["push"]["blobs_uploaded"], 1,
        "only the config: {}",
        plain["push"]
    );
    assert_eq!(plain["push"]["blobs_mounted"], 3);
}

#[test]
fn a_warm_store_composes_with_the_registry_gone() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let world = write_packages(&out, &["core-busybox", "core-git"]);
    seed_registry(&registry.host(), &out, &world);
    let source = format!("{}/stagex", registry.host());
    let store = tmp.path().join("store");
    let first = pallet_json(&store, &["core-busybox+core-git", "--source", &source]);
    drop(registry);
    let (second, stderr) = pallet_output(
        &repo_root(),
        &store,
        &["core-busybox+core-git", "--source", &source],
    );
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["fetch"]["blobs_fetched"], 0);
    assert!(stderr.contains("using sha256:"), "{stderr}");
    // A digest pin needs no tag lookup at all.
    let pinned = format!("core-busybox@{}", world["core-busybox"].manifest.digest);
    let (_, stderr) = pallet_output(&repo_root(), &store, &[&pinned, "--source", &source]);
    assert!(stderr.is_empty(), "{stderr}");
}
