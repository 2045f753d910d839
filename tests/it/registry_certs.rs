//! Private CAs per registry host from a containers-style certs.d directory
//! (`<dir>/<host:port>/ca.crt`), against the real TLS docker-registry: with
//! the CA under the registry's `host:port` (from `STAGEX_CERTS_DIR`, or
//! `certs_dir` in stagex.toml) a push works and skopeo reads back our
//! digest; with no CA, or the CA filed under another host, the push fails
//! with an error naming the host and where to put the CA.
use crate::peers;

use std::path::Path;
use std::process::{Command, Output};

use peers::tls_registry::TlsRegistry;
use peers::tools::{self, run_ok, stagex};

/// Where the CA goes: `CertsDir` (env) or `Settings` (stagex.toml in `work`).
enum Via {
    Env,
    Settings,
}

fn push(registry: &TlsRegistry, work: &Path, certs: &Path, via: Via) -> Output {
    let auth = work.join("auth.json");
    registry.write_auth_file(&auth);
    let reference = format!("{}/stagex/certs-test:1", registry.host());
    let mut command = stagex();
    command
        .arg("--root")
        .arg(work)
        .args(["--json", "image"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rootfs"))
        .args(["--platform", "linux/amd64", "--output"])
        .arg(format!("docker://{reference}"))
        .env("STAGEX_STORE", work.join("store"))
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("STAGEX_TLS_HOSTS", registry.host())
        .env_remove("STAGEX_CA_FILE");
    match via {
        Via::Env => {
            let _ = std::fs::remove_file(work.join("stagex.toml"));
            command.env("STAGEX_CERTS_DIR", certs);
        }
        Via::Settings => {
            std::fs::write(
                work.join("stagex.toml"),
                format!("certs_dir = {:?}\n", certs.display().to_string()),
            )
            .unwrap();
            command.env_remove("STAGEX_CERTS_DIR");
        }
    }
    command.output().unwrap()
}

/// A certs.d holding the registry's CA under `host`.
fn certs_d(registry: &TlsRegistry, dir: &Path, host: &str) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join(host)).unwrap();
    std::fs::copy(registry.ca_file(), dir.join(host).join("ca.crt")).unwrap();
}

fn refused(output: &Output, registry: &TlsRegistry, certs: &Path) {
    assert!(!output.status.success(), "an untrusted registry must fail");
    let said = String::from_utf8_lossy(&output.stderr);
    let fix = format!("{}/{}/ca.crt", certs.display(), registry.host());
    assert!(
        said.contains(&registry.host())
            && said.contains("certificate we do not trust")
            && said.contains(&fix)
            && said.contains("STAGEX_CA_FILE"),
        "{said}"
    );
}

#[test]
fn a_ca_under_the_registry_host_in_certs_d_is_trusted_and_only_there() {
    let Some(tools) = tools::require(&["skopeo"]) else {
        return;
    };
    let Some(registry) = TlsRegistry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let certs = work.path().join("certs.d");

    // Nothing for this host: refused, and told where the CA goes.
    std::fs::create_dir_all(&certs).unwrap();
    refused(
        &push(&registry, work.path(), &certs, Via::Env),
        &registry,
        &certs,
    );
    // The CA filed under another port of the same address: still refused.
    certs_d(&registry, &certs, "127.0.0.1:1");
    refused(
        &push(&registry, work.path(), &certs, Via::Env),
        &registry,
        &certs,
    );

    // Under host:port, from the environment and from stagex.toml.
    certs_d(&registry, &certs, &registry.host());
    for via in [Via::Env, Via::Settings] {
        let pushed = push(&registry, work.path(), &certs, via);
        assert!(
            pushed.status.success(),
            "{}",
            String::from_utf8_lossy(&pushed.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&pushed.stdout).unwrap();
        let digest = report["manifest_digest"].as_str().unwrap().to_string();
        let inspect = run_ok(
            Command::new(&tools[0])
                .args(["inspect", "--cert-dir"])
                .arg(registry.cert_dir())
                .args([
                    "--creds",
                    &format!("{}:{}", registry.user, registry.password),
                ])
                .arg(format!("docker://{}/stagex/certs-test:1", registry.host())),
        );
        let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(info["Digest"].as_str().unwrap(), digest);
    }
}
