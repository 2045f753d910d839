//! Bench (not a test): composing a 20-package pallet.
//!
//! 1. Warm store: `stagex pallet` composition (pipeline::run from local
//!    layouts, indexes cached) vs the baseline a Containerfile of
//!    `COPY --from` lines amounts to: extract every package layer, then
//!    write one deterministic tar.gz of the merged tree.
//! 2. Cold: composition from a real docker-registry on 127.0.0.1 into an
//!    empty store (pull, verify, index every layer) vs `skopeo copy` of
//!    the same 20 images; STAGEX_BENCH_COLD_RUNS (default 3) runs of each,
//!    alternated, medians compared; the CPU seconds of stagex and of the
//!    registry per run.
//! 3. Breakdown: each stage of a cold pull alone, on one thread, over
//!    every layer blob once (round trips, download, sha256, gunzip, the
//!    layer index, the store's write + fsync + rename, a bare write).
//!
//! Size: STAGEX_BENCH_MIB (default 1024) spread over 20 packages.
//! Run: `cargo bench --bench compose`.
//!
//! Measured on the 2-core build machine (shared with other jobs), 1 GiB of
//! files = 705 MiB of gzip layers: warm compose 3.3 ms (median of 7) vs
//! 16.1 s extract + re-tar (4941x).
//!
//! Cold, since a layer is indexed while it streams in (store::intake: no
//! second read and hash of the blob) and manifests and configs are fetched
//! in parallel, same machine, 2026-12-06, 5 runs each, alternated:
//! - load average 2.3-3.1 (quietest): stagex 3.46 / 3.44 / 3.64 / 3.30 /
//!   3.33 s (median 3.44 s), skopeo 4.21 / 4.16 / 3.75 / 3.58 / 4.60 s
//!   (median 4.16 s): 1.21x;
//! - load average 3.5-4.2: median 5.88 s vs 6.27 s (1.07x); 3 runs at load
//!   3.8: 5.53 s vs 5.48 s (0.99x).
//!
//! Before the change the issue measured 0.94x-1.4x. The 2x target is NOT
//! met, and cannot be on this machine: the work is CPU-bound, and the
//! floor the breakdown prints is above 2x's budget. The floor is the CPU
//! any cold compose that checks blob digests and diff_ids must spend here
//! (receive, write, inflate with the FASTEST inflater installed, hash
//! blobs and tars; not even counting the tar walk, the per-file hashes and
//! the entry rules), plus the registry's, over 2 cores. 2026-12-06, load
//! average 1.6-2.1, 5 runs: stagex median 3.58 s (6.0-6.3 CPU-s per run;
//! registry 0.61-0.70), skopeo 4.17 s (1.17x). Each stage alone, CPU time:
//! download 0.50 s, write 1.65 s (0.40 s in a run with less page cache to
//! reclaim), zlib-rs gunzip 3.33 s, ISA-L `igzip -d` 2.61 s (the fastest
//! here; libdeflate 3.06 s), sha256 of the blobs 0.42 s and of the tars
//! 0.62 s: floor (5.80 + 0.61) / 2 = 3.20 s, or 2.58 s with the cheaper
//! write, both above the 2.09 s that 2x of skopeo's 4.17 s allows. skopeo
//! hashes and writes but never decompresses. stagex's own median (3.58 s)
//! is within 12% of that floor although it inflates with zlib-rs. More
//! cores would do it: the pull runs every blob in parallel, and 6.6 CPU-s
//! over 4 cores is 1.65 s.
#[allow(dead_code)] // the benches use a part of the test support
#[path = "../tests/pallet_support/mod.rs"]
mod pallet_support;
#[allow(dead_code)] // the benches use a part of the test support
#[path = "../tests/peers/mod.rs"]
mod peers;
#[allow(dead_code)] // each bench uses a part of the shared support
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stagex::layer::extract::{extract_layer, ExtractOptions};
use stagex::layer::index_layer;
use stagex::layer::tree::{FileSource, FileTree, TreeEntry};
use stagex::layer::writer::{write_layer, LayerOptions};
use stagex::oci::config::RunConfig;
use stagex::oci::descriptor::{Descriptor, Platform};
use stagex::oci::digest::Digest;
use stagex::oci::layout::Layout;
use stagex::oci::manifest::AnyManifest;
use stagex::oci::media_type::{self, LayerCompression};
use stagex::pallet::catalog::{Origin, ReleaseCatalog};
use stagex::pallet::definition::Catalog;
use stagex::pallet::pipeline::{self, Request};
use stagex::pallet::resolve::ImageProvider;
use stagex::progress::NoProgress;
use stagex::registry::RegistryClient;
use stagex::store::Store;

