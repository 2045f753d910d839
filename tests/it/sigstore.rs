//! Owns: the guarantees of the directory signature store under crashes,
//! concurrency and damaged input, through the real `stagex` binary:
//! `kill -9` of `stagex sign` and `stagex sigs sync` at random points,
//! then a re-run, leaves no stray file anywhere in the tree and valid
//! signatures; concurrent signers with one key leave one signature per
//! image (and different keys never share a number); more files than the
//! signature cap are reported as past the cap (a setting), not as hidden
//! behind a gap; a truncated signature is said in words; `sigs audit`
//! reports directories without a digest as findings.
use crate::peers;
use crate::publish_support;
use crate::sign_support;
use crate::sigs_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peers::tools::{json, stagex_in, text};
use publish_support::{keys_dir, make_release, Package};
use sign_support::{key, make_image, payload, sign_raw, write_keys, write_secret, Shape};
use sigs_support::{names, place, signature};

/// Every file or directory of a signature tree that is not an image's
/// `signature-N` or a directory on the way to one.
fn stray_files(tree: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(tree)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().to_string_lossy();
            if e.file_type().is_dir() {
                return name.starts_with('.');
            }
            let in_image = e
                .path()
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|p| p.to_string_lossy().contains("@sha256="));
            let numbered = name
                .strip_prefix("signature-")
                .is_some_and(|n| n.parse::<u32>().is_ok_and(|v| v.to_string() == n));
            !(in_image && numbered)
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// `signature-N` files anywhere under `tree`.
fn signature_count(tree: &Path) -> usize {
    walkdir::WalkDir::new(tree)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("signature-"))
        .count()
}

/// Kills `child` (SIGKILL) once `tree` holds at least `target` signature
/// files, polling the tree; returns false when the child ended first.
fn kill_when(child: &mut Child, tree: &Path, target: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if signature_count(tree) >= target {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "the run never wrote {target} signatures"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A release of `count` images in `root/out` with digests/, and the key
/// `name` trusted in keys/ (its secret key file returned).
fn release(root: &Path, count: usize, names: &[&str]) -> (Vec<Package>, Vec<PathBuf>) {
    let packages = make_release(root, "core", count, 64, 7);
    let certs: Vec<_> = names.iter().map(|n| key(n)).collect();
    write_keys(&keys_dir(root), &certs.iter().collect::<Vec<_>>());
    let secrets = names
        .iter()
        .zip(&certs)
        .map(|(n, c)| write_secret(root, n, c))
        .collect();
    (packages, secrets)
}

fn sign(root: &Path, secret: &Path) -> Command {
    let mut c = stagex_in(root, &["sign", "--identity", "stagex", "--key"]);
    c.arg(secret).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// The signature files of every package, by image.
fn signature_names(tree: &Path, packages: &[Package]) -> Vec<Vec<String>> {
    packages
        .iter()
        .map(|p| names(tree, &format!("stagex/{}", p.name), &p.manifest))
        .collect()
}

fn verify_all(root: &Path, threshold: &str) {
    let out = stagex_in(root, &["verify", "--threshold", threshold])
        .output()
        .unwrap();
    assert!(out.status.success(), "stagex verify: {}", text(&out));
}

#[test]
fn kill_9_during_sign_then_a_rerun_leaves_no_stray_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, secrets) = release(root, 40, &["alice"]);
    let tree = root.join("signatures");
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut killed = 0;
    let mut target = 0;
    for _ in 0..5 {
        target += rng.usize(1..=7);
        let mut child = sign(root, &secrets[0]).spawn().unwrap();
        killed += usize::from(kill_when(&mut child, &tree, target));
    }
    assert!(
        killed >= 3,
        "too few runs were killed mid-way (seed {seed})"
    );
    let out = sign(root, &secrets[0]).output().unwrap();
    assert!(out.status.success(), "the re-run: {}", text(&out));
    assert_eq!(stray_files(&tree), Vec::<PathBuf>::new(), "seed {seed}");
    for (p, files) in packages.iter().zip(signature_names(&tree, &packages)) {
        assert_eq!(files, ["signature-1"], "{} (seed {seed})", p.name);
    }
    verify_all(root, "1");
}

#[test]
fn kill_9_during_sigs_sync_then_a_rerun_leaves_no_stray_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, secrets) = release(root, 60, &["alice", "bob"]);
    for secret in &secrets {
        let out = sign(root, secret).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let (from, to) = (root.join("signatures"), root.join("mirror"));
    let sync = || {
        let mut c = stagex_in(root, &["sigs", "sync", "--full", "--concurrency", "4"]);
        c.arg("--from")
            .arg(&from)
            .arg("--to")
            .arg(&to)
            .arg("--keys")
            .arg(keys_dir(root))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut killed, mut target) = (0, 0);
    for _ in 0..5 {
        target += rng.usize(1..=20);
        let mut child = sync().spawn().unwrap();
        killed += usize::from(kill_when(&mut child, &to, target));
    }
    assert!(killed >= 1, "no run was killed mid-way (seed {seed})");
    let out = sync().output().unwrap();
    assert!(out.status.success(), "the re-run: {}", text(&out));
    assert_eq!(stray_files(&to), Vec::<PathBuf>::new(), "seed {seed}");
    assert_eq!(stray_files(&from), Vec::<PathBuf>::new());
    for p in &packages {
        let repo = format!("stagex/{}", p.name);
        let mut ours = read_all(&to, &repo, p);
        let mut theirs = read_all(&from, &repo, p);
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{} (seed {seed})", p.name);
    }
    verify_all_in(root, &to);
}

