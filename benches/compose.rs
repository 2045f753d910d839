//! Bench (not a test): composing a 20-package pallet.
//!
//! 1. Warm store: `stagex pallet` composition (pipeline::run from local
//!    layouts, indexes cached) vs the baseline a Containerfile of
//!    `COPY --from` lines amounts to: extract every package layer, then
//!    write one deterministic tar.gz of the merged tree.
//! 2. Cold: composition from a real docker-registry on 127.0.0.1 into an
//!    empty store vs `skopeo copy` of the same images.
//!
//! Size: STAGEX_BENCH_MIB (default 1024) spread over 20 packages.
//! Run: `cargo bench --bench compose`.
//!
//! Measured on the 2-core build machine (shared with other jobs), 1 GiB of
//! files = 705 MiB of gzip layers: warm compose 3.3 ms (median of 7) vs
//! 16.1 s extract + re-tar (4941x); cold compose from a 127.0.0.1 registry
//! (pull + verify + index) 4.1 s vs `skopeo copy` of the same 20 images
//! 5.0 s (1.22x).
#[allow(dead_code)] // the benches use a part of the test support
#[path = "../tests/pallet_support/mod.rs"]
mod pallet_support;
#[allow(dead_code)] // the benches use a part of the test support
#[path = "../tests/peers/mod.rs"]
mod peers;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stagex::layer::extract::{extract_layer, ExtractOptions};
use stagex::layer::tree::{FileSource, FileTree, TreeEntry};
use stagex::layer::writer::{write_layer, LayerOptions};
use stagex::oci::config::RunConfig;
use stagex::oci::descriptor::Platform;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;
use stagex::pallet::catalog::{Origin, ReleaseCatalog};
use stagex::pallet::definition::Catalog;
use stagex::pallet::pipeline::{self, Request};
use stagex::pallet::resolve::Source;
use stagex::progress::NoProgress;
use stagex::store::Store;

const PACKAGES: usize = 20;
const FILE_SIZE: usize = 1 << 20;

/// Deterministic, moderately compressible bytes (like binaries).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = x.to_le_bytes();
        // Half the bytes random, half from a small alphabet.
        out.extend_from_slice(&[
            word[0],
            word[1],
            word[2] & 7,
            word[3] & 7,
            word[4],
            word[5] & 3,
            b'a',
            word[7] & 1,
        ]);
    }
    out.truncate(len);
    out
}

fn make_packages(out: &Path, total_mib: usize) -> Vec<String> {
    let files_per_package = (total_mib * (1 << 20) / FILE_SIZE / PACKAGES).max(1);
    let mut names = Vec::new();
    for p in 0..PACKAGES {
        let name = format!("core-p{p:02}");
        let mut tree = FileTree::new();
        for f in 0..files_per_package {
            let data = bytes((p * 100_000 + f) as u64, FILE_SIZE);
            tree.insert(
                &format!("usr/lib/{name}/f{f:04}.so"),
                TreeEntry::file(FileSource::Bytes(data), 0o755),
            )
            .unwrap();
        }
        tree.insert(
            &format!("usr/bin/{name}"),
            TreeEntry::file(FileSource::Bytes(name.clone().into_bytes()), 0o755),
        )
        .unwrap();
        pallet_support::write_package(
            out,
            &name,
            &[pallet_support::filesystem_layer(), tree],
            RunConfig::default(),
        );
        names.push(name);
    }
    names
}

