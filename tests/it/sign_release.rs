//! The release flows around signatures: reproduce before sign (`stagex
//! sign` signs an out/ image only when its digest is the committed one),
//! and whole-release verification from the digests alone (`stagex verify
//! --digests`, 1000 images, with a missing, a forged and a duplicate-signer
//! entry), with the containers-policy identity rules.
use crate::peers;
use crate::sign_support;

use std::path::Path;

use peers::tools::stagex_output as stagex;
use sign_support::*;
use stagex::lookaside::file::FileLookaside;
use stagex::oci::digest::Digest;

fn sig_dir(root: &Path, name: &str, digest: &Digest) -> std::path::PathBuf {
    root.join(format!("signatures/stagex/{name}@sha256={}", digest.hex()))
}

#[test]
fn sign_signs_only_images_whose_digest_is_the_committed_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = root.join("out");
    let a = make_image(&out, "core-a", "1.0", Shape::Manifest, "a");
    let b = make_image(&out, "core-b", "1.0", Shape::Manifest, "b");
    let c = make_image(&out, "core-c", "1.0", Shape::Manifest, "c");
    let committed_b = Digest::of_bytes(b"what the release committed for b");
    std::fs::create_dir_all(root.join("digests")).unwrap();
    std::fs::write(
        root.join("digests/core.txt"),
        format!("{} core-a\n{} core-b\n", a.hex(), committed_b.hex()),
    )
    .unwrap();
    let k = key("maintainer");
    write_keys(&root.join("keys"), &[&k]);
    let secret = write_secret(root, "maintainer", &k);
    let secret = secret.to_str().unwrap();

    let refused = stagex(root, &["--json", "sign", "--key", secret]);
    assert!(!refused.status.success(), "refusals make the run fail");
    let lines = json(&refused);
    let status: Vec<(&str, &str)> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["image"].as_str().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [
            ("core-a", "signed"),
            ("core-b", "not-reproduced"),
            ("core-c", "not-in-digests")
        ]
    );
    let why_b = lines[1]["error"].as_str().unwrap();
    assert!(
        why_b.contains(&b.to_string())
            && why_b.contains(&committed_b.to_string())
            && why_b.contains("core.txt:2"),
        "{why_b}"
    );
    assert!(sig_dir(root, "core-a", &a).join("signature-1").is_file());
    assert!(!sig_dir(root, "core-b", &b).exists() && !sig_dir(root, "core-c", &c).exists());
    let human = stagex(root, &["sign", "--key", secret]);
    let text = String::from_utf8_lossy(&human.stderr).to_string();
    assert!(
        text.contains("NOT SIGNED") && text.contains("--unreleased"),
        "{text}"
    );
    // Each refusal is counted and its fix named apart: rebuild for the
    // mismatch, the digests files for the image they do not list.
    assert!(
        text.contains("1 of 3 image(s) not signed: their out/ digest is not the committed one")
            && text.contains("rebuild to reproduce it"),
        "{text}"
    );
    let missing = text
        .lines()
        .find(|l| l.contains("not listed in the digests files"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        missing.contains("1 of 3")
            && missing.contains(&root.join("digests").display().to_string())
            && missing.contains("stagex digests")
            && !missing.contains("rebuild"),
        "{missing}"
    );
    assert!(String::from_utf8_lossy(&human.stdout).contains("already signed"));

    // --unreleased signs what was built, and says so.
    let unreleased = stagex(
        root,
        &["sign", "--unreleased", "--key", secret, "core-b", "core-c"],
    );
    assert!(unreleased.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&unreleased.stdout),
        String::from_utf8_lossy(&unreleased.stderr)
    );
    assert!(
        said.contains("NOT checked against the committed digests"),
        "{said}"
    );
    assert_eq!(
        said.matches("(unreleased: not checked against digests/)")
            .count(),
        2,
        "{said}"
    );
    assert!(sig_dir(root, "core-b", &b).join("signature-1").is_file());
    // sign.sh's rule: this primary already signed, nothing is added.
    let again = stagex(root, &["sign", "--unreleased", "--key", secret, "core-b"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already signed"));
    assert!(!sig_dir(root, "core-b", &b).join("signature-2").exists());
    // No digests at all: the fix is named.
    std::fs::remove_dir_all(root.join("digests")).unwrap();
    let none = stagex(root, &["sign", "--key", secret]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("--unreleased"));
}

#[test]
fn verify_digests_checks_a_whole_release_without_out() {
    const IMAGES: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (k1, k2) = (key("one"), key("two"));
    write_keys(&root.join("keys"), &[&k1, &k2]);
    let store = FileLookaside::new(root.join("signatures"));
    let (missing, forged, duplicate) = (17, 420, 999);
    let mut stage_a = String::new();
    let mut stage_b = String::new();
    for i in 0..IMAGES {
        let name = format!("core-i{i:04}");
        let digest = Digest::of_bytes(name.as_bytes());
        let p = payload(&format!("stagex/{name}:1.0"), &digest);
        let repo = format!("stagex/{name}");
        store
            .add(&repo, &digest, &sign_raw(&k1, &p, None, false, false))
            .unwrap();
        if i == forged {
            let mut blob = sign_raw(&k2, &p, None, false, false);
            let at = blob.windows(6).position(|w| w == b"atomic").unwrap();
            blob[at] ^= 0x01;
            store.add(&repo, &digest, &blob).unwrap();
        } else if i == duplicate {
            store
                .add(&repo, &digest, &sign_raw(&k1, &p, None, false, false))
                .unwrap();
        } else if i != missing {
            store
                .add(&repo, &digest, &sign_raw(&k2, &p, None, false, false))
                .unwrap();
        }
        let line = format!("{} {name}\n", digest.hex());
        if i % 2 == 0 {
            stage_a += &line
        } else {
            stage_b += &line
        }
    }
    let digests = root.join("digests");
    std::fs::create_dir_all(&digests).unwrap();
    std::fs::write(digests.join("a.txt"), stage_a).unwrap();
    std::fs::write(digests.join("b.txt"), stage_b).unwrap();
    assert!(!root.join("out").exists());

    let output = stagex(
        root,
        &["--json", "verify", "--digests", digests.to_str().unwrap()],
    );
    assert!(!output.status.success(), "three images miss the quorum");
    let report = json(&output);
    let summary = &report["summary"];
    assert_eq!(summary["images"], IMAGES);
    assert_eq!(summary["quorum_met"], IMAGES - 3);
    assert_eq!(summary["quorum_missed"], 3);
    assert_eq!(
        summary["invalid_by_reason"],
        serde_json::json!({"bad-signature": 1})
    );
    assert_eq!(summary["duplicate_signatures"], 1);
    assert_eq!(
        summary["images_by_signer_count"],
        serde_json::json!({"1": 3, "2": IMAGES - 3})
    );
    assert_eq!(
        summary["images_per_signer"][k1.fingerprint().to_hex()],
        IMAGES
    );
    assert_eq!(
        summary["images_per_signer"][k2.fingerprint().to_hex()],
        IMAGES - 3
    );
    let failing: Vec<(String, usize)> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["quorum"] == false)
        .map(|r| {
            (
                r["image"].as_str().unwrap().to_string(),
                r["signers"][0]["files"].as_array().unwrap().len(),
            )
        })
        .collect();
    let mut expected = vec![
        (format!("core-i{missing:04}"), 1),
        (format!("core-i{forged:04}"), 1),
        (format!("core-i{duplicate:04}"), 2),
    ];
    expected.sort();
    let mut failing_sorted = failing.clone();
    failing_sorted.sort();
    assert_eq!(failing_sorted, expected);

    // The human summary, and one file instead of the directory.
    let human = stagex(
        root,
        &[
            "verify",
            "--digests",
            digests.join("b.txt").to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&human.stdout).to_string();
    assert!(
        text.contains("500 image(s): 498 meet the quorum, 2 miss it"),
        "{text}"
    );
    assert!(text.contains("invalid signatures: none"), "{text}");
    assert!(
        text.contains(&format!("core-i{duplicate:04}")) && !text.contains("core-i0001 "),
        "{text}"
    );
}

#[test]
fn identity_rules_match_repo_digest_or_exact_repository_and_remap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let k = key("rules");
    write_keys(&root.join("keys"), &[&k]);
    let digest = Digest::of_bytes(b"rules image");
    std::fs::write(root.join("d.txt"), format!("{} core-r\n", digest.hex())).unwrap();
    let store = FileLookaside::new(root.join("signatures"));
    // Signed for docker.io; verified as a mirror's image.
    store
        .add(
            "stagex/core-r",
            &digest,
            &sign_raw(
                &k,
                &payload("docker.io/stagex/core-r:1.0", &digest),
                None,
                false,
                false,
            ),
        )
        .unwrap();
    let digests = root.join("d.txt");
    let run = |more: &[&str]| {
        let mut args = vec!["--json", "verify", "--threshold", "1", "--digests"];
        args.push(digests.to_str().unwrap());
        args.extend_from_slice(more);
        stagex(root, &args)
    };
    assert!(
        run(&[]).status.success(),
        "by digest: any tag of the repository"
    );
    let mirror = run(&["--identity", "quay.io/stagex"]);
    assert!(!mirror.status.success());
    assert_eq!(
        json(&mirror)["images"][0]["invalid"][0]["code"],
        "identity-mismatch"
    );
    let remapped = run(&[
        "--identity",
        "quay.io/stagex",
        "--signed-identity",
        "remapIdentity",
        "--prefix",
        "quay.io/stagex",
        "--signed-prefix",
        "docker.io/stagex",
    ]);
    assert!(
        remapped.status.success(),
        "{}",
        String::from_utf8_lossy(&remapped.stdout)
    );
    let repo = run(&["--signed-identity", "matchRepository"]);
    assert!(repo.status.success());
    let half = run(&[
        "--signed-identity",
        "remapIdentity",
        "--prefix",
        "quay.io/stagex",
    ]);
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("--signed-prefix"));
}

