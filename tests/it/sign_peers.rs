//! Interoperability of our signatures with the real peers: skopeo (pull
//! with a `signedBy` policy from a real docker-registry, signatures served
//! by nginx over http and https; standalone-verify; `copy --sign-by`), gpg
//! (`--verify`, gpgv, `--sign --no-armor`, and our `--gpg` signer), and
//! mirror failures (soft 404, other HTTP statuses).
use crate::peers;
use crate::sign_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peers::gpg::GpgHome;
use peers::nginx::Nginx;
use peers::registry::Registry;
use peers::tools::{require, run_ok, stagex_in, text};
use sign_support::*;
use stagex::oci::digest::Digest;

/// `stagex --json verify --threshold 1 --lookaside LOOKASIDE IMAGES...`.
fn verify_one_signer(root: &Path, lookaside: &str, images: &[&str]) -> Command {
    let mut c = stagex_in(
        root,
        &[
            "--json",
            "verify",
            "--threshold",
            "1",
            "--lookaside",
            lookaside,
        ],
    );
    c.args(images);
    c
}

/// Pushes `out/<package>` (tag 1.0) to the registry unchanged; returns the
/// reference pushed and checks the registry holds our exact manifest digest.
fn push(skopeo: &Path, root: &Path, registry: &Registry, package: &str, digest: &Digest) -> String {
    let reference = skopeo_push(skopeo, root, &registry.host(), package);
    let inspect = run_ok(
        Command::new(skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    );
    assert_eq!(
        &Digest::of_bytes(&inspect.stdout),
        digest,
        "registry changed the manifest"
    );
    reference
}

/// `stagex sign --unreleased ARGS...` (the signer, then the images).
fn sign_unreleased(root: &Path, args: &[&str]) -> Output {
    let mut all = vec!["sign", "--unreleased"];
    all.extend_from_slice(args);
    stagex_in(root, &all).output().unwrap()
}

/// `stagex sign --unreleased --gpg FPR PACKAGE` through `home`'s gpg agent.
fn sign_with_gpg(root: &Path, home: &GpgHome, package: &str) -> Output {
    stagex_in(
        root,
        &["sign", "--unreleased", "--gpg", &home.fingerprint, package],
    )
    .env("GNUPGHOME", home.path())
    .env_remove("STAGEX_GPG")
    .output()
    .unwrap()
}

/// Writes `bytes` as `root/keys/NAME`, a trusted key of the project.
fn trust_key(root: &Path, name: &str, bytes: &[u8]) {
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join(name), bytes).unwrap();
}

/// The first signature file of `package` at `digest` in `root/signatures`.
fn first_signature(root: &Path, package: &str, digest: &Digest) -> PathBuf {
    root.join(format!(
        "signatures/stagex/{package}@sha256={}/signature-1",
        digest.hex()
    ))
}

/// What the skopeo tests with two maintainers start from.
struct TwoKeys {
    skopeo: PathBuf,
    registry: Registry,
    keys: [GpgHome; 2],
    dir: tempfile::TempDir,
    /// Of `out/<package>` (tag 1.0).
    digest: Digest,
}

/// skopeo, gpg and the `more` tools, a registry, two gpg keys named
/// `names`, and a work dir whose out/ holds the image `package` 1.0 salted
/// with `salt`; None (outside CI only) when a peer is missing.
fn two_keys(more: &[&str], names: [&str; 2], package: &str, salt: &str) -> Option<TwoKeys> {
    let mut wanted = vec!["skopeo", "gpg"];
    wanted.extend(more);
    let skopeo = require(&wanted)?.swap_remove(0);
    let registry = Registry::start()?;
    let keys = [GpgHome::with_key(names[0])?, GpgHome::with_key(names[1])?];
    let dir = tempfile::tempdir().unwrap();
    let digest = make_image(
        &dir.path().join("out"),
        package,
        "1.0",
        Shape::Manifest,
        salt,
    );
    Some(TwoKeys {
        skopeo,
        registry,
        keys,
        dir,
        digest,
    })
}