/// The bytes of every signature of one image.
fn read_all(tree: &Path, repo: &str, p: &Package) -> Vec<Vec<u8>> {
    let dir = sigs_support::image_dir(tree, repo, &p.manifest);
    names(tree, repo, &p.manifest)
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect()
}

fn verify_all_in(root: &Path, lookaside: &Path) {
    let out = stagex_in(root, &["verify", "--threshold", "2", "--lookaside"])
        .arg(lookaside)
        .output()
        .unwrap();
    assert!(out.status.success(), "stagex verify: {}", text(&out));
}

#[test]
fn concurrent_signers_leave_one_signature_per_key_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, secrets) = release(root, 30, &["alice", "bob"]);
    // Four signers with alice's key and two with bob's, all at once.
    let children: Vec<Child> = [0, 1, 0, 0, 1, 0]
        .iter()
        .map(|&k| sign(root, &secrets[k]).spawn().unwrap())
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let tree = root.join("signatures");
    for (p, files) in packages.iter().zip(signature_names(&tree, &packages)) {
        assert_eq!(files, ["signature-1", "signature-2"], "{}", p.name);
    }
    assert_eq!(stray_files(&tree), Vec::<PathBuf>::new());
    // Two files per image and two distinct signers: one file per key.
    verify_all(root, "2");
}

#[test]
fn files_past_the_cap_are_reported_as_such_and_the_cap_is_a_setting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-c", "1.0", Shape::Manifest, "c");
    let k = key("k");
    write_keys(&root.join("keys"), &[&k]);
    let blob = sign_raw(
        &k,
        &payload("stagex/core-c:1.0", &digest),
        None,
        false,
        false,
    );
    let tree = root.join("signatures");
    for n in 1..=130 {
        place(&tree, "stagex/core-c", &digest, n, &blob);
    }
    let verify = |cap: Option<&str>| {
        let mut c = stagex_in(root, &["verify", "--threshold", "1", "core-c"]);
        if let Some(cap) = cap {
            c.env("STAGEX_MAX_SIGNATURES", cap);
        }
        c.output().unwrap()
    };
    let out = verify(None);
    let table = text(&out);
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains("signature-129: the cap of 128 signatures per image was reached"),
        "{table}"
    );
    assert!(!table.contains("gap"), "there is no gap: {table}");
    let report = json(
        &stagex_in(root, &["--json", "verify", "--threshold", "1", "core-c"])
            .output()
            .unwrap(),
    );
    assert_eq!(report[0]["capped"], true, "{report:#}");
    let raised = text(&verify(Some("200")));
    assert!(
        raised.contains("signature-130]") && !raised.contains("ignored"),
        "every file read under a higher cap: {raised}"
    );
    let bad = verify(Some("many"));
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("STAGEX_MAX_SIGNATURES=\"many\""),
        "{}",
        text(&bad)
    );
}

/// `blob`'s first `keep` packets (one-pass signature, literal data: a
/// signature cut before its signature packet).
fn first_packets(blob: &[u8], keep: usize) -> Vec<u8> {
    use sequoia_openpgp::parse::Parse;
    use sequoia_openpgp::serialize::Serialize;
    let pile = sequoia_openpgp::PacketPile::from_bytes(blob).unwrap();
    let mut out = Vec::new();
    for packet in pile.into_children().take(keep) {
        packet.serialize(&mut out).unwrap();
    }
    out
}

#[test]
fn damaged_material_is_said_in_words_and_audited_as_findings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (k1, k2) = (key("one"), key("two"));
    write_keys(&root.join("keys"), &[&k1, &k2]);
    let tree = root.join("lookaside");
    let digest = stagex::oci::digest::Digest::of_bytes(b"core-a");
    let identity = "stagex/core-a:1";
    place(
        &tree,
        "stagex/core-a",
        &digest,
        1,
        &signature(&k1, identity, &digest),
    );
    let truncated = first_packets(&signature(&k2, identity, &digest), 2);
    place(&tree, "stagex/core-a", &digest, 2, &truncated);
    place(&tree, "stagex/core-a", &digest, 3, b"");
    for damaged in ["build.log@sha256=", "stagex/core-busybox@sha256="] {
        std::fs::create_dir_all(tree.join(damaged)).unwrap();
        std::fs::write(tree.join(damaged).join("signature-1"), b"x").unwrap();
    }
    let out = stagex_in(root, &["--json", "sigs", "audit", "--threshold", "1"])
        .arg(&tree)
        .arg("--keys")
        .arg(root.join("keys"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "findings fail the audit");
    let report = json(&out);
    let findings = report["findings"].as_array().unwrap();
    let find = |code: &str, file: &str| {
        findings
            .iter()
            .find(|f| f["code"] == code && f["file"].as_str().unwrap_or("-") == file)
            .unwrap_or_else(|| panic!("no {code} finding for {file}: {report:#}"))
    };
    assert_eq!(
        find("malformed", "signature-2")["detail"],
        "truncated: no signature after the signed data"
    );
    find("empty", "signature-3");
    let bad: Vec<&str> = findings
        .iter()
        .filter(|f| f["code"] == "bad-directory")
        .map(|f| f["image"].as_str().unwrap())
        .collect();
    assert_eq!(bad.len(), 2, "{report:#}");
    assert!(
        bad.iter().any(|i| i.ends_with("/build.log@sha256=")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|i| i.ends_with("stagex/core-busybox@sha256=")),
        "{bad:?}"
    );
    assert_eq!(report["counts"]["bad-directory"], 2);
}
