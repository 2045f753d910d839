//! Benchmark: `stagex sigs sync` of 2000 images x 3 signatures served by a
//! real nginx over HTTPS (HTTP/2), compared in the same run with a
//! sequential `curl` loop fetching the same files (one process per file,
//! until each image's first 404, as a cron script would), then a no-change
//! resync (conditional requests + the state file).
//!
//! Run: `cargo bench --bench sigs` (full size), or smaller with
//! `STAGEX_BENCH_IMAGES=200`. `STAGEX_BENCH_CURL_SAMPLE=N` times the curl
//! loop over N images only and extrapolates linearly (said in the output).
//! Targets: first sync >= 10x faster than the loop; resync < 2 s.
#[allow(dead_code)] // the benches use a part of the test support
#[path = "../tests/peers/mod.rs"]
mod peers;
#[allow(dead_code)] // the benches use a part of the test support
#[path = "../tests/sign_support/mod.rs"]
mod sign_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sequoia_openpgp as openpgp;

use openpgp::serialize::Serialize;

use peers::nginx::{Nginx, Options};
use peers::tools::env_usize;
use sign_support::key;
use stagex::lookaside::location::Location;
use stagex::oci::digest::Digest;
use stagex::progress::NoProgress;
use stagex::sign::keyring::Keyring;
use stagex::sign::payload::Payload;
use stagex::sign::signer::{KeyFileSigner, PayloadSigner};
use stagex::sigs::images::from_digests;
use stagex::sigs::{sync, SyncOptions};

const SIGNERS: usize = 3;

/// The upstream tree: `images` images, each signed by every key.
fn build_tree(root: &Path, images: usize) -> (Keyring, String) {
    let certs: Vec<_> = (0..SIGNERS).map(|i| key(&format!("m{i}"))).collect();
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for (i, cert) in certs.iter().enumerate() {
        let mut bytes = Vec::new();
        cert.serialize(&mut bytes).unwrap();
        std::fs::write(keys.join(format!("k{i}.pgp")), &bytes).unwrap();
    }
    let signers: Vec<KeyFileSigner> = certs
        .iter()
        .map(|c| KeyFileSigner::from_cert(c.clone()).unwrap())
        .collect();
    let mut digests = String::new();
    for i in 0..images {
        let digest = Digest::of_bytes(format!("manifest {i}").as_bytes());
        let name = format!("core-bench{i:05}");
        let payload = Payload {
            docker_reference: format!("stagex/{name}:1.0"),
            manifest_digest: digest.clone(),
            creator: Some("bench".into()),
            timestamp: Some(1_700_000_000),
        }
        .to_bytes();
        let dir = root
            .join("upstream/stagex")
            .join(format!("{name}@sha256={}", digest.hex()));
        std::fs::create_dir_all(&dir).unwrap();
        for (n, signer) in signers.iter().enumerate() {
            let blob = signer.sign(&payload).unwrap();
            std::fs::write(dir.join(format!("signature-{}", n + 1)), blob).unwrap();
        }
        digests += &format!("{} {name}\n", digest.hex());
    }
    (Keyring::load_dir(&keys).unwrap(), digests)
}

/// One curl process per file, stopping at each image's first 404.
fn curl_loop(base: &str, ca: &Path, dest: &Path, digests: &str, sample: usize) -> Duration {
    let urls: String = digests
        .lines()
        .take(sample)
        .map(|line| {
            let (hex, name) = line.split_once(' ').unwrap();
            format!("{base}/stagex/{name}@sha256={hex}\n")
        })
        .collect();
    let list = dest.join("images.txt");
    std::fs::create_dir_all(dest).unwrap();
    std::fs::write(&list, urls).unwrap();
    let script = r#"
        while read -r dir; do
          n=1
          while curl -sf --cacert "$1" --create-dirs -o "$2/${dir#*://*/}/signature-$n" "$dir/signature-$n"; do
            n=$((n + 1))
          done
        done < "$3""#;
    let start = Instant::now();
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(ca)
        .arg(dest.join("files"))
        .arg(&list)
        .status()
        .expect("sh");
    let elapsed = start.elapsed();
    assert!(status.success(), "curl loop failed (is curl installed?)");
    elapsed
}

