//! Signatures as StageX maintainers make them, checked with real gpg keys:
//! RSA-4096 primary-key and signing-subkey signatures (gpg and sq) counted
//! once per primary; expiry and revocation judged at the signature's time
//! (keys made, extended and revoked in the past with gpg's
//! `--faked-system-time`); legacy StageX payloads.
use crate::peers;
use crate::sign_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

use peers::gpg::GpgHome;
use peers::tools::{require, run_ok};
use sign_support::*;
use stagex::lookaside::file::FileLookaside;
use stagex::oci::digest::Digest;
use stagex::sign::verify::date;

/// 2020-09-13: keys in these tests are born then.
pub(crate) const T0: u64 = 1_600_000_000;
pub(crate) const DAY: u64 = 86_400;
pub(crate) const YEAR: u64 = 365 * DAY;

/// `stagex --json verify --threshold 1 --digests <root>/digests.txt`, with `more` flags.
pub(crate) fn verify(root: &Path, more: &[&str]) -> Output {
    verify_threshold(root, 1, more)
}

/// The same with another threshold.
pub(crate) fn verify_threshold(root: &Path, threshold: usize, more: &[&str]) -> Output {
    peers::tools::stagex()
        .arg("--root")
        .arg(root)
        .args([
            "--json",
            "verify",
            "--threshold",
            &threshold.to_string(),
            "--digests",
        ])
        .arg(root.join("digests.txt"))
        .args(more)
        .output()
        .unwrap()
}

/// A release of one image `core-x` whose signature files are `blobs`.
pub(crate) fn release(root: &Path, digest: &Digest, blobs: &[&[u8]]) {
    std::fs::write(
        root.join("digests.txt"),
        format!("{} core-x\n", digest.hex()),
    )
    .unwrap();
    let store = FileLookaside::new(root.join("signatures"));
    for blob in blobs {
        store.add("stagex/core-x", digest, blob).unwrap();
    }
}

/// The (file, code, reason) of every invalid entry of the only image.
pub(crate) fn invalid(output: &Output) -> Vec<(String, String, String)> {
    json(output)["images"][0]["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["file"].as_str().unwrap().to_string(),
                i["code"].as_str().unwrap().to_string(),
                i["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub(crate) fn signer_files(output: &Output) -> Vec<(String, usize)> {
    json(output)["images"][0]["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["fingerprint"].as_str().unwrap().to_string(),
                s["files"].as_array().unwrap().len(),
            )
        })
        .collect()
}

fn write_cert(root: &Path, name: &str, cert: &[u8]) {
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::write(root.join("keys").join(format!("{name}.pgp")), cert).unwrap();
}