#[test]
fn skopeo_accepts_our_signature_served_by_nginx_over_http_and_https() {
    let Some(TwoKeys {
        skopeo,
        registry,
        keys: [maintainer, outsider],
        dir,
        digest,
    }) = two_keys(
        &["nginx", "openssl"],
        ["maintainer", "outsider"],
        "test-x",
        "x",
    )
    else {
        return;
    };
    let (skopeo, root) = (&skopeo, dir.path());
    let reference = push(skopeo, root, &registry, "test-x", &digest);

    // Our sequoia signer, with the key gpg made.
    let secret = root.join("maintainer.key");
    std::fs::write(&secret, maintainer.export_secret()).unwrap();
    let namespace = format!("{}/stagex", registry.host());
    let secret = secret.to_str().unwrap();
    let out = sign_unreleased(root, &["--key", secret, "--identity", &namespace, "test-x"]);
    assert!(out.status.success(), "{}", text(&out));
    let keyring = root.join("maintainer.gpg");
    std::fs::write(&keyring, maintainer.export()).unwrap();
    let wrong_keyring = root.join("outsider.gpg");
    std::fs::write(&wrong_keyring, outsider.export()).unwrap();
    let signatures = root.join("signatures");

    // http
    let Some(http) = Nginx::start(&signatures, false, "") else {
        return;
    };
    let pulled = skopeo_pull(skopeo, root, &keyring, &http.url(), &reference, None);
    assert!(
        pulled.status.success(),
        "skopeo rejected our signature: {}\nnginx: {}",
        text(&pulled),
        http.logs()
    );
    let refused = skopeo_pull(skopeo, root, &wrong_keyring, &http.url(), &reference, None);
    assert!(
        !refused.status.success(),
        "a policy with another key must refuse the image"
    );

    // https with a private CA
    let Some(https) = Nginx::start(&signatures, true, "") else {
        return;
    };
    let cert_dir = root.join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(https.ca.as_ref().unwrap(), cert_dir.join("ca.crt")).unwrap();
    let pulled = skopeo_pull(
        skopeo,
        root,
        &keyring,
        &https.url(),
        &reference,
        Some(&cert_dir),
    );
    assert!(
        pulled.status.success(),
        "skopeo (https lookaside): {}\nnginx: {}",
        text(&pulled),
        https.logs()
    );

    // Our verifier over https: trusts the CA only when told.
    trust_key(root, "maintainer.gpg", &maintainer.export());
    let by_ref = format!("{reference}@{digest}");
    let verified = verify_one_signer(root, &https.url(), &[&by_ref])
        .env("STAGEX_CA_FILE", https.ca.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", text(&verified));
    assert_eq!(
        json(&verified)[0]["signers"][0]["fingerprint"],
        maintainer.fingerprint
    );
    let untrusted = verify_one_signer(root, &https.url(), &[&by_ref])
        .env_remove("STAGEX_CA_FILE")
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    assert!(
        json(&untrusted)[0]["error"]
            .as_str()
            .unwrap()
            .contains("GET https://"),
        "{}",
        text(&untrusted)
    );
}

#[test]
fn gpg_and_skopeo_standalone_verify_accept_our_blob_and_our_gpg_signer_works() {
    let Some(tools) = require(&["skopeo", "gpg", "gpgv"]) else {
        return;
    };
    let (skopeo, gpgv) = (&tools[0], &tools[2]);
    let Some(maintainer) = GpgHome::with_key("signer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-k", "1.0", Shape::Index, "k");
    let digest_gpg = make_image(&root.join("out"), "core-g", "1.0", Shape::Index, "g");
    let secret = root.join("signer.key");
    std::fs::write(&secret, maintainer.export_secret()).unwrap();
    let out = sign_unreleased(root, &["--key", secret.to_str().unwrap(), "core-k"]);
    assert!(out.status.success(), "{}", text(&out));
    let sig = first_signature(root, "core-k", &digest);
    let manifest: PathBuf = root.join(format!("out/core-k/blobs/sha256/{}", digest.hex()));

    let verified = run_ok(maintainer.cmd().args(["--batch", "--verify"]).arg(&sig));
    assert!(String::from_utf8_lossy(&verified.stderr).contains("Good signature"));
    let keyring = root.join("pub.gpg");
    std::fs::write(&keyring, maintainer.export()).unwrap();
    run_ok(Command::new(gpgv).arg("--keyring").arg(&keyring).arg(&sig));
    let standalone = run_ok(
        Command::new(skopeo)
            .env("GNUPGHOME", maintainer.path())
            .arg("standalone-verify")
            .arg(&manifest)
            .arg("docker.io/stagex/core-k:1.0")
            .arg(&maintainer.fingerprint)
            .arg(&sig),
    );
    assert!(String::from_utf8_lossy(&standalone.stdout).contains(&digest.to_string()));
    // A wrong identity is refused by skopeo too.
    let wrong = Command::new(skopeo)
        .env("GNUPGHOME", maintainer.path())
        .arg("standalone-verify")
        .arg(&manifest)
        .arg("docker.io/stagex/core-other:1.0")
        .arg(&maintainer.fingerprint)
        .arg(&sig)
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    // `stagex sign --gpg` goes through gpg's agent.
    let out = sign_with_gpg(root, &maintainer, "core-g");
    assert!(out.status.success(), "{}", text(&out));
    let gsig = first_signature(root, "core-g", &digest_gpg);
    run_ok(Command::new(gpgv).arg("--keyring").arg(&keyring).arg(&gsig));
    trust_key(root, "signer.gpg", &maintainer.export());
    let report = stagex_in(
        root,
        &["--json", "verify", "--threshold", "1", "core-g", "core-k"],
    )
    .output()
    .unwrap();
    assert!(report.status.success(), "{}", text(&report));
    // Signing again with the same key through gpg is skipped.
    let again = sign_with_gpg(root, &maintainer, "core-g");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already signed"),
        "{}",
        text(&again)
    );
}

