//! The whole release against real servers: a docker-registry with TLS (own
//! CA, trusted through a certs.d named in stagex.toml) and htpasswd auth (credentials through a docker credential helper),
//! a second registry, and nginx with TLS + WebDAV PUT + basic auth as the
//! signature mirror. After `stagex publish`: every tag in both registries
//! with our digests (`skopeo inspect`), and `skopeo copy` with a `signedBy`
//! policy and the nginx mirror as lookaside accepts the version tag and the
//! digest. `--dry-run` before changes nothing on any server; a mirror
//! answering 401 fails clearly, naming the mirror and how to log in.
use crate::peers;
use crate::publish_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peers::gpg::GpgHome;
use peers::nginx::Nginx;
use peers::registry::Registry;
use peers::tls_registry::TlsRegistry;
use peers::tools::{require, run_ok};
use publish_support::*;

struct World {
    skopeo: PathBuf,
    tls: TlsRegistry,
    plain: Registry,
    nginx: Nginx,
    mirror_root: tempfile::TempDir,
    dir: tempfile::TempDir,
    keys: [GpgHome; 2],
    packages: Vec<Package>,
    /// `<tls host>/stagex`: the signed identity namespace.
    ns: String,
}

const MIRROR_USER: &str = "uploader";
const MIRROR_PASSWORD: &str = "dav-pass";

fn world() -> Option<World> {
    let skopeo = require(&["skopeo", "gpg", "nginx", "openssl"])?.remove(0);
    let tls = TlsRegistry::start()?;
    let plain = Registry::start()?;
    let mirror_root = tempfile::tempdir().unwrap();
    let nginx = Nginx::start_webdav(mirror_root.path(), true, MIRROR_USER, MIRROR_PASSWORD)?;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let packages = make_release(root, "core", 2, 100_000, 11);
    let keys = [GpgHome::with_key("alice")?, GpgHome::with_key("bob")?];
    let ns = format!("{}/stagex", tls.host());
    std::fs::create_dir_all(keys_dir(root)).unwrap();
    for (i, key) in keys.iter().enumerate() {
        std::fs::write(keys_dir(root).join(format!("k{i}.gpg")), key.export()).unwrap();
        let secret = root.join(format!("k{i}.key"));
        std::fs::write(&secret, key.export_secret()).unwrap();
        sign_all(root, &secret, &ns);
    }
    // Each CA in a containers-style certs.d under its host (stagex.toml
    // names the directory; the mirror goes through the shared client); the
    // registry's login through a helper.
    let nginx_host = format!("127.0.0.1:{}", nginx.port);
    for (host, ca) in [
        (tls.host(), tls.ca_file()),
        (nginx_host, nginx.ca.clone().unwrap()),
    ] {
        let dir = root.join("certs.d").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
    }
    std::fs::write(root.join("stagex.toml"), "certs_dir = \"certs.d\"\n").unwrap();
    credential_helper(
        root,
        "stagextest",
        &tls.host(),
        &format!(
            "#!/bin/sh\nread host\n[ \"$host\" = {} ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"ServerURL\":\"'$host'\",\"Username\":\"{}\",\"Secret\":\"{}\"}}'\n",
            tls.host(),
            tls.user,
            tls.password
        ),
    );
    Some(World {
        skopeo,
        tls,
        plain,
        nginx,
        mirror_root,
        dir,
        keys,
        packages,
        ns,
    })
}

