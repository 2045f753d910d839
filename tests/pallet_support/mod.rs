//! Test package images for `stagex pallet`: small images named after the
//! real packages of pallet-rust and pallet-clang, written as OCI layouts
//! (`out/<name>/`, tag `latest`) and optionally pushed to a registry.
//! core-busybox holds the real static busybox, so composed images run.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use stagex::layer::tree::{FileSource, FileTree, TreeEntry};
use stagex::layer::writer::{write_layer_to_layout, LayerOptions};
use stagex::oci::config::{rfc3339_utc, History, RunConfig};
use stagex::oci::descriptor::{Descriptor, Platform};
use stagex::oci::digest::Digest;
use stagex::oci::image::{build_image, ImageLayer, ImageSpec};
use stagex::oci::layout::Layout;
use stagex::oci::media_type;

/// The packages pallet-rust (with its base pallet-clang) is made of.
pub const RUST_CLANG_PACKAGES: &[&str] = &[
    "core-profile",
    "core-musl",
    "core-musl-fts",
    "core-musl-obstack",
    "core-argp-standalone",
    "core-libzstd",
    "core-xz",
    "core-zlib",
    "core-libffi",
    "core-linux-headers",
    "core-llvm",
    "core-mold",
    "core-onetbb",
    "core-rust",
    "core-git",
    "core-busybox",
    "core-libunwind",
    "core-openssl",
    "core-ca-certificates",
    "core-curl",
    "core-binutils",
    "core-pkgconf",
];

/// One package image written to a layout.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    pub manifest: Descriptor,
    pub layers: Vec<Digest>,
}

pub fn dir(tree: &mut FileTree, path: &str) {
    tree.insert(path, TreeEntry::dir(0o755)).unwrap();
}

pub fn file(tree: &mut FileTree, path: &str, body: &str) {
    tree.insert(
        path,
        TreeEntry::file(FileSource::Bytes(body.as_bytes().to_vec()), 0o644),
    )
    .unwrap();
}