fn at(secs: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn rsa4096_primary_and_subkey_signatures_by_gpg_and_sq_count_once_per_primary() {
    let Some(tools) = require(&["gpg", "sq"]) else {
        return;
    };
    let sq = &tools[1];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = Digest::of_bytes(b"rsa image");
    let p = payload("stagex/core-x:1.0", &digest);
    // A primary that signs, and a primary that only certifies with a
    // signing subkey (the smartcard layout), both RSA-4096.
    let primary = GpgHome::generate("primary", "rsa4096", "sign", "never", None).unwrap();
    let carded = GpgHome::generate("carded", "rsa4096", "cert", "never", None).unwrap();
    carded.add_subkey("rsa4096", "sign", "never", None);
    write_cert(root, "primary", &primary.export());
    write_cert(root, "carded", &carded.export());
    let secret = root.join("carded.key");
    std::fs::write(&secret, carded.export_secret()).unwrap();
    std::fs::write(root.join("payload.json"), &p).unwrap();
    let by_sq = root.join("by-sq.sig");
    run_ok(
        Command::new(sq)
            .args(["sign", "--binary", "--signer-key"])
            .arg(&secret)
            .arg("--output")
            .arg(&by_sq)
            .arg(root.join("payload.json")),
    );
    let by_sq = std::fs::read(&by_sq).unwrap();
    release(
        root,
        &digest,
        &[
            &primary.sign(&p),
            &carded.sign(&p),
            &by_sq,
            &primary.sign(&p),
        ],
    );
    let output = verify_threshold(root, 2, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected = vec![
        (primary.fingerprint.clone(), 2),
        (carded.fingerprint.clone(), 2),
    ];
    expected.sort();
    assert_eq!(signer_files(&output), expected);
    assert!(invalid(&output).is_empty());
    // Three distinct maintainers are not there.
    assert!(!verify_threshold(root, 3, &[]).status.success());
}

#[test]
fn expiry_is_judged_at_the_signature_time_with_both_dates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(key) = GpgHome::generate("lapsed", "ed25519", "sign", "1y", Some(T0)) else {
        return;
    };
    let digest = Digest::of_bytes(b"expiry image");
    let p = payload("stagex/core-x:1.0", &digest);
    let stale = key.export();
    let before = key.sign_at(&p, Some(T0 + 30 * DAY));
    // The maintainer extends the lapsed key two years in, then signs.
    key.set_expire("3y", Some(T0 + 2 * YEAR));
    let after_at = T0 + 2 * YEAR + DAY;
    let after = key.sign_at(&p, Some(after_at));
    release(root, &digest, &[&before, &after]);

    // keys/ holds the copy from before the extension.
    write_cert(root, "lapsed", &stale);
    let output = verify(root, &[]);
    assert!(output.status.success(), "the early signature still counts");
    assert_eq!(signer_files(&output), [(key.fingerprint.clone(), 1)]);
    let bad = invalid(&output);
    assert_eq!(bad.len(), 1, "{bad:?}");
    let (file, code, reason) = &bad[0];
    assert_eq!(
        (file.as_str(), code.as_str()),
        ("signature-2", "key-expired")
    );
    assert!(
        reason.contains(&date(at(after_at))) && reason.contains(&date(at(T0 + YEAR))),
        "both dates in {reason}"
    );

    // The refreshed certificate: both count, though the key has expired
    // again by now (T0 + 5y is in the past).
    write_cert(root, "lapsed", &key.export());
    let output = verify(root, &[]);
    assert!(output.status.success());
    assert!(invalid(&output).is_empty(), "{:?}", invalid(&output));
    assert_eq!(signer_files(&output), [(key.fingerprint.clone(), 2)]);
}

#[test]
fn hard_revocation_voids_every_signature_soft_only_later_ones() {
    for (code, hard) in [(3u8, false), (1u8, true), (0u8, true)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let Some(key) = GpgHome::generate("revoked", "ed25519", "sign", "never", Some(T0)) else {
            return;
        };
        let digest = Digest::of_bytes(b"revocation image");
        let p = payload("stagex/core-x:1.0", &digest);
        let early = key.sign_at(&p, Some(T0 + DAY));
        let late_at = T0 + 100 * DAY;
        let late = key.sign_at(&p, Some(late_at));
        key.revoke(code, Some(T0 + 50 * DAY));
        write_cert(root, "revoked", &key.export());
        release(root, &digest, &[&early, &late]);
        let output = verify(root, &[]);
        let bad = invalid(&output);
        if hard {
            assert!(!output.status.success());
            let codes: Vec<&str> = bad.iter().map(|b| b.1.as_str()).collect();
            assert_eq!(
                codes,
                ["key-revoked", "key-revoked"],
                "reason {code}: {bad:?}"
            );
            assert!(bad[0].2.contains(&date(at(T0 + 50 * DAY))), "{bad:?}");
        } else {
            assert!(
                output.status.success(),
                "a retired key's earlier signature counts"
            );
            assert_eq!(signer_files(&output), [(key.fingerprint.clone(), 1)]);
            assert_eq!(bad.len(), 1, "{bad:?}");
            assert_eq!(
                (bad[0].0.as_str(), bad[0].1.as_str()),
                ("signature-2", "key-revoked-soft")
            );
            assert!(
                bad[0].2.contains(&date(at(late_at)))
                    && bad[0].2.contains(&date(at(T0 + 50 * DAY))),
                "{bad:?}"
            );
        }
    }
}

#[test]
fn legacy_stagex_payloads_count_only_with_allow_legacy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(key) = GpgHome::with_key("legacy") else {
        return;
    };
    let digest = Digest::of_bytes(b"legacy image");
    let legacy = |repository: &str, hex: &str| {
        format!(
            r#"[{{"critical":{{"identity":{{"docker-reference":"{repository}"}},"image":{{"docker-manifest-digest":"{hex}"}},"type":"pgp container image signature"}},"optional":null}}]"#
        )
        .into_bytes()
    };
    let good = key.sign(&legacy("stagex/core-x", digest.hex()));
    let other_repo = key.sign(&legacy("stagex/core-y", digest.hex()));
    let prefixed = key.sign(&legacy("stagex/core-x", &digest.to_string()));
    write_cert(root, "legacy", &key.export());
    release(root, &digest, &[&good, &other_repo, &prefixed]);

    let strict = verify(root, &[]);
    assert!(
        !strict.status.success(),
        "legacy signatures are never counted silently"
    );
    let codes: Vec<String> = invalid(&strict).into_iter().map(|i| i.1).collect();
    assert_eq!(codes, ["legacy-format", "identity-mismatch", "payload"]);

    let allowed = verify(root, &["--allow-legacy"]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
    assert_eq!(signer_files(&allowed), [(key.fingerprint.clone(), 1)]);
    let codes: Vec<String> = invalid(&allowed).into_iter().map(|i| i.1).collect();
    assert_eq!(codes, ["identity-mismatch", "payload"]);
}

#[test]
fn a_tampered_rsa4096_signature_is_rejected_with_its_reason_and_good_ones_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(key) = GpgHome::generate("rsa", "rsa4096", "sign", "never", None) else {
        return;
    };
    let digest = Digest::of_bytes(b"tampered rsa image");
    let p = payload("stagex/core-x:1.0", &digest);
    let good = key.sign(&p);
    // Uncompressed, the last byte of the message is the low byte of the
    // RSA value `s`.
    std::fs::write(root.join("payload.json"), &p).unwrap();
    let mut forged = run_ok(
        key.cmd()
            .args(["--batch", "--compress-algo", "none", "--sign", "--no-armor"])
            .args(["--local-user", &key.fingerprint, "--output", "-"])
            .arg(root.join("payload.json")),
    )
    .stdout;
    *forged.last_mut().unwrap() ^= 0x01;
    release(root, &digest, &[&good, &forged]);
    write_cert(root, "rsa", &key.export());
    let cache = root.join("signature-cache");
    let run = || {
        let output = peers::tools::stagex()
            .env("STAGEX_SIGNATURE_CACHE", &cache)
            .arg("--root")
            .arg(root)
            .args(["--json", "verify", "--threshold", "1", "--digests"])
            .arg(root.join("digests.txt"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(signer_files(&output), [(key.fingerprint.clone(), 1)]);
        let bad = invalid(&output);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(
            (bad[0].0.as_str(), bad[0].1.as_str()),
            ("signature-2", "bad-signature"),
            "{bad:?}"
        );
        assert!(bad[0].2.contains("bad signature"), "{}", bad[0].2);
    };
    // Cold: the RSA pass verified the good signature for sequoia; its entry
    // is kept (beside those of the key's self-signatures; a failure is
    // never cached).
    run();
    let mut keyring = stagex::sign::keyring::Keyring::default();
    keyring.add_bytes(&key.export(), Path::new("rsa")).unwrap();
    let entry = stagex::sign::preverify::verified_entries(&keyring, &[&good[..]])
        .pop()
        .unwrap();
    let stored = std::fs::read(&cache).unwrap();
    assert!(
        stored.chunks(32).any(|c| c == entry),
        "{} bytes",
        stored.len()
    );
    // Warm: the same verdicts from the cache file, which stays as it is.
    run();
    assert_eq!(std::fs::read(&cache).unwrap(), stored);
}