fn main() {
    if peers::tools::require(&["nginx", "openssl", "curl"]).is_none() {
        return;
    }
    let images = env_usize("STAGEX_BENCH_IMAGES", 2000);
    let sample = env_usize("STAGEX_BENCH_CURL_SAMPLE", images).clamp(1, images);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (keyring, digests) = build_tree(root, images);
    let nginx = Nginx::start_with(
        &root.join("upstream"),
        &Options {
            tls: true,
            http2: true,
            ..Options::default()
        },
    )
    .expect("nginx");
    let ca = nginx.ca.clone().unwrap();
    // The library reads the private CA from the environment (as the CLI).
    std::env::set_var("STAGEX_CA_FILE", &ca);
    let digests_file = root.join("core.txt");
    std::fs::write(&digests_file, &digests).unwrap();
    let set = from_digests(&[digests_file], "stagex").unwrap();

    let curl = curl_loop(&nginx.url(), &ca, &root.join("curl"), &digests, sample);
    let curl_all = curl.mul_f64(images as f64 / sample as f64);

    let options = SyncOptions {
        state_file: Some(root.join("state.json")),
        ..SyncOptions::default()
    };
    let to = root.join("mirror");
    // Only the requests of the two syncs count (the curl loop ran first).
    let curl_requests = nginx.access_log().lines().count();
    let run = || {
        let start = Instant::now();
        let report = sync(
            &Location::parse(&nginx.url()).unwrap(),
            to.to_str().unwrap(),
            &set,
            &keyring,
            &options,
            &NoProgress,
        )
        .unwrap();
        (report, start.elapsed())
    };
    let (first, first_time) = run();
    assert!(first.errors.is_empty(), "{:?}", first.errors.first());
    assert_eq!(first.uploaded.len(), images * SIGNERS);
    assert!(first.rejected.is_empty());

    let (again, resync_time) = run();
    let log: Vec<String> = nginx
        .access_log()
        .lines()
        .skip(curl_requests)
        .map(str::to_string)
        .collect();
    let over_h2 = log.iter().filter(|l| l.contains("HTTP/2.0")).count();
    assert!(again.uploaded.is_empty() && again.errors.is_empty());
    assert_eq!(again.unchanged, images);

    // Breakdown: the same first sync without the network (directory to
    // directory): what verification and durable writes cost alone.
    let start = Instant::now();
    let local = sync(
        &Location::Directory(root.join("upstream")),
        root.join("mirror-local").to_str().unwrap(),
        &set,
        &keyring,
        &SyncOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let local_time = start.elapsed();
    assert_eq!(local.uploaded.len(), images * SIGNERS);

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("{images} images x {SIGNERS} signatures over nginx HTTPS (HTTP/2), {threads} core(s)");
    println!(
        "curl loop (one process per file): {sample} images in {:.2} s{}",
        curl.as_secs_f64(),
        if sample < images {
            format!(
                " -> extrapolated to {images}: {:.2} s",
                curl_all.as_secs_f64()
            )
        } else {
            String::new()
        }
    );
    println!(
        "stagex sigs sync, first run (fetch + verify + write): {:.2} s",
        first_time.as_secs_f64()
    );
    println!(
        "  of which verify + durable writes (directory to directory, no network): {:.2} s",
        local_time.as_secs_f64()
    );
    println!(
        "ratio (curl loop / stagex): {:.1}x  (target >= 10x)",
        curl_all.as_secs_f64() / first_time.as_secs_f64()
    );
    println!(
        "no-change resync (conditional GETs, state file): {:.2} s  (target < 2 s)",
        resync_time.as_secs_f64()
    );
    println!(
        "requests of the two syncs nginx saw over HTTP/2: {over_h2} of {}",
        log.len()
    );
}