/// The shared base layer (like core-filesystem's).
pub fn filesystem_layer() -> FileTree {
    let mut t = FileTree::new();
    for d in [
        "bin",
        "etc",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/share",
        "usr/share/doc",
    ] {
        dir(&mut t, d);
    }
    file(&mut t, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    t
}

/// The package's own layer: a marker file, plus real content for a few.
pub fn package_layer(name: &str) -> FileTree {
    let mut t = FileTree::new();
    for d in ["bin", "usr", "usr/bin", "usr/share", "usr/share/doc"] {
        dir(&mut t, d);
    }
    file(
        &mut t,
        &format!("usr/share/doc/{name}/ID"),
        &format!("{name}\n"),
    );
    match name {
        "core-busybox" => {
            t.insert(
                "bin/busybox",
                TreeEntry::file(FileSource::Path("/bin/busybox".into()), 0o755),
            )
            .unwrap();
            t.insert(
                "usr/bin/busybox",
                TreeEntry::hard_link("bin/busybox", 0o755),
            )
            .unwrap();
        }
        "core-llvm" => {
            t.insert(
                "bin/lld",
                TreeEntry::file(FileSource::Bytes(b"lld program".to_vec()), 0o755),
            )
            .unwrap();
            t.insert(
                "bin/llvm-objcopy",
                TreeEntry::file(FileSource::Bytes(b"objcopy program".to_vec()), 0o755),
            )
            .unwrap();
            for l in ["ld.lld", "ld64.lld", "lld-link", "wasm-ld"] {
                t.insert(&format!("bin/{l}"), TreeEntry::symlink("lld"))
                    .unwrap();
            }
        }
        "core-profile" => file(&mut t, "etc/profile", "export PS1='$ '\n"),
        _ => {}
    }
    t
}

/// Writes each of `names` to `out/` as a two-layer package (the shared
/// filesystem layer, then its own), with a default config.
pub fn write_packages(out: &Path, names: &[&str]) -> BTreeMap<String, Package> {
    names
        .iter()
        .map(|name| {
            let layers = [filesystem_layer(), package_layer(name)];
            let package = write_package(out, name, &layers, RunConfig::default());
            (name.to_string(), package)
        })
        .collect()
}

/// Writes an image of `trees` (one layer each) to `out/<name>/`, tagged
/// `latest`; `run` is its config.
pub fn write_package(out: &Path, name: &str, trees: &[FileTree], run: RunConfig) -> Package {
    let layout = Layout::create(out.join(name)).unwrap();
    let mut layers = Vec::new();
    for tree in trees {
        let written = write_layer_to_layout(tree, &LayerOptions::default(), &layout).unwrap();
        layers.push(ImageLayer {
            descriptor: written.descriptor(),
            diff_id: written.diff_id.clone(),
            history: History {
                created_by: Some(format!("test {name}")),
                ..History::default()
            },
        });
    }
    let mut descriptor = write_image(&layout, Platform::host(), run, layers.clone());
    descriptor.platform = None;
    layout.set_ref(Some("latest"), descriptor.clone()).unwrap();
    Package {
        name: name.to_string(),
        manifest: descriptor,
        layers: layers.iter().map(|l| l.descriptor.digest.clone()).collect(),
    }
}

/// Writes the config and manifest of an image of `layers` (created at
/// second 1) into `layout`; returns the manifest's descriptor.
pub fn write_image(
    layout: &Layout,
    platform: Platform,
    run: RunConfig,
    layers: Vec<ImageLayer>,
) -> Descriptor {
    let spec = ImageSpec {
        platform,
        created: rfc3339_utc(1),
        run,
        layers,
        empty_history: vec![],
        annotations: BTreeMap::new(),
    };
    let built = build_image(&spec).unwrap();
    layout
        .write_json(&built.config, media_type::OCI_CONFIG)
        .unwrap();
    layout
        .write_json(&built.manifest, media_type::OCI_MANIFEST)
        .unwrap();
    built.descriptor
}

/// The rust+clang world in `out/`: every package FROM the shared
/// filesystem layer; core-profile sets the env the pallets inherit.
pub fn rust_clang_world(out: &Path) -> BTreeMap<String, Package> {
    RUST_CLANG_PACKAGES
        .iter()
        .map(|name| {
            let mut run = RunConfig::default();
            if *name == "core-profile" {
                run.set_env_var("PATH", "/usr/bin:/bin");
                run.set_env_var("TZ", "UTC");
            }
            let package = write_package(out, name, &[filesystem_layer(), package_layer(name)], run);
            (name.to_string(), package)
        })
        .collect()
}

/// Pushes every `out/<name>/` layout to `host/stagex/<name>:latest`.
pub fn seed_registry(host: &str, out: &Path, packages: &BTreeMap<String, Package>) {
    for (name, package) in packages {
        let layout = Layout::open(out.join(name)).unwrap();
        stagex::registry::push::push_image(
            &format!("{host}/stagex/{name}:latest"),
            &layout,
            &package.manifest,
            &BTreeMap::new(),
            &stagex::progress::NoProgress,
        )
        .unwrap();
    }
}

/// The repository root (holds pallets/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `stagex --json --root <repo> pallet ARGS` with `store`; returns the
/// parsed JSON report, panicking with stderr on failure.
pub fn pallet_json(store: &Path, args: &[&str]) -> serde_json::Value {
    pallet_output(&repo_root(), store, args).0
}

/// Runs `stagex --json --root <root> pallet ARGS` with `store`, which must
/// succeed; returns the parsed JSON report and stderr.
pub fn pallet_output(root: &Path, store: &Path, args: &[&str]) -> (serde_json::Value, String) {
    let output = pallet_command_in(root, store, args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "stagex pallet {args:?} failed:\n{stderr}"
    );
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (report, stderr)
}

/// Runs `stagex pallet ARGS`, which must fail; returns its stderr.
pub fn pallet_fails(store: &Path, args: &[&str]) -> String {
    let output = pallet_command(store, args).output().unwrap();
    assert!(
        !output.status.success(),
        "stagex pallet {args:?} succeeded but should fail"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn pallet_command(store: &Path, args: &[&str]) -> std::process::Command {
    pallet_command_in(&repo_root(), store, args)
}

/// `stagex --json --root <root> pallet ARGS` with `store`, without
/// SOURCE_DATE_EPOCH.
pub fn pallet_command_in(root: &Path, store: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stagex"));
    command
        .arg("--json")
        .arg("--root")
        .arg(root)
        .arg("pallet")
        .args(args)
        .env("STAGEX_STORE", store)
        .env_remove("SOURCE_DATE_EPOCH");
    command
}

/// The first platform's layers whose `origin` is `reused` or `built`.
pub fn layers_of<'a>(report: &'a serde_json::Value, origin: &str) -> Vec<&'a serde_json::Value> {
    report["platforms"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["origin"] == origin)
        .collect()
}

/// `umoci unpack --rootless` of `image` (`DIR:TAG`) into `bundle`; returns
/// the bundle's rootfs. The caller has checked that umoci is there.
pub fn umoci_unpack(image: &str, bundle: &Path) -> PathBuf {
    let output = std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image", image])
        .arg(bundle)
        .output()
        .unwrap_or_else(|e| panic!("cannot start umoci: {e}"));
    assert!(
        output.status.success(),
        "umoci unpack {image} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    bundle.join("rootfs")
}

/// The OCI runtime config umoci wrote into `bundle`.
pub fn bundle_config(bundle: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap()
}

/// `process.env` of a bundle config.
pub fn process_env(config: &serde_json::Value) -> Vec<&str> {
    config["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// Asserts that the store at `store` keeps nothing of `layer` (no blob, no
/// index, no scan) and no temp file (every file under `blobs/sha256` and
/// `meta` is named by a digest).
pub fn assert_store_holds_nothing_of(store: &Path, layer: &Digest) {
    let files: Vec<String> = ["blobs/sha256", "meta"]
        .iter()
        .flat_map(|dir| walkdir::WalkDir::new(store.join(dir)))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|name| !name.contains(layer.hex())),
        "the bad layer left {files:?}"
    );
    let stray: Vec<&String> = files
        .iter()
        .filter(|name| name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert!(stray.is_empty(), "temp files left: {stray:?}");
}
