//! Bench (not a test): `stagex publish` against a real docker-registry on
//! 127.0.0.1, side by side with `skopeo copy` in the same run.
//!
//! 1. Fresh publish of 20 images (STAGEX_BENCH_MIB total, default 1024) to
//!    an empty registry vs `skopeo copy oci:out/<image> docker://...` of each
//!    image (one after the other, as a script would) to another empty one.
//! 2. Re-publish with nothing new: from the journal, and with
//!    `--no-journal` (HEAD and manifest checks only); 0 bytes must go out.
//! 3. 500 small images, all present: re-publish (journal, and
//!    `--no-journal`).
//!
//! Run: `cargo bench --bench publish` (STAGEX_BENCH_MIB=64 for a quick
//! check, STAGEX_BENCH_SMALL=50 to shrink step 3, 0 to skip it;
//! BENCH_KEEP=1 keeps the fresh release, to profile a publish by hand).
//! Targets (issue 11): fresh <= 0.5x skopeo, no-change re-publish < 2 s,
//! 500 present < 5 s. Both sides of step 1 start after a `sync`.
//!
//! Where the time went (profiled by hand with BENCH_KEEP=1, a registry
//! started by hand, `perf record`, `strace -c` and `/proc/<pid>/stat` on
//! the registry, 256 MiB): before, the registry was the bottleneck, 3.3-3.6
//! s of its CPU for 2.7 s of wall time, and 461 requests, 401 of them
//! `GET /v2/` probes (oci-client's auth path on every call) and 100 PATCH
//! chunks (each one a stored hash state and an fsync on docker-registry:
//! 1420 fsyncs vs skopeo's 800). After (one upload request per blob, the
//! Authorization cached, HEAD read-back): 17 probes, no PATCH, 920 fsyncs
//! (the 120 more are our 2 extra tags), registry CPU 1.7-1.8 s, ours 0.45
//! s (47% SHA-256 of the bytes we send, 23% kernel copies). What is left is
//! the registry's own cost per byte (AVX2 SHA-256, writes, the fsync of
//! every blob) and per request (1.7 ms of CPU per HEAD, 3.8 ms per POST),
//! which skopeo pays too; a fresh publish of 1 GiB needs ~8 s of CPU, so
//! the ratio depends on how much of the 2 cores other work leaves us.
//!
//! Measured, quiet machine, after chunk buffers were pooled and mimalloc
//! built without huge pages (the kernel zeroing fresh pages had been a
//! third of our CPU), `cargo bench --bench publish`, three runs: 4.38 s vs
//! 9.38 s (0.47x), 4.03 s vs 8.13 s (0.50x), 4.02 s vs 7.51 s (0.54x).
//! Ours is steady; skopeo's side varies. CPU per run: stagex 1.3 s + its
//! registry 5.6-6.2 s (1.7 of the 2 cores busy), skopeo 5.3-5.6 s + its
//! registry 6.2-8.3 s. No-change re-publish 0.014 s from the journal,
//! 0.09-0.10 s asking the registry; 500 small images all present: 0.106 s
//! from the journal, 1.40 s asking the registry.
#[path = "../tests/peers/mod.rs"]
mod peers;
#[path = "../tests/publish_support/mod.rs"]
mod publish_support;
#[path = "../tests/sign_support/mod.rs"]
mod sign_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use peers::registry::Registry;
use peers::tools::{require, run_ok};
use publish_support::*;

const IMAGES: usize = 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A signed release of `count` images of `size` layer bytes in `root`.
fn release(root: &Path, ns: &str, count: usize, size: usize) -> Vec<Package> {
    let packages = make_release(root, "core", count, size, 42);
    let (alice, bob) = (sign_support::key("alice"), sign_support::key("bob"));
    sign_support::write_keys(&keys_dir(root), &[&alice, &bob]);
    for (name, cert) in [("alice", &alice), ("bob", &bob)] {
        sign_all(root, &sign_support::write_secret(root, name, cert), ns);
    }
    packages
}

/// Flushes every dirty page to disk (`sync`), so that a timed side does
/// not pay for the writes of what ran before it.
fn settle() {
    run_ok(&mut Command::new("sync"));
}

/// CPU seconds (user + system) of every waited-for child process so far.
fn children_cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Runs a publish, returns (seconds, report).
fn timed_publish(root: &Path, ns: &str, extra: &[&str]) -> (Duration, serde_json::Value) {
    let start = Instant::now();
    let out = publish(root, ns, &[&["--registry", ns], extra].concat())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    (took, json(&out))
}

