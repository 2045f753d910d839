//! `stagex sigs sync` options: a directory source is walked for its images;
//! destination files are never replaced or deleted without `--prune`, which
//! then removes what the source does not validly serve and renumbers the
//! rest (on a directory and over WebDAV: DELETE + MOVE); legacy-format
//! signatures are rejected (exit 3) unless `--allow-legacy`; `--registry`
//! lists a real registry's namespace down to per-platform digests.
use crate::peers;
use crate::sign_support;
use crate::sigs_support;

use std::path::Path;
use std::process::{Command, Output};

use peers::nginx::Nginx;
use peers::registry::Registry;
use peers::tools::{require, run_ok, text};
use sign_support::{json, key, make_image, write_keys, Shape};
use sigs_support::*;
use stagex::oci::digest::Digest;

fn sync(root: &Path, from: &str, to: &str, extra: &[&str]) -> Output {
    let mut c = peers::tools::stagex();
    c.env_remove("STAGEX_CA_FILE")
        .arg("--json")
        .arg("--root")
        .arg(root)
        .args(["sigs", "sync", "--from", from, "--to", to, "--full"])
        .arg("--keys")
        .arg(root.join("keys"));
    c.args(extra);
    c.output().unwrap()
}

/// `root/keys` trusting m1, and the source `root/src` holding m1's valid
/// signature-1 of `stagex/core-a` at digest `a`: (a, that signature, src).
fn signed_source(root: &Path) -> (Digest, Vec<u8>, std::path::PathBuf) {
    let m1 = key("m1");
    write_keys(&root.join("keys"), &[&m1]);
    let a = Digest::of_bytes(b"a");
    let src = root.join("src");
    let valid = signature(&m1, "stagex/core-a:1", &a);
    place(&src, "stagex/core-a", &a, 1, &valid);
    (a, valid, src)
}

fn read(root: &Path, repo: &str, d: &Digest, n: u32) -> Vec<u8> {
    std::fs::read(image_dir(root, repo, d).join(format!("signature-{n}"))).unwrap()
}

#[test]
fn directory_sync_never_replaces_prunes_on_request_and_gates_legacy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (m1, m2) = (key("m1"), key("m2"));
    write_keys(&root.join("keys"), &[&m1, &m2]);
    let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
    let src = root.join("src");
    let valid_a = signature(&m1, "stagex/core-a:1", &a);
    let legacy_a = legacy_signature(&m1, "stagex/core-a", &a);
    let valid_b = signature(&m2, "stagex/core-b:1", &b);
    place(&src, "stagex/core-a", &a, 1, &valid_a);
    place(&src, "stagex/core-a", &a, 2, &legacy_a);
    place(&src, "stagex/core-b", &b, 1, &valid_b);
    let dest = root.join("dest");
    let other_a = signature(&m2, "stagex/core-a:1", &a);
    place(&dest, "stagex/core-a", &a, 1, b"junk");
    place(&dest, "stagex/core-a", &a, 2, &other_a);

    // Without --prune: nothing replaced or removed, the new one appended,
    // the legacy one rejected => exit 3.
    let from = format!("file://{}", src.display());
    let out = sync(root, &from, dest.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["images"], 2, "walked: {report}");
    assert_eq!(report["rejected"][0]["code"], "legacy-format");
    assert_eq!(report["uploaded"].as_array().unwrap().len(), 2);
    assert_eq!(read(&dest, "stagex/core-a", &a, 1), b"junk");
    assert_eq!(read(&dest, "stagex/core-a", &a, 2), other_a);
    assert_eq!(read(&dest, "stagex/core-a", &a, 3), valid_a);
    assert_eq!(read(&dest, "stagex/core-b", &b, 1), valid_b);

    // --prune --allow-legacy: exactly the source's valid files, contiguous.
    let out = sync(
        root,
        &from,
        dest.to_str().unwrap(),
        &["--prune", "--allow-legacy"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["pruned"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(
        names(&dest, "stagex/core-a", &a),
        ["signature-1", "signature-2"]
    );
    assert_eq!(read(&dest, "stagex/core-a", &a, 1), valid_a);
    assert_eq!(read(&dest, "stagex/core-a", &a, 2), legacy_a);

    // An image the source serves nothing for is never emptied by --prune
    // (a wrong base URL answers 404 everywhere).
    let z = Digest::of_bytes(b"z");
    place(&dest, "stagex/core-z", &z, 1, b"kept");
    let digests = root.join("z.txt");
    std::fs::write(&digests, format!("{} core-z\n", z.hex())).unwrap();
    let out = sync(
        root,
        &from,
        dest.to_str().unwrap(),
        &["--prune", "--digests", digests.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read(&dest, "stagex/core-z", &z, 1), b"kept");
}

/// `--prune` after an upload into a gap: the destination holds
/// signature-1 and signature-3 (a gap hides the second), the upload lands
/// at signature-2 and makes signature-3 visible, so the prune must list
/// again and judge it too (a listing made before the upload misses it).
#[test]
fn prune_after_an_upload_into_a_gap_judges_the_files_it_uncovered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a, valid, src) = signed_source(root);
    let dest = root.join("dest");
    place(&dest, "stagex/core-a", &a, 1, b"junk-1");
    place(&dest, "stagex/core-a", &a, 3, b"junk-3");
    let from = format!("file://{}", src.display());
    let out = sync(root, &from, dest.to_str().unwrap(), &["--prune"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["uploaded"][0]["file"], "signature-2", "{report}");
    let pruned: Vec<&str> = report["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(pruned, ["signature-1", "signature-3"], "{report}");
    assert_eq!(names(&dest, "stagex/core-a", &a), ["signature-1"]);
    assert_eq!(read(&dest, "stagex/core-a", &a, 1), valid);
}

#[test]
fn webdav_prune_deletes_and_renumbers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a, valid, src) = signed_source(root);
    let dav_root = root.join("dav");
    place(&dav_root, "stagex/core-a", &a, 1, b"junk");
    let Some(dav) = Nginx::start_webdav(&dav_root, false, "mirror", "pw") else {
        return;
    };
    let to = dav.url().replace("://", "://mirror:pw@");
    let out = sync(root, src.to_str().unwrap(), &to, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read(&dav_root, "stagex/core-a", &a, 1), b"junk");
    assert_eq!(read(&dav_root, "stagex/core-a", &a, 2), valid);
    let before = dav.access_log().len();
    let out = sync(root, src.to_str().unwrap(), &to, &["--prune"]);
    assert!(out.status.success(), "{}\n{}", text(&out), dav.logs());
    assert_eq!(names(&dav_root, "stagex/core-a", &a), ["signature-1"]);
    assert_eq!(read(&dav_root, "stagex/core-a", &a, 1), valid);
    assert!(!text(&out).contains("pw@"), "password leaked");
    // The destination is listed once (nothing new was uploaded, so the
    // upload's listing is current and feeds the prune): one GET of each
    // file, down to the closing 404.
    let log = dav.access_log()[before..].to_string();
    for n in 1..=3 {
        let gets = log
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&format!("/signature-{n} ")))
            .count();
        assert_eq!(gets, 1, "signature-{n}:\n{log}");
    }
}

