//! `stagex sign` and `stagex verify` end to end on a file:// lookaside:
//! quorum by distinct keys, every rejection reason, gaps, subkeys, both
//! layout shapes, and two signers racing on one tree.
use crate::peers;
use crate::sign_support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use peers::tools::stagex_output as stagex;
use sign_support::*;
use stagex::lookaside::file::FileLookaside;
use stagex::oci::digest::Digest;

fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "stagex failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn signer_count(report: &serde_json::Value) -> usize {
    report["valid_signers"].as_u64().unwrap() as usize
}

#[test]
fn two_maintainers_meet_the_quorum_on_every_layout_shape() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = root.join("out");
    let a = make_image(&out, "core-a", "1.0", Shape::Index, "a");
    let b = make_image(&out, "core-b", "2.0", Shape::Manifest, "b");
    let c = make_image(&out, "core-c", "ignored", Shape::Bare, "c");
    std::fs::create_dir_all(root.join("packages/core/c")).unwrap();
    std::fs::write(
        root.join("packages/core/c/package.toml"),
        "[package]\nname = \"c\"\nversion = \"3.0\"\n",
    )
    .unwrap();
    let (k1, k2) = (key("alice"), key("bob"));
    write_keys(&root.join("keys"), &[&k1, &k2]);
    std::fs::write(root.join("keys/README.md"), "# keys/\nNot a key.\n").unwrap();
    let s1 = write_secret(root, "alice", &k1);
    let s2 = write_secret(root, "bob", &k2);

    let first = ok(stagex(
        root,
        &["sign", "--unreleased", "--key", s1.to_str().unwrap()],
    ));
    let text = String::from_utf8_lossy(&first.stdout);
    assert_eq!(text.matches("signed ").count(), 3, "{text}");
    // Verify misses the quorum with one signer.
    let one = stagex(root, &["--json", "verify"]);
    assert!(!one.status.success());
    assert!(json(&one)
        .as_array()
        .unwrap()
        .iter()
        .all(|r| signer_count(r) == 1));

    ok(stagex(
        root,
        &[
            "sign",
            "--unreleased",
            "--key",
            s2.to_str().unwrap(),
            "core-a",
            "core-b",
            "core-c",
        ],
    ));
    let again = ok(stagex(
        root,
        &[
            "sign",
            "--unreleased",
            "--key",
            s1.to_str().unwrap(),
            "core-a",
        ],
    ));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already signed"));

    let report = json(&ok(stagex(root, &["--json", "verify"])));
    let reports = report.as_array().unwrap();
    assert_eq!(reports.len(), 3);
    let expect = [
        ("core-a", &a, "1.0"),
        ("core-b", &b, "2.0"),
        ("core-c", &c, "3.0"),
    ];
    for (r, (name, digest, version)) in reports.iter().zip(expect) {
        assert_eq!(r["image"], name);
        assert_eq!(r["digest"], digest.to_string());
        assert_eq!(r["reference"], format!("docker.io/stagex/{name}:{version}"));
        assert_eq!(signer_count(r), 2, "{r}");
        assert_eq!(r["quorum"], true);
        assert!(r["invalid"].as_array().unwrap().is_empty(), "{r}");
        let dir = root.join(format!("signatures/stagex/{name}@sha256={}", digest.hex()));
        assert!(dir.join("signature-1").is_file() && dir.join("signature-2").is_file());
        assert!(!dir.join("signature-3").exists());
    }
    // A quorum of three is not met by two keys.
    let three = stagex(root, &["verify", "--threshold", "3"]);
    assert!(!three.status.success());
    assert!(String::from_utf8_lossy(&three.stderr).contains("miss the quorum"));
    // The human table names the signers.
    let table =
        String::from_utf8_lossy(&ok(stagex(root, &["verify", "core-a"])).stdout).to_string();
    assert!(
        table.contains("alice@example.org") && table.contains("bob@example.org"),
        "{table}"
    );
}