const PACKAGES: usize = 20;
const FILE_SIZE: usize = 1 << 20;

fn make_packages(out: &Path, total_mib: usize) -> Vec<String> {
    let files_per_package = (total_mib * (1 << 20) / FILE_SIZE / PACKAGES).max(1);
    let mut names = Vec::new();
    for p in 0..PACKAGES {
        let name = format!("core-p{p:02}");
        let mut tree = FileTree::new();
        for f in 0..files_per_package {
            let data = support::bytes((p * 100_000 + f) as u64, FILE_SIZE);
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

fn request(expression: &str, source: ImageProvider) -> Request {
    Request {
        expression: expression.to_string(),
        source,
        platforms: vec![Platform::host()],
        strict: false,
        flatten: false,
        allow_special_files: false,
    }
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
    let total_mib = support::env_usize("STAGEX_BENCH_MIB", 1024);
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

    // 1. Warm compose vs extract + re-tar (STAGEX_BENCH_COLD_ONLY=1 skips
    //    it and the breakdown, for profiling the cold compose alone).
    let cold_only = support::env_usize("STAGEX_BENCH_COLD_ONLY", 0) == 1;
    let store = Store::open(tmp.path().join("store")).unwrap();
    let local = ImageProvider::Local(out.clone());
    let first = Instant::now();
    let composed = pipeline::run(
        &store,
        &catalog,
        &request(&expression, local.clone()),
        &NoProgress,
    )
    .unwrap();
    let cold_local = first.elapsed();
    if !cold_only {
        warm_and_baseline(&WarmInputs {
            store: &store,
            catalog: &catalog,
            local: &local,
            expression: &expression,
            composed: &composed.root.digest,
            out: &out,
            names: &names,
            work: tmp.path(),
            layer_bytes,
            cold_local,
        });
    }

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
    let source = ImageProvider::parse(&format!("{}/stagex", registry.host())).unwrap();
    let runs = support::env_usize("STAGEX_BENCH_COLD_RUNS", 3).max(1);
    let skopeo = peers::tools::find("skopeo");
    let (mut ours, mut theirs, mut cpu_use) = (Vec::new(), Vec::new(), Vec::new());
    // Alternate the two, each run into an empty store / directory, so a
    // change in the machine's load hits both alike.
    for run in 0..runs {
        let cold_store = Store::open(tmp.path().join(format!("cold-store-{run}"))).unwrap();
        let (t, cpu, registry_cpu) = (
            Instant::now(),
            support::own_cpu_seconds(),
            registry.cpu_seconds(),
        );
        let cold = pipeline::run(
            &cold_store,
            &catalog,
            &request(&expression, source.clone()),
            &NoProgress,
        )
        .unwrap();
        ours.push(t.elapsed());
        cpu_use.push((
            support::own_cpu_seconds() - cpu,
            registry.cpu_seconds() - registry_cpu,
        ));
        assert_eq!(cold.root.digest, composed.root.digest);
        if let Some(skopeo) = &skopeo {
            theirs.push(skopeo_copy(
                skopeo,
                &registry.host(),
                &names,
                &tmp.path().join(format!("skopeo-{run}")),
            ));
        }
        std::fs::remove_dir_all(cold_store.root()).unwrap();
    }
    println!("  cold compose from the registry (pull + verify + index), {runs} runs: {ours:.2?}");
    let cold_time = support::median(ours);
    println!("    median: {cold_time:.2?}; CPU seconds (stagex, registry) per run: {cpu_use:.2?}");
    let skopeo_median = (!theirs.is_empty()).then(|| support::median(theirs.clone()));
    if let Some(sk) = skopeo_median {
        println!("  skopeo copy of the same {PACKAGES} images, same runs:   {theirs:.2?}");
        println!("    median: {sk:.2?}");
        println!(
            "  ratio skopeo / cold compose (medians):           {:.2}x (target >= 2x)",
            sk.as_secs_f64() / cold_time.as_secs_f64()
        );
    } else {
        println!("  skopeo copy comparison skipped: skopeo is not installed");
    }
    if !cold_only {
        let registry_cpu = cpu_use.iter().map(|c| c.1).fold(f64::MAX, f64::min);
        breakdown(
            &registry.host(),
            &names,
            tmp.path(),
            (skopeo_median, registry_cpu),
        );
    }
}

/// What the warm section needs from main.
struct WarmInputs<'a> {
    store: &'a Store,
    catalog: &'a ReleaseCatalog,
    local: &'a ImageProvider,
    expression: &'a str,
    composed: &'a Digest,
    out: &'a Path,
    names: &'a [String],
    work: &'a Path,
    layer_bytes: u64,
    cold_local: Duration,
}

/// 1. Warm compose (indexes cached) vs extract + re-tar.
fn warm_and_baseline(inputs: &WarmInputs) {
    let warm: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let again = pipeline::run(
                inputs.store,
                inputs.catalog,
                &request(inputs.expression, inputs.local.clone()),
                &NoProgress,
            )
            .unwrap();
            assert_eq!(again.root.digest, *inputs.composed);
            t.elapsed()
        })
        .collect();
    let warm = support::median(warm);
    let base = baseline(inputs.out, inputs.names, &inputs.work.join("baseline"));
    println!(
        "compose: {PACKAGES} packages, {:.0} MiB of layer blobs",
        inputs.layer_bytes as f64 / 1048576.0
    );
    println!(
        "  first compose from local layouts (link + index): {:?}",
        inputs.cold_local
    );
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
}