fn request(expression: &str, source: Source) -> Request {
    Request {
        expression: expression.to_string(),
        source,
        platforms: vec![Platform::host()],
        strict: false,
        flatten: false,
        allow_special_files: false,
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn baseline(out: &Path, names: &[String], work: &Path) -> Duration {
    let started = Instant::now();
    let root = work.join("merged");
    for name in names {
        let layout = Layout::open(out.join(name)).unwrap();
        let desc = layout.resolve(Some("latest")).unwrap();
        let (_, manifest, _) = layout.image_for_platform(&desc, None).unwrap();
        for layer in &manifest.layers {
            let blob = layout.open_blob(&layer.digest, Some(layer.size)).unwrap();
            let compression = media_type::layer_compression(&layer.media_type).unwrap();
            extract_layer(blob, compression, &root, &ExtractOptions::default()).unwrap();
        }
    }
    let tree = FileTree::from_dir(&root).unwrap();
    let sink = std::fs::File::create(work.join("merged.tar.gz")).unwrap();
    write_layer(
        &tree,
        &LayerOptions::default(),
        std::io::BufWriter::new(sink),
    )
    .unwrap();
    started.elapsed()
}

fn main() {
    let total_mib = peers::tools::env_usize("STAGEX_BENCH_MIB", 1024);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    eprintln!("generating {PACKAGES} packages, {total_mib} MiB of files ...");
    let names = make_packages(&out, total_mib);
    let expression = names.join("+");
    let catalog = ReleaseCatalog::checkout_tags(Catalog::default(), Origin::Checkout(".".into()));
    let layer_bytes: u64 = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum();

    // 1. Warm compose vs extract + re-tar.
    let store = Store::open(tmp.path().join("store")).unwrap();
    let local = Source::Local(out.clone());
    let first = Instant::now();
    let composed = pipeline::run(
        &store,
        &catalog,
        &request(&expression, local.clone()),
        &NoProgress,
    )
    .unwrap();
    let cold_local = first.elapsed();
    let warm: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let again = pipeline::run(
                &store,
                &catalog,
                &request(&expression, local.clone()),
                &NoProgress,
            )
            .unwrap();
            assert_eq!(again.root.digest, composed.root.digest);
            t.elapsed()
        })
        .collect();
    let warm = median(warm);
    let base = baseline(&out, &names, &tmp.path().join("baseline"));
    println!(
        "compose: {PACKAGES} packages, {:.0} MiB of layer blobs",
        layer_bytes as f64 / 1048576.0
    );
    println!("  first compose from local layouts (link + index): {cold_local:?}");
    println!(
        "  warm compose (median of 7):                       {warm:?}  (target < 100 ms: {})",
        if warm < Duration::from_millis(100) {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("  baseline extract + one deterministic tar.gz:      {base:?}");
    println!(
        "  ratio baseline / warm compose:                    {:.0}x (target >= 100x)",
        base.as_secs_f64() / warm.as_secs_f64()
    );

    // 2. Cold compose from a local registry vs skopeo copy.
    let Some(registry) = peers::registry::Registry::start() else {
        println!("  (docker-registry missing: cold registry comparison skipped)");
        return;
    };
    let packages: BTreeMap<String, pallet_support::Package> = names
        .iter()
        .map(|n| {
            let layout = Layout::open(out.join(n)).unwrap();
            let manifest = layout.resolve(Some("latest")).unwrap();
            (
                n.clone(),
                pallet_support::Package {
                    name: n.clone(),
                    manifest,
                    layers: vec![],
                },
            )
        })
        .collect();
    pallet_support::seed_registry(&registry.host(), &out, &packages);
    let source = Source::parse(&format!("{}/stagex", registry.host())).unwrap();
    let cold_store = Store::open(tmp.path().join("cold-store")).unwrap();
    let t = Instant::now();
    let cold = pipeline::run(
        &cold_store,
        &catalog,
        &request(&expression, source),
        &NoProgress,
    )
    .unwrap();
    let cold_time = t.elapsed();
    assert_eq!(cold.root.digest, composed.root.digest);
    let skopeo = peers::tools::find("skopeo");
    println!("  cold compose from the registry (pull + index):    {cold_time:?}");
    if let Some(skopeo) = &skopeo {
        std::fs::create_dir_all(tmp.path().join("skopeo")).unwrap();
        let t = Instant::now();
        for n in &names {
            let status = Command::new(skopeo)
                .args(["copy", "-q", "--src-tls-verify=false"])
                .arg(format!("docker://{}/stagex/{n}:latest", registry.host()))
                .arg(format!(
                    "oci:{}:latest",
                    tmp.path().join("skopeo").join(n).display()
                ))
                .status()
                .unwrap();
            assert!(status.success());
        }
        let sk = t.elapsed();
        println!("  skopeo copy of the same {PACKAGES} images:             {sk:?}");
        println!(
            "  ratio skopeo / cold compose:                      {:.2}x",
            sk.as_secs_f64() / cold_time.as_secs_f64()
        );
    } else {
        println!("  skopeo copy comparison skipped: skopeo is not installed");
    }
}
