//! The release gate of `stagex publish` against a real registry: one
//! signer, two files by one key, or a forged file -> the quorum is missed,
//! the error names the image and who signed, and the registry receives no
//! request at all; out/ not matching digests/*.txt stops the release the
//! same way.
use crate::peers;
use crate::publish_support;
use crate::sign_support;

use std::path::Path;

use peers::registry::Registry;
use publish_support::*;

/// Requests the registry got for repositories (not `/v2/` probes).
fn repo_requests(registry: &Registry) -> Vec<String> {
    registry
        .logs()
        .lines()
        .filter(|l| l.contains("/v2/stagex"))
        .map(str::to_string)
        .collect()
}

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    ns: String,
    packages: Vec<Package>,
    alice: sequoia_openpgp::Cert,
    bob: sequoia_openpgp::Cert,
}

/// Two packages, alice and bob trusted, alice signed everything.
fn setup() -> Option<Setup> {
    let registry = Registry::start()?;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let packages = make_release(root, "core", 2, 1000, 7);
    let (alice, bob) = (sign_support::key("alice"), sign_support::key("bob"));
    sign_support::write_keys(&keys_dir(root), &[&alice, &bob]);
    let ns = format!("{}/stagex", registry.host());
    sign_all(
        root,
        &sign_support::write_secret(root, "alice", &alice),
        &ns,
    );
    Some(Setup {
        registry,
        dir,
        ns,
        packages,
        alice,
        bob,
    })
}

fn sig_dir(root: &Path, p: &Package) -> std::path::PathBuf {
    root.join(format!(
        "signatures/stagex/{}@sha256={}",
        p.name,
        p.manifest.hex()
    ))
}

fn refused(s: &Setup, wants: &[&str]) {
    let out = publish(s.dir.path(), &s.ns, &["--registry", &s.ns])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "the gate let it through: {all}");
    for want in wants {
        assert!(all.contains(want), "{want:?} missing from: {all}");
    }
    assert!(all.contains("nothing was pushed"), "{all}");
    assert_eq!(repo_requests(&s.registry), Vec::<String>::new());
}

#[test]
fn one_signer_is_not_a_quorum_and_the_error_says_who_signed() {
    let Some(s) = setup() else { return };
    let alice_fpr = s.alice.fingerprint().to_hex();
    // --json: the short images as data.
    let out = publish(s.dir.path(), &s.ns, &["--registry", &s.ns])
        .output()
        .unwrap();
    let short = json(&out)["short"].clone();
    assert_eq!(short.as_array().unwrap().len(), 2, "{short:#}");
    assert_eq!(short[0]["valid_signers"], 1);
    assert!(short[0]["signed_by"][0]
        .as_str()
        .unwrap()
        .starts_with(&alice_fpr));
    refused(
        &s,
        &[
            "2 of 2 image manifest(s) miss the quorum of 2",
            &s.packages[0].name,
            &s.packages[1].name,
            &format!("1/2 signer(s), signed by {alice_fpr}"),
        ],
    );
}

#[test]
fn two_files_by_one_key_count_once() {
    let Some(s) = setup() else { return };
    let root = s.dir.path();
    for p in &s.packages {
        let dir = sig_dir(root, p);
        std::fs::copy(dir.join("signature-1"), dir.join("signature-2")).unwrap();
    }
    refused(&s, &["1/2 signer(s)"]);
}

#[test]
fn a_forged_file_does_not_count() {
    let Some(s) = setup() else { return };
    let root = s.dir.path();
    let mallory = sign_support::key("mallory");
    let ns = s.ns.clone();
    for p in &s.packages {
        let payload = sign_support::payload(&format!("{ns}/{}:{}", p.name, p.version), &p.manifest);
        // One by a key nobody trusts, one claiming to be bob but garbage.
        let dir = sig_dir(root, p);
        std::fs::write(
            dir.join("signature-2"),
            sign_support::sign_raw(&mallory, &payload, None, false, false),
        )
        .unwrap();
        let mut forged = sign_support::sign_raw(&s.bob, &payload, None, false, false);
        let n = forged.len();
        forged[n - 5] ^= 0xff;
        std::fs::write(dir.join("signature-3"), forged).unwrap();
    }
    refused(
        &s,
        &[
            "1/2 signer(s)",
            "rejected signature-2",
            "rejected signature-3",
        ],
    );
}

#[test]
fn out_not_matching_the_digests_stops_everything() {
    let Some(s) = setup() else { return };
    let root = s.dir.path();
    // bob signs too: the quorum would be met.
    sign_all(
        root,
        &sign_support::write_secret(root, "bob", &s.bob),
        &s.ns,
    );
    // A rebuild changed one image; the committed digests still list the old one.
    let old = s.packages[1].manifest.clone();
    std::fs::remove_dir_all(root.join("out").join(&s.packages[1].name)).unwrap();
    make_package(&root.join("out"), &s.packages[1].name, "1.1", 1000, 99);
    let out = publish(root, &s.ns, &["--registry", &s.ns])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("out/ does not match digests/*.txt"), "{all}");
    assert!(
        all.contains(&s.packages[1].name) && all.contains(old.hex()),
        "{all}"
    );
    assert!(all.contains("nothing was pushed"), "{all}");
    // A listed image missing from out/ too.
    std::fs::remove_dir_all(root.join("out").join(&s.packages[0].name)).unwrap();
    let out = publish(root, &s.ns, &["--registry", &s.ns])
        .output()
        .unwrap();
    assert!(text(&out).contains(&s.packages[0].name), "{}", text(&out));
    assert_eq!(repo_requests(&s.registry), Vec::<String>::new());

    // With both signers and a matching out/, the same command publishes.
    write_digests(
        root,
        "core",
        &[make_package(&root.join("out"), "core-p9", "9.0", 1000, 5)],
    );
    for name in ["alice", "bob"] {
        sign_all(root, &root.join(format!("{name}.key")), &s.ns);
    }
    let out = publish(root, &s.ns, &["--registry", &s.ns])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["summary"]["tags_pushed"], 3);
}
