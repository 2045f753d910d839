//! Conflict fixtures composed from local layouts: same path with different
//! content, a directory in one package and a symlink in another, a
//! whiteout inside a package layer; `--strict`; `--flatten`; several
//! platforms into an index; digest pins.
use crate::pallet_support;
use crate::peers;

use std::collections::BTreeMap;
use std::process::Command;

use pallet_support::*;
use peers::tools::{self, run_ok};
use stagex::layer::tree::{FileTree, TreeEntry};
use stagex::oci::config::RunConfig;
use stagex::oci::descriptor::Platform;
use stagex::oci::image::{build_index, ImageLayer};
use stagex::oci::layout::Layout;
use stagex::oci::media_type;

fn world(out: &std::path::Path) {
    let mut a = FileTree::new();
    file(&mut a, "usr/bin/tool", "from a");
    file(&mut a, "lib/liba.so", "a");
    write_package(
        out,
        "core-a",
        &[filesystem_layer(), a],
        RunConfig::default(),
    );
    let mut b = FileTree::new();
    file(&mut b, "usr/bin/tool", "from b");
    dir(&mut b, "usr/lib");
    b.insert("lib", TreeEntry::symlink("usr/lib")).unwrap();
    write_package(
        out,
        "core-b",
        &[filesystem_layer(), b],
        RunConfig::default(),
    );
    let mut w = FileTree::new();
    dir(&mut w, "etc");
    file(&mut w, "etc/.wh.passwd", "");
    write_package(out, "core-w", &[w], RunConfig::default());
}

#[test]
fn conflicts_are_reported_per_path_with_both_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    world(&out);
    let store = tmp.path().join("store");
    let src = out.to_str().unwrap();
    let report = pallet_json(&store, &["core-a+core-b", "--source", src]);
    let conflicts: Vec<(String, String, String, String)> = report["platforms"][0]["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().into(),
                c["kind"].as_str().unwrap().into(),
                c["packages"][0].as_str().unwrap().into(),
                c["packages"][1].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        conflicts,
        vec![
            (
                "/lib".into(),
                "directory-vs-symlink".into(),
                "core-a".into(),
                "core-b".into()
            ),
            (
                "/usr/bin/tool".into(),
                "content".into(),
                "core-a".into(),
                "core-b".into()
            ),
        ]
    );
    // Human output names them too; --strict makes them an error.
    let stderr = pallet_fails(&store, &["core-a+core-b", "--source", src, "--strict"]);
    assert!(
        stderr.contains("/usr/bin/tool") && stderr.contains("core-a") && stderr.contains("core-b"),
        "{stderr}"
    );

    // A whiteout in a package layer is refused, naming it and the victim.
    let stderr = pallet_fails(&store, &["core-a+core-w", "--source", src]);
    assert!(
        stderr.contains("whiteout for /etc/passwd")
            && stderr.contains("core-w@sha256:")
            && stderr.contains("of core-a"),
        "{stderr}"
    );
}