#[test]
fn registry_namespace_gives_per_platform_digests() {
    let Some(tools) = require(&["skopeo"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let m1 = key("m1");
    write_keys(&root.join("keys"), &[&m1]);
    let out_dir = root.join("out");
    let plain = make_image(&out_dir, "core-p", "1.0", Shape::Manifest, "p");
    let indexed = make_image(&out_dir, "core-i", "2.0", Shape::Index, "i");
    for (name, tag) in [("core-p", "1.0"), ("core-i", "2.0")] {
        run_ok(
            Command::new(&tools[0])
                .args(["copy", "--all", "--dest-tls-verify=false"])
                .arg(format!(
                    "oci:{}{}",
                    out_dir.join(name).display(),
                    if name == "core-p" { ":1.0" } else { "" }
                ))
                .arg(format!("docker://{}/stagex/{name}:{tag}", registry.host())),
        );
    }
    let src = root.join("src");
    place(
        &src,
        "stagex/core-p",
        &plain,
        1,
        &signature(&m1, "stagex/core-p:1.0", &plain),
    );
    place(
        &src,
        "stagex/core-i",
        &indexed,
        1,
        &signature(&m1, "stagex/core-i:2.0", &indexed),
    );
    let ns = format!("{}/stagex", registry.host());
    let dest = root.join("dest");
    let out = sync(
        root,
        src.to_str().unwrap(),
        dest.to_str().unwrap(),
        &["--registry", &ns],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["images"], 2, "{report}");
    assert_eq!(report["uploaded"].as_array().unwrap().len(), 2);
    assert_eq!(names(&dest, "stagex/core-i", &indexed), ["signature-1"]);
}

#[test]
fn progress_shows_on_a_terminal_and_not_in_a_pipe() {
    let Some(script) = require(&["script"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let m1 = key("m1");
    write_keys(&root.join("keys"), &[&m1]);
    let src = root.join("src");
    for name in ["core-a", "core-b", "core-c"] {
        let d = Digest::of_bytes(name.as_bytes());
        let sig = signature(&m1, &format!("stagex/{name}:1"), &d);
        place(&src, &format!("stagex/{name}"), &d, 1, &sig);
    }
    let args = |to: &str| {
        format!(
            "{} --root {} sigs sync --from {} --to {} --keys {} --full",
            env!("CARGO_BIN_EXE_stagex"),
            root.display(),
            src.display(),
            root.join(to).display(),
            root.join("keys").display()
        )
    };
    let piped = run_ok(Command::new("sh").args(["-c", &args("piped")]));
    assert!(piped.stderr.is_empty(), "{}", text(&piped));
    assert!(String::from_utf8_lossy(&piped.stdout).contains("3 new"));
    let on_tty = run_ok(
        Command::new(&script[0])
            .args(["-qec", &args("tty"), "/dev/null"])
            .env("TERM", "xterm"),
    );
    let screen = String::from_utf8_lossy(&on_tty.stdout);
    assert!(screen.contains("/3 images"), "no progress bar:\n{screen}");
}
