//! The registry client over TLS with basic auth against a real
//! docker-registry: a private CA from `STAGEX_CA_FILE`, credentials from the
//! auth file, TLS forced for a loopback host by `STAGEX_TLS_HOSTS`. skopeo,
//! with its own TLS settings, reads back what we pushed, digest unchanged;
//! without the CA the push fails with a certificate error.
use crate::peers;

use std::process::Command;

use peers::tls_registry::TlsRegistry;
use peers::tools::{self, run_ok, stagex};

fn image_to(
    registry: &TlsRegistry,
    work: &std::path::Path,
    reference: &str,
    with_ca: bool,
) -> std::process::Output {
    let auth = work.join("auth.json");
    registry.write_auth_file(&auth);
    let mut command = stagex();
    command
        .args([
            "--json",
            "image",
            "examples/rootfs",
            "--platform",
            "linux/amd64",
            "--output",
        ])
        .arg(format!("docker://{reference}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STAGEX_STORE", work.join("store"))
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("STAGEX_TLS_HOSTS", registry.host());
    if with_ca {
        command.env("STAGEX_CA_FILE", registry.ca_file());
    } else {
        command.env_remove("STAGEX_CA_FILE");
    }
    command.output().unwrap()
}

#[test]
fn push_over_tls_with_basic_auth_is_read_back_by_skopeo() {
    let Some(_) = tools::require(&["skopeo"]) else {
        return;
    };
    let Some(registry) = TlsRegistry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/stagex/tls-test:1", registry.host());

    let refused = image_to(&registry, work.path(), &reference, false);
    assert!(
        !refused.status.success(),
        "a push to an untrusted certificate must fail"
    );
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        said.contains("certificate") || said.contains("tls") || said.contains("issuer"),
        "{said}"
    );

    let pushed = image_to(&registry, work.path(), &reference, true);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&pushed.stdout).unwrap();
    let digest = report["manifest_digest"].as_str().unwrap();

    let inspect = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--cert-dir"])
            .arg(registry.cert_dir())
            .args([
                "--creds",
                &format!("{}:{}", registry.user, registry.password),
            ])
            .arg(format!("docker://{reference}")),
    );
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Digest"].as_str().unwrap(), digest);
}
