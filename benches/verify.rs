//! Benchmark: the whole `stagex verify --digests` PROCESS (start, keys,
//! lookaside reading, verification, quorum, report) over IMAGES x 2 signers
//! against StageX's way, one `gpgv --keyring` process per signature file,
//! in the same run (best of 5 stagex processes, best of 3 gpgv loops,
//! interleaved after a `sync`, so a slow spell hits both sides). Two
//! rows: RSA-4096 keys made by gpg (what StageX maintainers hold; the
//! default and the target, >= 25x) and Ed25519 keys (>= 100x). Keys are made once with `gpg --quick-gen-key`; the images are
//! signed through sequoia with the exported keys (same blob format as
//! `gpg --sign --no-armor`; gpgv checks every one of them in the loop).
//!
//! Run: `cargo bench --bench verify` (BENCH_IMAGES=500 by default; a
//! quick proof run: `BENCH_IMAGES=50 cargo bench --bench verify`;
//! `BENCH_KEEP=1` keeps the signed trees, to profile a run by hand). The
//! "no cache" row runs with STAGEX_SIGNATURE_CACHE=off.
#[allow(dead_code)] // the benches use a part of the test support
#[path = "../tests/peers/mod.rs"]
mod peers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sequoia_openpgp as openpgp;

use openpgp::parse::Parse;

use peers::gpg::GpgHome;
use stagex::lookaside::file::FileLookaside;
use stagex::oci::digest::Digest;
use stagex::sign::payload::Payload;
use stagex::sign::signer::{KeyFileSigner, PayloadSigner};

/// One row: a key algorithm, the time of both sides, their ratio.
struct Row {
    name: &'static str,
    signatures: usize,
    /// No signature cache (what the targets are about).
    ours: Duration,
    /// With a warm signature cache (`sign::cache`), on top.
    warm: Duration,
    gpgv: Duration,
}

fn main() {
    let images = peers::tools::env_usize("BENCH_IMAGES", 500).max(1);
    peers::tools::require(&["gpg", "gpgv"]).expect("gpg and gpgv are needed (see .ci/setup)");
    let rows = [
        run_row("RSA-4096", "rsa4096", images),
        run_row("Ed25519", "ed25519", images),
    ];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("{images} images x 2 signers, {threads} core(s); stagex = best of 5 whole processes");
    for row in rows {
        let ratio = row.gpgv.as_secs_f64() / row.ours.as_secs_f64();
        let target = if row.name == "RSA-4096" { 25 } else { 100 };
        println!(
            "{:9} stagex verify {:.3} s ({:.0} us/signature, no cache) | gpgv loop {:.3} s ({} files) | ratio {ratio:.1}x (target >= {target}x)",
            row.name,
            row.ours.as_secs_f64(),
            row.ours.as_secs_f64() * 1e6 / row.signatures as f64,
            row.gpgv.as_secs_f64(),
            row.signatures,
        );
        println!(
            "{:9} with a warm signature cache: {:.3} s, ratio {:.1}x",
            "",
            row.warm.as_secs_f64(),
            row.gpgv.as_secs_f64() / row.warm.as_secs_f64()
        );
    }
}

/// Makes two gpg keys of `algo`, signs `images` images with both, then
/// times both verifiers.
fn run_row(name: &'static str, algo: &str, images: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    if std::env::var_os("BENCH_KEEP").is_some() {
        // To profile a run by hand: the tree stays, with the command.
        let kept = dir.keep();
        println!(
            "{name}: kept {} (stagex --root DIR verify --threshold 2 --keys DIR/keys --lookaside DIR/signatures --digests DIR/bench.txt)",
            kept.display()
        );
        return run_in(name, algo, images, &kept);
    }
    run_in(name, algo, images, root)
}