#[test]
fn a_warm_signature_cache_gives_the_same_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (k1, k2) = (key("cached1"), key("cached2"));
    write_keys(&root.join("keys"), &[&k1, &k2]);
    let store = FileLookaside::new(root.join("signatures"));
    let mut lines = String::new();
    for i in 0..20 {
        let name = format!("core-c{i:02}");
        let digest = Digest::of_bytes(name.as_bytes());
        let p = payload(&format!("stagex/{name}:1.0"), &digest);
        store
            .add(
                &format!("stagex/{name}"),
                &digest,
                &sign_raw(&k1, &p, None, false, false),
            )
            .unwrap();
        lines += &format!("{} {name}\n", digest.hex());
    }
    std::fs::write(root.join("d.txt"), lines).unwrap();
    let cache = root.join("cache/signature-cache");
    let run = || {
        let output = peers::tools::stagex()
            .arg("--root")
            .arg(root)
            .args(["--json", "verify", "--threshold", "1", "--digests"])
            .arg(root.join("d.txt"))
            .env("STAGEX_SIGNATURE_CACHE", &cache)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        json(&output)["summary"].clone()
    };
    let cold = run();
    let size = std::fs::metadata(&cache).unwrap().len();
    assert!(size > 0 && size % 32 == 0, "cache file of {size} bytes");
    assert_eq!(run(), cold);
    // A forged file next to the cached good ones is still caught.
    let digest = Digest::of_bytes(b"core-c00");
    let mut forged = sign_raw(
        &k2,
        &payload("stagex/core-c00:1.0", &digest),
        None,
        false,
        false,
    );
    let at = forged.windows(6).position(|w| w == b"atomic").unwrap();
    forged[at] ^= 0x01;
    store.add("stagex/core-c00", &digest, &forged).unwrap();
    assert_eq!(
        run()["invalid_by_reason"],
        serde_json::json!({"bad-signature": 1})
    );
}
