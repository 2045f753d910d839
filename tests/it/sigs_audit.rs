//! `stagex sigs audit` finds each planted defect of a fixture tree (gap and
//! what hides behind it, zero-byte file, duplicate signer, unknown key,
//! legacy format, under quorum; over nginx also a soft 404 and a 403) and
//! reports a clean tree as clean, on a directory and over http; `--compare`
//! names the files that differ between two lookasides.
use crate::peers;
use crate::sign_support;
use crate::sigs_support;

use std::path::Path;
use std::process::{Command, Output};

use peers::nginx::Nginx;
use serde_json::Value;
use sign_support::{json, key, write_keys};
use sigs_support::*;
use stagex::oci::digest::Digest;

fn audit(root: &Path, lookaside: &str, extra: &[&str]) -> Output {
    let mut c = peers::tools::stagex();
    c.env_remove("STAGEX_CA_FILE")
        .arg("--json")
        .arg("--root")
        .arg(root)
        .args(["sigs", "audit", lookaside, "--threshold", "2"])
        .arg("--keys")
        .arg(root.join("keys"));
    c.args(extra);
    c.output().unwrap()
}

fn digest(name: &str) -> Digest {
    Digest::of_bytes(name.as_bytes())
}

/// (image name, file, code) of every finding.
fn findings(report: &Value) -> Vec<(String, Option<String>, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["image"].as_str().unwrap().to_string(),
                f["file"].as_str().map(str::to_string),
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(
    found: &[(String, Option<String>, String)],
    image: &str,
    file: Option<&str>,
    code: &str,
) -> bool {
    found.iter().any(|(i, f, c)| {
        i.starts_with(&format!("stagex/{image}@")) && f.as_deref() == file && c == code
    })
}

/// A tree where every image is signed by both trusted maintainers.
fn clean_tree(
    root: &Path,
    m1: &sequoia_openpgp::Cert,
    m2: &sequoia_openpgp::Cert,
    images: &[&str],
) {
    for name in images {
        let d = digest(name);
        let identity = format!("stagex/{name}:1");
        place(
            root,
            &format!("stagex/{name}"),
            &d,
            1,
            &signature(m1, &identity, &d),
        );
        place(
            root,
            &format!("stagex/{name}"),
            &d,
            2,
            &signature(m2, &identity, &d),
        );
    }
}

#[test]
fn audit_finds_every_planted_defect_and_passes_a_clean_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (m1, m2, outsider) = (key("m1"), key("m2"), key("outsider"));
    write_keys(&root.join("keys"), &[&m1, &m2]);
    let sig = |cert, name: &str| signature(cert, &format!("stagex/{name}:1"), &digest(name));
    let tree = root.join("tree");
    let repo = |name: &str| format!("stagex/{name}");
    // Clean images, including the ones nginx will misbehave for.
    clean_tree(&tree, &m1, &m2, &["core-ok", "core-soft", "core-forbidden"]);
    // gap: 1 and 3, no 2.
    place(
        &tree,
        &repo("core-gap"),
        &digest("core-gap"),
        1,
        &sig(&m1, "core-gap"),
    );
    place(
        &tree,
        &repo("core-gap"),
        &digest("core-gap"),
        3,
        &sig(&m2, "core-gap"),
    );
    // zero-byte file.
    place(
        &tree,
        &repo("core-zero"),
        &digest("core-zero"),
        1,
        &sig(&m1, "core-zero"),
    );
    place(&tree, &repo("core-zero"), &digest("core-zero"), 2, b"");
    place(
        &tree,
        &repo("core-zero"),
        &digest("core-zero"),
        3,
        &sig(&m2, "core-zero"),
    );
    // duplicate signer: m1 twice.
    place(
        &tree,
        &repo("core-dup"),
        &digest("core-dup"),
        1,
        &sig(&m1, "core-dup"),
    );
    place(
        &tree,
        &repo("core-dup"),
        &digest("core-dup"),
        2,
        &sig(&m1, "core-dup"),
    );
    place(
        &tree,
        &repo("core-dup"),
        &digest("core-dup"),
        3,
        &sig(&m2, "core-dup"),
    );
    // unknown key.
    place(
        &tree,
        &repo("core-unknown"),
        &digest("core-unknown"),
        1,
        &sig(&m1, "core-unknown"),
    );
    place(
        &tree,
        &repo("core-unknown"),
        &digest("core-unknown"),
        2,
        &sig(&outsider, "core-unknown"),
    );
    place(
        &tree,
        &repo("core-unknown"),
        &digest("core-unknown"),
        3,
        &sig(&m2, "core-unknown"),
    );
    // oversized (5 MiB).
    place(
        &tree,
        &repo("core-big"),
        &digest("core-big"),
        1,
        &sig(&m1, "core-big"),
    );
    place(
        &tree,
        &repo("core-big"),
        &digest("core-big"),
        2,
        &vec![0x90; 5 << 20],
    );
    place(
        &tree,
        &repo("core-big"),
        &digest("core-big"),
        3,
        &sig(&m2, "core-big"),
    );
    // legacy format (and so under the quorum of 2).
    let d = digest("core-legacy");
    place(
        &tree,
        &repo("core-legacy"),
        &d,
        1,
        &legacy_signature(&m1, "stagex/core-legacy", &d),
    );
    place(&tree, &repo("core-legacy"), &d, 2, &sig(&m2, "core-legacy"));

    // On the directory (images found by walking it).
    let out = audit(root, tree.to_str().unwrap(), &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["images"], 9, "{report}");
    let found = findings(&report);
    assert!(
        has(&found, "core-gap", Some("signature-3"), "gap"),
        "{found:?}"
    );
    let gap = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "gap")
        .unwrap();
    let m2_fpr = m2.fingerprint().to_hex();
    assert!(
        gap["detail"].as_str().unwrap().contains(&m2_fpr),
        "what hides behind the gap must be said: {gap}"
    );
    assert!(has(&found, "core-gap", None, "under-quorum"), "{found:?}");
    assert!(
        has(&found, "core-zero", Some("signature-2"), "empty"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-dup", None, "duplicate-signer"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-unknown", Some("signature-2"), "unknown-key"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-legacy", Some("signature-1"), "legacy-format"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-legacy", None, "under-quorum"),
        "{found:?}"
    );
    for clean in ["core-ok", "core-soft", "core-forbidden"] {
        assert!(
            !found
                .iter()
                .any(|(i, _, _)| i.starts_with(&format!("stagex/{clean}@"))),
            "{clean} is clean: {found:?}"
        );
    }
    assert_eq!(report["clean"], 3);

    // Over http, with a soft 404 and a 403 planted by nginx.
    std::fs::write(tree.join("index.html"), "<html>home</html>").unwrap();
    let Some(nginx) = Nginx::start(
        &tree,
        false,
        "location ~ \"^/stagex/core-soft@\" { error_page 404 =200 /index.html; } \
         location ~ \"^/stagex/core-forbidden@\" { return 403; }",
    ) else {
        return;
    };
    let digests = root.join("core.txt");
    let names = [
        "core-ok",
        "core-soft",
        "core-forbidden",
        "core-gap",
        "core-zero",
        "core-dup",
        "core-unknown",
        "core-legacy",
    ];
    std::fs::write(
        &digests,
        names
            .iter()
            .map(|n| format!("{} {n}\n", digest(n).hex()))
            .collect::<String>(),
    )
    .unwrap();
    let out = audit(
        root,
        &nginx.url(),
        &["--digests", digests.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let found = findings(&json(&out));
    assert!(
        has(&found, "core-soft", Some("signature-3"), "soft-404"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-forbidden", Some("signature-1"), "http-status"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-gap", Some("signature-3"), "gap"),
        "probed: {found:?}"
    );
    assert!(
        has(&found, "core-zero", Some("signature-2"), "empty"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-unknown", Some("signature-2"), "unknown-key"),
        "{found:?}"
    );
    assert!(
        !found
            .iter()
            .any(|(i, _, _)| i.starts_with("stagex/core-ok@")),
        "{found:?}"
    );

    // A clean tree is clean, on disk and over http.
    let clean = root.join("clean");
    clean_tree(&clean, &m1, &m2, &["core-a", "core-b"]);
    let out = audit(root, clean.to_str().unwrap(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = json(&out);
    assert_eq!(
        (report["images"].clone(), report["clean"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(report["valid"], 4);
    let Some(clean_http) = Nginx::start(&clean, false, "") else {
        return;
    };
    let clean_digests = root.join("clean.txt");
    std::fs::write(
        &clean_digests,
        format!(
            "{} core-a\n{} core-b\n",
            digest("core-a").hex(),
            digest("core-b").hex()
        ),
    )
    .unwrap();
    let out = audit(
        root,
        &clean_http.url(),
        &["--digests", clean_digests.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn compare_names_the_files_that_differ() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (m1, m2) = (key("m1"), key("m2"));
    write_keys(&root.join("keys"), &[&m1, &m2]);
    let (a, b) = (root.join("a"), root.join("b"));
    clean_tree(&a, &m1, &m2, &["core-x", "core-y"]);
    peers::tools::copy_dir(&a, &b);
    let audit_compare = |root: &Path| {
        audit(
            root,
            a.to_str().unwrap(),
            &["--compare", b.to_str().unwrap()],
        )
    };
    let out = audit_compare(root);
    assert!(
        out.status.success(),
        "identical trees: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let y = digest("core-y");
    place(
        &b,
        "stagex/core-y",
        &y,
        2,
        &signature(&m2, "stagex/core-y:1", &y),
    ); // re-signed: other bytes
    std::fs::remove_file(image_dir(&b, "stagex/core-x", &digest("core-x")).join("signature-2"))
        .unwrap();
    let out = audit_compare(root);
    assert_eq!(out.status.code(), Some(1));
    let found = findings(&json(&out));
    assert!(
        has(&found, "core-y", Some("signature-2"), "differs"),
        "{found:?}"
    );
    assert!(
        has(&found, "core-x", Some("signature-2"), "missing-in-compare"),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
    // Human output names the codes too.
    let human = Command::new(env!("CARGO_BIN_EXE_stagex"))
        .arg("--root")
        .arg(root)
        .args([
            "sigs",
            "audit",
            a.to_str().unwrap(),
            "--threshold",
            "2",
            "--compare",
            b.to_str().unwrap(),
        ])
        .arg("--keys")
        .arg(root.join("keys"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(
        stdout.contains("differs") && stdout.contains("2 finding(s)"),
        "{stdout}"
    );
}