/// `skopeo copy` of every package image into `oci:<dir>/<name>`.
fn skopeo_copy(skopeo: &Path, host: &str, names: &[String], dir: &Path) -> Duration {
    std::fs::create_dir_all(dir).unwrap();
    let t = Instant::now();
    for n in names {
        let status = Command::new(skopeo)
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/stagex/{n}:latest"))
            .arg(format!("oci:{}:latest", dir.join(n).display()))
            .status()
            .unwrap();
        assert!(status.success());
    }
    t.elapsed()
}

/// Where a cold pull's time goes: each stage alone, on one thread, over
/// every distinct layer blob once (the cold compose overlaps them across
/// blobs and cores, so its time is less than their sum). Each stage gives
/// its wall time and its CPU time; the floor adds CPU times.
/// `reference`: skopeo's median time and the registry's least CPU seconds
/// per cold run, for the floor.
fn breakdown(host: &str, names: &[String], work: &Path, reference: (Option<Duration>, f64)) {
    let (skopeo, registry_cpu) = reference;
    let client = RegistryClient::new(host).unwrap();
    let pulled = Layout::create(work.join("breakdown-pulled")).unwrap();
    let mut layers: BTreeMap<Digest, (String, Descriptor)> = BTreeMap::new();
    let round_trips = timed(|| {
        for n in names {
            let repo = format!("stagex/{n}");
            let (bytes, _) = client.pull_manifest(&repo, "latest").unwrap();
            let AnyManifest::Image(manifest) = AnyManifest::parse(&bytes, None).unwrap() else {
                panic!("{repo}: not an image manifest");
            };
            client
                .pull_blob(&repo, &manifest.config, &pulled, &NoProgress)
                .unwrap();
            for layer in manifest.layers {
                layers.insert(layer.digest.clone(), (repo.clone(), layer));
            }
        }
    });
    let mut downloaded = 0;
    let download = timed(|| downloaded = download_all(host, &layers));
    let pull = timed(|| {
        for (repo, layer) in layers.values() {
            client.pull_blob(repo, layer, &pulled, &NoProgress).unwrap();
        }
    });
    let blobs: Vec<(Vec<u8>, &Descriptor)> = layers
        .values()
        .map(|(_, d)| (pulled.read_blob(&d.digest).unwrap(), d))
        .collect();
    let stage = |run: &dyn Fn(&[u8], &Descriptor)| {
        timed(|| {
            blobs
                .iter()
                .for_each(|(bytes, descriptor)| run(bytes, descriptor))
        })
    };
    let hash = stage(&|b, _| drop(Digest::of_bytes(b)));
    let gunzip = stage(&|b, _| {
        let mut inflated = flate2::read::MultiGzDecoder::new(b);
        std::io::copy(&mut inflated, &mut std::io::sink()).unwrap();
    });
    let index = stage(&|b, _| drop(index_layer(b, LayerCompression::Gzip).unwrap()));
    let stored = Layout::create(work.join("breakdown-stored")).unwrap();
    let store = stage(&|b, d| {
        let mut writer = stored
            .blob_writer()
            .unwrap()
            .expecting(&d.digest, Some(d.size));
        writer.write_all(b).unwrap();
        writer.commit().unwrap();
    });
    let written = work.join("breakdown-written");
    std::fs::create_dir_all(&written).unwrap();
    let write = stage(&|b, d| std::fs::write(written.join(d.digest.hex()), b).unwrap());
    let mib = downloaded as f64 / 1048576.0;
    let rate = Rate(mib);
    println!(
        "  breakdown, one thread, {} layer blobs ({mib:.0} MiB), each stage alone:",
        blobs.len()
    );
    let count = names.len();
    rate.show(
        &format!("manifest + config round trips ({count} images)"),
        round_trips,
    );
    rate.show("download only (HTTP to memory)", download);
    rate.show("pull_blob (download+sha256+write+fsync)", pull);
    rate.show("sha256 of the blob", hash);
    rate.show("gunzip only", gunzip);
    rate.show("index (gunzip + tar + file and diff_id sha256)", index);
    rate.show("store (sha256 + write + fsync + rename)", store);
    rate.show("write only (no hash, no fsync)", write);
    let least = floor(&blobs, &written, [gunzip, hash, download, write], &rate);
    let least = least + Duration::from_secs_f64(registry_cpu);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "  floor: CPU of download + write + fastest inflate + sha256 of blobs and of tars \
         ({:.2?}) + the registry's CPU per cold run ({registry_cpu:.2} s) = {least:.2?}; \
         over {cores} cores, no cold compose that checks digests and diff_ids ends \
         before {:.2?}",
        least - Duration::from_secs_f64(registry_cpu),
        least / cores as u32
    );
    if let Some(skopeo) = skopeo {
        println!(
            "  2x skopeo copy (median {skopeo:.2?}) needs a cold compose within {:.2?}",
            skopeo / 2
        );
    }
}

