//! `stagex policy`: the policy.json and registries.d files it writes make
//! the real skopeo accept a signed image pulled from a real registry (a
//! mirror namespace, through remapIdentity, signatures over HTTP) and
//! reject an unsigned one.
use crate::peers;
use crate::sign_support;

use std::process::Command;

use peers::gpg::GpgHome;
use peers::http_server::HttpServer;
use peers::registry::Registry;
use peers::tools::require;
use sign_support::*;

#[test]
fn skopeo_with_the_generated_policy_accepts_signed_and_rejects_unsigned() {
    let Some(tools) = require(&["skopeo", "gpg", "python3"]) else {
        return;
    };
    let skopeo = &tools[0];
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(maintainer) = GpgHome::with_key("maintainer") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_image(
        &root.join("out"),
        "test-signed",
        "1.0",
        Shape::Manifest,
        "s",
    );
    make_image(
        &root.join("out"),
        "test-unsigned",
        "1.0",
        Shape::Manifest,
        "u",
    );
    let signed = skopeo_push(skopeo, root, &registry.host(), "test-signed");
    let unsigned = skopeo_push(skopeo, root, &registry.host(), "test-unsigned");

    // Signed as StageX does: identity docker.io/stagex/..., the image then
    // served from another registry (the mirror case).
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::write(root.join("keys/maintainer.pgp"), maintainer.export()).unwrap();
    let secret = root.join("maintainer.key");
    std::fs::write(&secret, maintainer.export_secret()).unwrap();
    let sign = peers::tools::stagex()
        .arg("--root")
        .arg(root)
        .args(["sign", "--unreleased", "--key"])
        .arg(&secret)
        .arg("test-signed")
        .output()
        .unwrap();
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );
    let server = HttpServer::start(&root.join("signatures")).unwrap();

    let policy_dir = root.join("policy");
    let namespace = format!("{}/stagex", registry.host());
    let written = peers::tools::stagex()
        .arg("--root")
        .arg(root)
        .args(["policy", "--out"])
        .arg(&policy_dir)
        .args([
            "--registry",
            &namespace,
            "--lookaside",
            server.url("").trim_end_matches('/'),
        ])
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let said = String::from_utf8_lossy(&written.stdout).to_string();
    assert!(
        said.contains("\"any one of these keys\"") && said.contains("stagex verify"),
        "{said}"
    );
    assert!(said.contains("expired NOW"), "{said}");
    assert!(
        said.contains(&format!(
            "identity remapped {namespace} -> docker.io/stagex"
        )),
        "{said}"
    );

    let pull = |reference: &str| {
        let dest = tempfile::tempdir().unwrap();
        Command::new(skopeo)
            .arg("--policy")
            .arg(policy_dir.join("policy.json"))
            .arg("--registries.d")
            .arg(policy_dir.join("registries.d"))
            .args(["copy", "--src-tls-verify=false", "--remove-signatures"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:x", dest.path().join("img").display()))
            .output()
            .unwrap()
    };
    let accepted = pull(&signed);
    assert!(
        accepted.status.success(),
        "skopeo rejected the signed image: {}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let rejected = pull(&unsigned);
    assert!(
        !rejected.status.success(),
        "skopeo accepted an unsigned image"
    );
    let why = String::from_utf8_lossy(&rejected.stderr).to_string();
    assert!(why.contains("signature"), "{why}");
}