fn main() {
    let Some(tools) = require(&["skopeo", "docker-registry"]) else {
        eprintln!("publish bench: skopeo and docker-registry are needed");
        return;
    };
    let skopeo = &tools[0];
    let mib = env_usize("STAGEX_BENCH_MIB", 1024);
    println!("publish bench: {IMAGES} images of {} MiB", (mib / IMAGES));

    // 1. Fresh publish vs skopeo copy, each to its own empty registry.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    if std::env::var_os("BENCH_KEEP").is_some() {
        // To profile a publish by hand: the signed release stays.
        let kept = dir.keep();
        println!(
            "kept {0} (docker-registry serve CONFIG, then: stagex --root {0} publish --release 2026.03.0 --identity HOST/stagex --registry HOST/stagex --no-journal)",
            kept.display()
        );
        fresh_and_more(&kept, skopeo);
        return;
    }
    fresh_and_more(root, skopeo);
}

/// Steps 1 to 3 with the fresh release in `root`.
fn fresh_and_more(root: &Path, skopeo: &Path) {
    let mib = env_usize("STAGEX_BENCH_MIB", 1024);
    let size = (mib << 20) / IMAGES;
    let ours = Registry::start().expect("registry");
    let theirs = Registry::start().expect("registry");
    let ns = format!("{}/stagex", ours.host());
    let packages = release(root, &ns, IMAGES, size);
    // Both sides start with nothing left to write back (the release just
    // written would otherwise compete for the disk with the first side's
    // registry, which fsyncs every blob).
    settle();
    let (ours_cpu, children_cpu) = (ours.cpu_seconds(), children_cpu_seconds());
    let (fresh, report) = timed_publish(root, &ns, &[]);
    let (ours_cpu, stagex_cpu) = (
        ours.cpu_seconds() - ours_cpu,
        children_cpu_seconds() - children_cpu,
    );
    let uploaded = report["summary"]["bytes_uploaded"].as_u64().unwrap();
    settle();
    let (theirs_cpu, children_cpu) = (theirs.cpu_seconds(), children_cpu_seconds());
    let start = Instant::now();
    for p in &packages {
        run_ok(
            Command::new(skopeo)
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}", root.join("out").join(&p.name).display()))
                .arg(format!(
                    "docker://{}/stagex/{}:{}",
                    theirs.host(),
                    p.name,
                    p.version
                )),
        );
    }
    let baseline = start.elapsed();
    let (theirs_cpu, skopeo_cpu) = (
        theirs.cpu_seconds() - theirs_cpu,
        children_cpu_seconds() - children_cpu,
    );
    println!(
        "fresh publish: stagex {:.2}s ({} MiB uploaded, 3 tags/image) vs skopeo copy {:.2}s (1 tag/image): {:.2}x",
        fresh.as_secs_f64(),
        uploaded >> 20,
        baseline.as_secs_f64(),
        fresh.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "  CPU: stagex {stagex_cpu:.2}s + its registry {ours_cpu:.2}s | skopeo {skopeo_cpu:.2}s + its registry {theirs_cpu:.2}s"
    );

    // 2. Nothing new.
    let (journal, report) = timed_publish(root, &ns, &[]);
    assert_eq!(report["summary"]["bytes_uploaded"], 0);
    let (checked, report) = timed_publish(root, &ns, &["--no-journal"]);
    assert_eq!(report["summary"]["bytes_uploaded"], 0);
    println!(
        "no-change re-publish of {IMAGES}: {:.3}s from the journal, {:.3}s asking the registry (0 bytes uploaded)",
        journal.as_secs_f64(),
        checked.as_secs_f64()
    );

    // 3. Many small images, all present.
    let small = env_usize("STAGEX_BENCH_SMALL", 500);
    if small == 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let registry = Registry::start().expect("registry");
    let ns = format!("{}/stagex", registry.host());
    release(root, &ns, small, 1024);
    let (first, _) = timed_publish(root, &ns, &[]);
    let (journal, report) = timed_publish(root, &ns, &[]);
    assert_eq!(report["summary"]["bytes_uploaded"], 0);
    let (checked, report) = timed_publish(root, &ns, &["--no-journal"]);
    assert_eq!(report["summary"]["bytes_uploaded"], 0);
    println!(
        "{small} small images: first publish {:.2}s; re-publish all present {:.3}s from the journal, {:.3}s asking the registry",
        first.as_secs_f64(),
        journal.as_secs_f64(),
        checked.as_secs_f64()
    );
}