fn run_in(name: &'static str, algo: &str, images: usize, root: &Path) -> Row {
    let homes = [
        GpgHome::generate("alice", algo, "sign", "never", None).expect("gpg"),
        GpgHome::generate("bob", algo, "sign", "never", None).expect("gpg"),
    ];
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut ring = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        let public = home.export();
        std::fs::write(keys.join(format!("k{i}.pgp")), &public).unwrap();
        ring.extend(public);
    }
    let ring_path = root.join("ring.gpg");
    std::fs::write(&ring_path, &ring).unwrap();
    let signers: Vec<KeyFileSigner> = homes
        .iter()
        .map(|h| {
            let cert = openpgp::Cert::from_bytes(&h.export_secret()).unwrap();
            KeyFileSigner::from_cert(cert).unwrap()
        })
        .collect();
    let (digests, files) = sign_images(root, &signers, images);
    // Nothing of the signing left to write back while either side runs.
    assert!(Command::new("sync").status().unwrap().success());
    // Interleaved, so a slow spell of the machine hits both sides alike:
    // 5 cold stagex runs, with a gpgv loop after each of the first 3.
    let gpgv_loop = gpgv_loop(root, &ring_path, &files);
    let (mut ours, mut gpgv) = (Duration::MAX, Duration::MAX);
    for round in 0..5 {
        ours = ours.min(run_stagex(root, &keys, &digests, images, "off"));
        if round < 3 {
            gpgv = gpgv.min(gpgv_loop());
        }
    }
    let cache = root.join("signature-cache");
    let warm = (0..5)
        .map(|_| run_stagex(root, &keys, &digests, images, cache.to_str().unwrap()))
        .min()
        .unwrap();
    Row {
        name,
        signatures: files.len(),
        ours,
        warm,
        gpgv,
    }
}

/// `images` images, each signed by every signer, in `root/signatures`;
/// returns the digests file and every signature file.
fn sign_images(root: &Path, signers: &[KeyFileSigner], images: usize) -> (PathBuf, Vec<PathBuf>) {
    let store = FileLookaside::new(root.join("signatures"));
    let mut lines = String::new();
    let mut files = Vec::new();
    for i in 0..images {
        let digest = Digest::of_bytes(format!("manifest {i}").as_bytes());
        let name = format!("bench-{i:04}");
        let payload = Payload {
            docker_reference: format!("stagex/{name}:1.0"),
            manifest_digest: digest.clone(),
            creator: Some("bench".into()),
            timestamp: Some(1_700_000_000),
        }
        .to_bytes();
        for signer in signers {
            let blob = signer.sign(&payload).unwrap();
            let (_, path) = store
                .add(&format!("stagex/{name}"), &digest, &blob)
                .unwrap();
            files.push(path);
        }
        lines += &format!("{} {name}\n", digest.hex());
    }
    let digests = root.join("bench.txt");
    std::fs::write(&digests, lines).unwrap();
    (digests, files)
}

/// One run of the stagex process (`cache`: `STAGEX_SIGNATURE_CACHE`; a
/// file is filled by the first run, so later runs are warm ones).
fn run_stagex(root: &Path, keys: &Path, digests: &Path, images: usize, cache: &str) -> Duration {
    let start = Instant::now();
    // RUST_BACKTRACE makes anyhow capture a backtrace for every internal
    // error (a debugging setting): measure without it.
    let output = Command::new(env!("CARGO_BIN_EXE_stagex"))
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("STAGEX_SIGNATURE_CACHE", cache)
        .arg("--root")
        .arg(root)
        .arg("--json")
        .args(["verify", "--threshold", "2", "--keys"])
        .arg(keys)
        .arg("--lookaside")
        .arg(root.join("signatures"))
        .arg("--digests")
        .arg(digests)
        .output()
        .expect("running stagex");
    let elapsed = start.elapsed();
    assert!(
        output.status.success(),
        "stagex verify failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["summary"]["quorum_met"], images,
        "{}",
        report["summary"]
    );
    elapsed
}

/// A timed run of the baseline: one gpgv process per signature file, from
/// a shell loop.
fn gpgv_loop<'a>(root: &Path, ring: &'a Path, files: &[PathBuf]) -> impl Fn() -> Duration + 'a {
    let list = root.join("files.txt");
    let text: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&list, text).unwrap();
    let gpg_home = root.join("gnupg");
    std::fs::create_dir_all(&gpg_home).unwrap();
    let script = "while read -r f; do gpgv --keyring \"$1\" \"$f\" 2>/dev/null || { echo \"gpgv rejected $f\" >&2; exit 1; }; done < \"$2\"";
    move || {
        let start = Instant::now();
        let status = Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(ring)
            .arg(&list)
            .env("GNUPGHOME", &gpg_home)
            .status()
            .expect("sh");
        let elapsed = start.elapsed();
        assert!(status.success(), "gpgv loop failed");
        elapsed
    }
}