#[test]
fn every_bad_signature_is_rejected_with_its_own_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-x", "1.0", Shape::Index, "x");
    let identity = "stagex/core-x:1.0";
    let good = key("good");
    let other = key("other");
    let stranger = key("stranger");
    let expired = aged_key(
        "expired",
        Duration::from_secs(10 * 86400),
        Duration::from_secs(86400),
    );
    let (revoked, revocation) = key_with_revocation("revoked");
    let revoked_sig = sign_raw(&revoked, &payload(identity, &digest), None, false, false);
    let revoked_public = revoked.clone().insert_packets([revocation]).unwrap().0;
    write_keys(
        &root.join("keys"),
        &[&good, &other, &expired, &revoked_public],
    );

    let p = payload(identity, &digest);
    let mut flipped = sign_raw(&other, &p, None, false, false);
    let at = flipped.windows(6).position(|w| w == b"atomic").unwrap();
    flipped[at] ^= 0x01;
    let other_digest = Digest::of_bytes(b"another manifest");
    let extra = String::from_utf8(p.clone())
        .unwrap()
        .replace(r#""type":"#, r#""extra":1,"type":"#);
    let fractional = String::from_utf8(p.clone())
        .unwrap()
        .replace("1700000000", "1700000000.5");
    // Made 8 days ago, after the key expired (9 days ago): invalid.
    let long_ago = SystemTime::now() - Duration::from_secs(8 * 86400);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("valid", sign_raw(&good, &p, None, false, false)),
        ("bad-signature", flipped),
        ("armored", sign_raw(&other, &p, None, true, false)),
        ("detached", sign_raw(&other, &p, None, false, true)),
        (
            "digest-mismatch",
            sign_raw(
                &other,
                &payload(identity, &other_digest),
                None,
                false,
                false,
            ),
        ),
        (
            "identity-mismatch",
            sign_raw(
                &other,
                &payload("stagex/core-y:1.0", &digest),
                None,
                false,
                false,
            ),
        ),
        (
            "payload",
            sign_raw(&other, extra.as_bytes(), None, false, false),
        ),
        (
            "payload",
            sign_raw(&other, fractional.as_bytes(), None, false, false),
        ),
        ("unknown-key", sign_raw(&stranger, &p, None, false, false)),
        (
            "key-expired",
            sign_raw(&expired, &p, Some(long_ago), false, false),
        ),
        ("key-revoked", revoked_sig),
        ("valid-again", sign_raw(&good, &p, None, false, false)),
    ];
    let store = FileLookaside::new(root.join("signatures"));
    for (_, blob) in &files {
        store.add("stagex/core-x", &digest, blob).unwrap();
    }
    let output = stagex(root, &["--json", "verify", "core-x"]);
    assert!(
        !output.status.success(),
        "one key twice must not meet a quorum of 2"
    );
    let report = &json(&output)[0];
    assert_eq!(signer_count(report), 1, "{report}");
    assert_eq!(
        report["signers"][0]["fingerprint"],
        good.fingerprint().to_hex()
    );
    assert_eq!(
        report["signers"][0]["files"],
        serde_json::json!(["signature-1", format!("signature-{}", files.len())])
    );
    let invalid = report["invalid"].as_array().unwrap();
    let expected: Vec<(String, String)> = files
        .iter()
        .enumerate()
        .filter(|(_, (code, _))| !code.starts_with("valid"))
        .map(|(i, (code, _))| (format!("signature-{}", i + 1), code.to_string()))
        .collect();
    let got: Vec<(String, String)> = invalid
        .iter()
        .map(|i| {
            (
                i["file"].as_str().unwrap().to_string(),
                i["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected, "{report:#}");
    // Reasons are distinct, readable sentences.
    let reasons: std::collections::BTreeSet<&str> = invalid
        .iter()
        .map(|i| i["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), invalid.len(), "{reasons:#?}");

    // A second trusted key meets the quorum.
    store
        .add(
            "stagex/core-x",
            &digest,
            &sign_raw(&other, &p, None, false, false),
        )
        .unwrap();
    ok(stagex(root, &["verify", "core-x"]));
}

#[test]
fn a_gap_hides_later_files_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-g", "1.0", Shape::Manifest, "g");
    let (k1, k2) = (key("one"), key("two"));
    write_keys(&root.join("keys"), &[&k1, &k2]);
    let p = payload("stagex/core-g:1.0", &digest);
    let sigdir = root.join(format!("signatures/stagex/core-g@sha256={}", digest.hex()));
    std::fs::create_dir_all(&sigdir).unwrap();
    std::fs::write(
        sigdir.join("signature-1"),
        sign_raw(&k1, &p, None, false, false),
    )
    .unwrap();
    std::fs::write(
        sigdir.join("signature-3"),
        sign_raw(&k2, &p, None, false, false),
    )
    .unwrap();
    let output = stagex(root, &["--json", "verify", "core-g"]);
    assert!(!output.status.success());
    let report = &json(&output)[0];
    assert_eq!(signer_count(report), 1);
    assert_eq!(report["hidden"], serde_json::json!(["signature-3"]));
    let table = String::from_utf8_lossy(&stagex(root, &["verify", "core-g"]).stdout).to_string();
    assert!(table.contains("signature-3: after a gap"), "{table}");
}

#[test]
fn a_subkey_signature_counts_for_its_primary_and_image_refs_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-s", "1.0", Shape::Manifest, "s");
    let cert = subkey_signer("sub");
    write_keys(&root.join("keys"), &[&cert]);
    let secret = write_secret(root, "sub", &cert);
    ok(stagex(
        root,
        &[
            "sign",
            "--unreleased",
            "--key",
            secret.to_str().unwrap(),
            "core-s",
        ],
    ));
    let by_ref = format!("docker.io/stagex/core-s@sha256:{}", digest.hex());
    let report = json(&ok(stagex(
        root,
        &["--json", "verify", "--threshold", "1", &by_ref],
    )));
    assert_eq!(
        report[0]["signers"][0]["fingerprint"],
        cert.fingerprint().to_hex()
    );
    // Another repository's reference does not match the signed identity.
    let wrong = format!("stagex/core-t@sha256:{}", digest.hex());
    let lookaside = root.join("signatures");
    let sigdir = lookaside.join(format!("stagex/core-t@sha256={}", digest.hex()));
    std::fs::create_dir_all(&sigdir).unwrap();
    std::fs::copy(
        lookaside.join(format!("stagex/core-s@sha256={}/signature-1", digest.hex())),
        sigdir.join("signature-1"),
    )
    .unwrap();
    let mismatch = stagex(root, &["--json", "verify", "--threshold", "1", &wrong]);
    assert!(!mismatch.status.success());
    assert_eq!(
        json(&mismatch)[0]["invalid"][0]["code"],
        "identity-mismatch"
    );
}

#[test]
fn concurrent_signers_both_keep_their_files_and_numbering_stays_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let packages: Vec<String> = (0..12).map(|i| format!("core-p{i:02}")).collect();
    for p in &packages {
        make_image(&root.join("out"), p, "1.0", Shape::Index, p);
    }
    let (k1, k2) = (key("racer1"), key("racer2"));
    write_keys(&root.join("keys"), &[&k1, &k2]);
    let s1 = write_secret(root, "r1", &k1);
    let s2 = write_secret(root, "r2", &k2);
    for round in 0..4 {
        let sigs = root.join(format!("sigs-{round}"));
        let spawn = |key: &Path| {
            peers::tools::stagex()
                .arg("--root")
                .arg(root)
                .args(["sign", "--unreleased", "--key"])
                .arg(key)
                .arg("--signatures")
                .arg(&sigs)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn(&s1), spawn(&s2));
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        for entry in walkdir::WalkDir::new(&sigs).min_depth(2).max_depth(2) {
            let entry = entry.unwrap();
            let mut names: Vec<String> = std::fs::read_dir(entry.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(
                names,
                ["signature-1", "signature-2"],
                "round {round}: {}",
                entry.path().display()
            );
        }
        let report = json(&ok(stagex(
            root,
            &["--json", "verify", "--lookaside", sigs.to_str().unwrap()],
        )));
        assert_eq!(report.as_array().unwrap().len(), packages.len());
        assert!(report
            .as_array()
            .unwrap()
            .iter()
            .all(|r| signer_count(r) == 2));
    }
}

#[test]
fn a_protected_key_file_needs_its_passphrase() {
    use sequoia_openpgp::cert::prelude::*;
    use sequoia_openpgp::types::KeyFlags;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_image(&root.join("out"), "core-p", "1.0", Shape::Manifest, "p");
    let (cert, _) = CertBuilder::new()
        .add_userid("locked <locked@example.org>")
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .set_password(Some("s3cret".into()))
        .generate()
        .unwrap();
    write_keys(&root.join("keys"), &[&cert]);
    let secret = write_secret(root, "locked", &cert);
    let sign = |passphrase: Option<&str>| {
        let mut c = peers::tools::stagex();
        c.arg("--root")
            .arg(root)
            .args(["sign", "--unreleased", "--key"])
            .arg(&secret);
        match passphrase {
            Some(p) => c.env("STAGEX_KEY_PASSPHRASE", p),
            None => c.env_remove("STAGEX_KEY_PASSPHRASE"),
        };
        c.output().unwrap()
    };
    let locked = sign(None);
    assert!(!locked.status.success());
    assert!(String::from_utf8_lossy(&locked.stderr).contains("STAGEX_KEY_PASSPHRASE"));
    assert!(!sign(Some("wrong")).status.success());
    ok(sign(Some("s3cret")));
    ok(stagex(root, &["verify", "--threshold", "1", "core-p"]));
}