/// Every layer blob fetched over plain HTTP into memory; the bytes read.
fn download_all(host: &str, layers: &BTreeMap<Digest, (String, Descriptor)>) -> u64 {
    let http = reqwest::Client::new();
    stagex::net::block_on(async {
        let mut total = 0;
        for (digest, (repo, _)) in layers {
            let url = format!("http://{host}/v2/{repo}/blobs/{digest}");
            let mut response = http.get(url).send().await.unwrap();
            while let Some(chunk) = response.chunk().await.unwrap() {
                total += chunk.len() as u64;
            }
        }
        total
    })
}

/// Wall time, and CPU time (user + system, this process's threads and
/// its waited-for children) of one stage.
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

fn timed(run: impl FnOnce()) -> Took {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    run();
    Took {
        wall: t.elapsed(),
        cpu: Duration::from_secs_f64(cpu_seconds() - cpu),
    }
}

fn cpu_seconds() -> f64 {
    support::own_cpu_seconds() + support::children_cpu_seconds()
}

/// Prints a stage with its throughput over `.0` MiB of gzip.
struct Rate(f64);

impl Rate {
    fn show(&self, what: &str, took: Took) {
        println!(
            "    {what:<48} {:>9.2?} wall, {:>9.2?} CPU  ({:.0} MiB/s of gzip)",
            took.wall,
            took.cpu,
            self.0 / took.wall.as_secs_f64()
        );
    }
}

/// The least CPU any cold compose that checks what it pulls must spend on
/// this machine, without the registry's: receive every blob (download),
/// store it (write), inflate every layer (with the fastest inflater
/// installed here: zlib-rs in process, or ISA-L's igzip / libdeflate's
/// gunzip as whole processes, which also read the file and so are favoured
/// by nothing), hash every blob (its digest) and every tar (its diff_id).
/// Not counted: the tar walk, the per-file hashes of the index and the
/// entry rules.
fn floor(
    blobs: &[(Vec<u8>, &Descriptor)],
    written: &Path,
    [gunzip, blob_hash, download, write]: [Took; 4],
    rate: &Rate,
) -> Duration {
    let tars: Vec<Vec<u8>> = blobs
        .iter()
        .map(|(b, _)| {
            let mut tar = Vec::new();
            flate2::read::MultiGzDecoder::new(&b[..])
                .read_to_end(&mut tar)
                .unwrap();
            tar
        })
        .collect();
    let tar_hash = timed(|| tars.iter().for_each(|tar| drop(Digest::of_bytes(tar))));
    rate.show("sha256 of the tar (diff_id)", tar_hash);
    let mut fastest = gunzip.cpu;
    for (program, args) in [("igzip", &["-d", "-c"][..]), ("libdeflate-gunzip", &["-c"])] {
        let Some(path) = support::which(program) else {
            println!("    {program}: not installed (Debian: isal, libdeflate-tools)");
            continue;
        };
        let took = timed(|| {
            for (_, descriptor) in blobs {
                let status = Command::new(&path)
                    .args(args)
                    .arg(written.join(descriptor.digest.hex()))
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{program} failed");
            }
        });
        rate.show(&format!("{program} -d (whole processes)"), took);
        fastest = fastest.min(took.cpu);
    }
    fastest + blob_hash.cpu + tar_hash.cpu + download.cpu + write.cpu
}