#[test]
fn flatten_gives_one_layer_with_the_merged_tree() {
    let Some(_) = tools::require(&["umoci"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    world(&out);
    let image = tmp.path().join("flat");
    let report = pallet_json(
        &tmp.path().join("store"),
        &[
            "core-a+core-b",
            "--source",
            out.to_str().unwrap(),
            "--flatten",
            "--output",
            &format!("oci:{}:x", image.display()),
        ],
    );
    assert_eq!(
        report["platforms"][0]["layers"].as_array().unwrap().len(),
        1
    );
    let again = pallet_json(
        &tmp.path().join("store2"),
        &[
            "core-a+core-b",
            "--source",
            out.to_str().unwrap(),
            "--flatten",
        ],
    );
    assert_eq!(again["digest"], report["digest"]);
    let bundle = tmp.path().join("bundle");
    let rootfs = umoci_unpack(&format!("{}:x", image.display()), &bundle);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("usr/bin/tool")).unwrap(),
        "from b"
    );
    assert!(std::fs::symlink_metadata(rootfs.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
}

/// A package whose `latest` is an index over two platforms.
fn multi_platform_package(out: &std::path::Path, name: &str) -> BTreeMap<String, String> {
    let layout = Layout::create(out.join(name)).unwrap();
    let mut manifests = Vec::new();
    let mut digests = BTreeMap::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let mut tree = FileTree::new();
        file(&mut tree, "usr/share/arch", platform);
        let written =
            stagex::layer::writer::write_layer_to_layout(&tree, &Default::default(), &layout)
                .unwrap();
        let manifest = write_image(
            &layout,
            platform.parse().unwrap(),
            RunConfig::default(),
            vec![ImageLayer {
                descriptor: written.descriptor(),
                diff_id: written.diff_id.clone(),
                history: Default::default(),
            }],
        );
        digests.insert(platform.to_string(), manifest.digest.to_string());
        manifests.push(manifest);
    }
    let index = build_index(&manifests, BTreeMap::new()).unwrap();
    let descriptor = layout.write_json(&index, media_type::OCI_INDEX).unwrap();
    layout.set_ref(Some("latest"), descriptor).unwrap();
    digests
}

#[test]
fn several_platforms_make_an_index_and_pins_are_per_platform() {
    let Some(_) = tools::require(&["skopeo"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let m = multi_platform_package(&out, "core-m");
    let n = multi_platform_package(&out, "core-n");
    let image = tmp.path().join("multi");
    let report = pallet_json(
        &tmp.path().join("store"),
        &[
            "core-m+core-n",
            "--source",
            out.to_str().unwrap(),
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("oci:{}:x", image.display()),
        ],
    );
    assert_eq!(report["root"]["mediaType"], media_type::OCI_INDEX);
    let pins: Vec<(String, String, String)> = report["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["platform"].as_str().unwrap().into(),
                p["manifest"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pins,
        vec![
            (
                "core-m".into(),
                "linux/amd64".into(),
                m["linux/amd64"].clone()
            ),
            (
                "core-n".into(),
                "linux/amd64".into(),
                n["linux/amd64"].clone()
            ),
            (
                "core-m".into(),
                "linux/arm64".into(),
                m["linux/arm64"].clone()
            ),
            (
                "core-n".into(),
                "linux/arm64".into(),
                n["linux/arm64"].clone()
            ),
        ]
    );
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:x", image.display()),
    ]));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    // A digest pin selects exactly that image.
    let pinned = format!("core-m@{}", m["linux/arm64"]);
    let one = pallet_json(
        &tmp.path().join("store"),
        &[
            &pinned,
            "--source",
            out.to_str().unwrap(),
            "--platform",
            "linux/arm64",
        ],
    );
    assert_eq!(one["pinned"][0]["manifest"], m["linux/arm64"].as_str());
    let _ = Platform::host();
}

#[test]
fn copies_and_links_of_a_custom_pallet_unpack_as_declared() {
    let Some(_) = tools::require(&["umoci"]) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    world(&out);
    let root = tmp.path().join("repo");
    std::fs::create_dir_all(root.join("pallets")).unwrap();
    std::fs::write(
        root.join("pallets/demo.toml"),
        r#"base = "core-a"
copy = ["core-b:/usr/bin/tool -> /bin/tool-b"]
env = ["A=1", "B=${A}/x"]
user = "1000:1000"
workdir = "/home/user"
[[link]]
kind = "dir"
path = "/opt/{arch}/empty"
[[link]]
kind = "hardlink"
path = "/aaa/tool"
target = "/usr/bin/tool"
[[link]]
kind = "symlink"
path = "/usr/bin/t2"
target = "tool"
"#,
    )
    .unwrap();
    let image = tmp.path().join("demo");
    let (report, _) = pallet_output(
        &root,
        &tmp.path().join("store"),
        &[
            "demo",
            "--source",
            out.to_str().unwrap(),
            "--output",
            &format!("oci:{}:x", image.display()),
        ],
    );
    assert_eq!(
        layers_of(&report, "built").len(),
        2,
        "one copy layer, one link layer"
    );
    let bundle = tmp.path().join("bundle");
    let rootfs = umoci_unpack(&format!("{}:x", image.display()), &bundle);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("bin/tool-b")).unwrap(),
        "from b"
    );
    let tool = std::fs::metadata(rootfs.join("usr/bin/tool")).unwrap();
    let link = std::fs::metadata(rootfs.join("aaa/tool")).unwrap();
    assert_eq!(
        link.ino(),
        tool.ino(),
        "hard link sorting before its target"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("aaa/tool")).unwrap(),
        "from a"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("usr/bin/t2"))
            .unwrap()
            .to_str(),
        Some("tool")
    );
    let arch = Platform::host().uname_machine().to_string();
    assert!(rootfs.join(format!("opt/{arch}/empty")).is_dir());
    let config = bundle_config(&bundle);
    let env = process_env(&config);
    assert!(env.contains(&"B=1/x"), "{env:?}");
    assert_eq!(config["process"]["cwd"], "/home/user");
}