#[test]
fn signatures_made_by_skopeo_sign_by_and_gpg_sign_are_accepted() {
    let Some(TwoKeys {
        skopeo,
        registry,
        keys: [first, second],
        dir,
        digest,
    }) = two_keys(&[], ["first", "second"], "test-y", "y")
    else {
        return;
    };
    let (skopeo, root) = (&skopeo, dir.path());
    let sigs = root.join("sigs");
    let registries_d = root.join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("x.yaml"),
        format!(
            "docker:\n  {}:\n    lookaside-staging: file://{}\n",
            registry.host(),
            sigs.display()
        ),
    )
    .unwrap();
    let reference = format!("{}/stagex/test-y:1.0", registry.host());
    run_ok(
        Command::new(skopeo)
            .env("GNUPGHOME", first.path())
            .arg("--registries.d")
            .arg(&registries_d)
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--sign-by",
                &first.fingerprint,
            ])
            .arg(format!("oci:{}:1.0", root.join("out/test-y").display()))
            .arg(format!("docker://{reference}")),
    );
    let sigdir = sigs.join(format!("stagex/test-y@sha256={}", digest.hex()));
    assert!(
        sigdir.join("signature-1").is_file(),
        "skopeo wrote no signature where expected"
    );
    // The second maintainer signs the StageX way: gpg --sign --no-armor.
    let payload = payload(&reference, &digest);
    std::fs::write(sigdir.join("signature-2"), second.sign(&payload)).unwrap();

    trust_key(root, "first.gpg", &first.export());
    let armored =
        run_ok(
            second
                .cmd()
                .args(["--batch", "--armor", "--export", &second.fingerprint]),
        )
        .stdout;
    trust_key(root, "second.asc", &armored);
    let by_ref = format!("{reference}@{digest}");
    let report = stagex_in(
        root,
        &[
            "--json",
            "verify",
            "--lookaside",
            sigs.to_str().unwrap(),
            &by_ref,
        ],
    )
    .output()
    .unwrap();
    assert!(report.status.success(), "{}", text(&report));
    let report = json(&report);
    let mut fprs: Vec<String> = report[0]["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["fingerprint"].as_str().unwrap().to_string())
        .collect();
    fprs.sort();
    let mut want = vec![first.fingerprint.clone(), second.fingerprint.clone()];
    want.sort();
    assert_eq!(fprs, want);
    // By package name, with the registry namespace as identity (exact tag match).
    let namespace = format!("{}/stagex", registry.host());
    let by_name = stagex_in(
        root,
        &[
            "verify",
            "--identity",
            &namespace,
            "--lookaside",
            sigs.to_str().unwrap(),
            "test-y",
        ],
    )
    .output()
    .unwrap();
    assert!(by_name.status.success(), "{}", text(&by_name));
}

#[test]
fn a_soft_404_mirror_and_bad_statuses_are_reported() {
    let Some(_) = require(&["nginx"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-m", "1.0", Shape::Manifest, "m");
    let forbidden = make_image(
        &root.join("out"),
        "core-forbidden",
        "1.0",
        Shape::Manifest,
        "f",
    );
    let k = key("mirror");
    write_keys(&root.join("keys"), &[&k]);
    let mirror = root.join("mirror");
    let sigdir = mirror.join(format!("stagex/core-m@sha256={}", digest.hex()));
    std::fs::create_dir_all(&sigdir).unwrap();
    std::fs::write(
        sigdir.join("signature-1"),
        sign_raw(
            &k,
            &payload("stagex/core-m:1.0", &digest),
            None,
            false,
            false,
        ),
    )
    .unwrap();
    std::fs::write(
        mirror.join("soft404.html"),
        "<!DOCTYPE html><html><body>Not here</body></html>",
    )
    .unwrap();
    let Some(soft) = Nginx::start(
        &mirror,
        false,
        "error_page 404 =200 /soft404.html; location ~ forbidden { return 403; }",
    ) else {
        return;
    };
    let out = verify_one_signer(root, &soft.url(), &["core-m", "core-forbidden"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the 403 image must fail");
    let report = json(&out);
    assert_eq!(report[0]["valid_signers"], 1, "{report:#}");
    assert_eq!(report[0]["invalid"][0]["file"], "signature-2");
    assert_eq!(report[0]["invalid"][0]["code"], "soft-404");
    assert!(report[0]["invalid"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("mirror misconfiguration"));
    assert_eq!(report[1]["digest"], forbidden.to_string());
    assert!(
        report[1]["error"].as_str().unwrap().contains("HTTP 403"),
        "{report:#}"
    );
    // A correctly configured mirror: a real 404 ends the list, nothing invalid.
    let Some(good) = Nginx::start(&mirror, false, "") else {
        return;
    };
    let out = verify_one_signer(root, &good.url(), &["core-m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(json(&out)[0]["invalid"].as_array().unwrap().is_empty());
}