impl World {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `stagex publish` to both registries and the mirror, with the
    /// environment a release manager has (helper on PATH, certs.d).
    fn publish(&self, mirror_password: &str, extra: &[&str]) -> Output {
        let root = self.root();
        let plain_ns = format!("{}/stagex", self.plain.host());
        let mut c = publish(
            root,
            &self.ns,
            &[
                "--registry",
                &self.ns,
                "--registry",
                &plain_ns,
                "--mirror",
                &self.nginx.url(),
            ],
        );
        let path = format!(
            "{}:{}",
            root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.args(extra)
            .env("PATH", path)
            .env("DOCKER_CONFIG", root.join("docker"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("STAGEX_CA_FILE")
            .env_remove("STAGEX_CERTS_DIR")
            .env("STAGEX_TLS_HOSTS", self.tls.host())
            .env("STAGEX_MIRROR_USER", MIRROR_USER)
            .env("STAGEX_MIRROR_PASSWORD", mirror_password)
            .env("HOME", root);
        c.output().unwrap()
    }

    /// A skopeo cert dir trusting the registry and the mirror.
    fn cert_dir(&self) -> PathBuf {
        let dir = self.root().join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.tls.ca_file(), dir.join("ca.crt")).unwrap();
        std::fs::copy(self.nginx.ca.as_ref().unwrap(), dir.join("mirror.crt")).unwrap();
        dir
    }

    /// The digest `skopeo inspect --raw` sees for `reference`.
    fn inspect(&self, reference: &str) -> Option<String> {
        let mut c = Command::new(&self.skopeo);
        c.args(["inspect", "--raw"]);
        if reference.starts_with(&self.tls.host()) {
            c.arg("--cert-dir")
                .arg(self.cert_dir())
                .arg("--creds")
                .arg(format!("{}:{}", self.tls.user, self.tls.password));
        } else {
            c.arg("--tls-verify=false");
        }
        let out = c.arg(format!("docker://{reference}")).output().unwrap();
        out.status
            .success()
            .then(|| stagex::oci::digest::Digest::of_bytes(&out.stdout).to_string())
    }

    /// `skopeo copy` under a policy requiring a signature by our two keys'
    /// keyring, signatures from the nginx mirror.
    fn pull_verified(&self, reference: &str) -> Output {
        let root = self.root();
        let keyring = root.join("keyring.gpg");
        let mut ring = self.keys[0].export();
        ring.extend(self.keys[1].export());
        std::fs::write(&keyring, ring).unwrap();
        let host = self.tls.host();
        std::fs::write(
            root.join("policy.json"),
            serde_json::json!({
                "default": [{"type": "reject"}],
                "transports": {
                    "docker": {host.clone(): [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keyring}]},
                    "oci": {"": [{"type": "insecureAcceptAnything"}]}
                }
            })
            .to_string(),
        )
        .unwrap();
        let registries_d = root.join("registries.d");
        std::fs::create_dir_all(&registries_d).unwrap();
        std::fs::write(
            registries_d.join("mirror.yaml"),
            format!("docker:\n  {host}:\n    lookaside: {}\n", self.nginx.url()),
        )
        .unwrap();
        let dest = tempfile::tempdir().unwrap();
        Command::new(&self.skopeo)
            .arg("--policy")
            .arg(root.join("policy.json"))
            .arg("--registries.d")
            .arg(&registries_d)
            .args(["copy", "--remove-signatures", "--src-cert-dir"])
            .arg(self.cert_dir())
            .arg("--src-creds")
            .arg(format!("{}:{}", self.tls.user, self.tls.password))
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:x", dest.path().join("img").display()))
            .output()
            .unwrap()
    }

    fn mirror_files(&self) -> usize {
        walkdir::WalkDir::new(self.mirror_root.path())
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .count()
    }
}

#[test]
fn a_release_reaches_both_registries_and_the_mirror_and_skopeo_verifies_it() {
    let Some(w) = world() else { return };
    let plain = w.plain.host();

    // Dry run: a plan, and nothing on any server.
    let plan = w.publish(MIRROR_PASSWORD, &["--dry-run"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let plan = json(&plan);
    assert_eq!(plan["summary"]["tags_pushed"], 12, "{plan:#}");
    assert_eq!(plan["mirrors"][0]["signatures_uploaded"], 4, "{plan:#}");
    assert_eq!(w.mirror_files(), 0, "dry run wrote to the mirror");
    for p in &w.packages {
        assert_eq!(
            w.inspect(&format!("{}/{}:{}", w.ns, p.name, p.version)),
            None
        );
        assert_eq!(
            w.inspect(&format!("{plain}/stagex/{}:latest", p.name)),
            None
        );
    }

    let out = w.publish(MIRROR_PASSWORD, &[]);
    assert!(
        out.status.success(),
        "{}\nnginx: {}",
        text(&out),
        w.nginx.logs()
    );
    let report = json(&out);
    assert_eq!(report["summary"]["tags_pushed"], 12, "{report:#}");
    assert_eq!(report["summary"]["signatures_uploaded"], 4, "{report:#}");
    assert_eq!(report["summary"]["failures"], 0);
    assert_eq!(w.mirror_files(), 4);

    for p in &w.packages {
        for registry in [w.ns.clone(), format!("{plain}/stagex")] {
            for tag in [p.version.as_str(), "sx2026.03.0", "latest"] {
                assert_eq!(
                    w.inspect(&format!("{registry}/{}:{tag}", p.name)),
                    Some(p.index.to_string()),
                    "{registry}/{}:{tag}",
                    p.name
                );
            }
        }
        let by_tag = w.pull_verified(&format!("{}/{}:{}", w.ns, p.name, p.version));
        assert!(by_tag.status.success(), "by tag: {}", text(&by_tag));
        let by_digest = w.pull_verified(&format!("{}/{}@{}", w.ns, p.name, p.index));
        assert!(
            by_digest.status.success(),
            "by digest: {}",
            text(&by_digest)
        );
        // `latest` was not signed: the policy refuses it.
        let latest = w.pull_verified(&format!("{}/{}:latest", w.ns, p.name));
        assert!(!latest.status.success(), "an unsigned tag must be refused");
    }

    // Again: nothing new anywhere.
    let again = w.publish(MIRROR_PASSWORD, &[]);
    assert!(again.status.success(), "{}", text(&again));
    let again = json(&again);
    assert_eq!(again["summary"]["bytes_uploaded"], 0);
    assert_eq!(again["summary"]["signatures_uploaded"], 0);
    assert_eq!(again["mirrors"][0]["signatures_present"], 4);
    assert_eq!(w.mirror_files(), 4);
    run_ok(Command::new(&w.skopeo).arg("--version"));
}

#[test]
fn a_mirror_refusing_the_login_fails_clearly_and_the_images_still_go_out() {
    let Some(w) = world() else { return };
    let out = w.publish("wrong-password", &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let report = json(&out);
    let error = report["mirrors"][0]["failed"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    for want in ["HTTP 401", &w.nginx.url(), "STAGEX_MIRROR_USER", ".netrc"] {
        assert!(error.contains(want), "{want:?} missing from {error}");
    }
    assert!(text(&out).contains("failure(s)"), "{}", text(&out));
    assert_eq!(w.mirror_files(), 0);
    assert_eq!(
        report["registries"][0]["failed"].as_array().unwrap().len(),
        0
    );
    let p = &w.packages[0];
    assert_eq!(
        w.inspect(&format!("{}/{}:{}", w.ns, p.name, p.version)),
        Some(p.index.to_string())
    );
}
