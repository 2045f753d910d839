//! The registry client's credentials from an auth file (`auths` with base64
//! `user:pass`) against a real docker-registry with htpasswd basic auth on
//! 127.0.0.1: with the entry, pushes and pulls work; without, the error
//! names the registry; with a wrong one, it names the file the refused
//! credentials came from. Environment credentials go only to the hosts
//! they are bound to; and against a mock that records every request's
//! Authorization header, credentials go out only after a 401 challenge,
//! to the challenging registry or its token service, never to another host.
#[allow(dead_code)] // this binary uses a part of the shared support
mod peers;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use peers::mock_http::{MockHttp, Reply};
use peers::registry::http_status;
use peers::tools;
use stagex::oci::descriptor::Descriptor;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;
use stagex::progress::NoProgress;
use stagex::registry::{BlobPush, RegistryClient};

/// The tests of this file change the process environment: one at a time.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn basic_auth_from_the_auth_file() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bins) = tools::require(&["docker-registry", "htpasswd"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = tools::run_ok(Command::new(&bins[1]).args(["-Bbn", "user", "s3cret"]));
    std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
    let port = tools::free_port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\nauth: {{htpasswd: {{realm: test, path: {}}}}}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        ),
    )
    .unwrap();
    let _registry = Child(
        Command::new(&bins[0])
            .arg("serve")
            .arg(&config)
            // docker-registry reads REGISTRY_* as config overrides, and the
            // other test of this binary sets REGISTRY_AUTH_FILE for stagex
            // (`auth.file` is no auth type: the registry would not start).
            .env_remove("REGISTRY_AUTH_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(port, "/v2/") != Some(401) {
        assert!(
            Instant::now() < deadline,
            "registry with auth did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let host = format!("127.0.0.1:{port}");
    let layout = Layout::create(dir.path().join("src")).unwrap();
    let bytes = b"some layer bytes".to_vec();
    let blob = Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        layout.write_blob(&bytes).unwrap(),
        bytes.len() as u64,
    );

    // No credentials: refused, naming the registry.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"auths":{}}"#).unwrap();
    std::env::set_var("REGISTRY_AUTH_FILE", &empty);
    std::env::set_var("HOME", dir.path());
    let anonymous = RegistryClient::new(&host).unwrap();
    let error = format!(
        "{:#}",
        anonymous
            .push_blob("me/x", &blob, &layout, &[], &NoProgress)
            .unwrap_err()
    );
    assert!(
        error.contains(&host) && error.contains("asks for credentials"),
        "{error}"
    );

    // Wrong credentials: refused, naming the file they came from.
    let wrong = dir.path().join("wrong.json");
    let bad = base64::engine::general_purpose::STANDARD.encode("user:n0t-the-pw");
    std::fs::write(
        &wrong,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{bad}"}}}}}}"#),
    )
    .unwrap();
    std::env::set_var("REGISTRY_AUTH_FILE", &wrong);
    let refused = RegistryClient::new(&host).unwrap();
    let error = format!(
        "{:#}",
        refused
            .push_blob("me/x", &blob, &layout, &[], &NoProgress)
            .unwrap_err()
    );
    assert!(
        error.contains("HTTP 401")
            && error.contains(&format!(
                "refused the credentials from auths in {}",
                wrong.display()
            )),
        "{error}"
    );
    assert!(
        !error.contains("n0t-the-pw"),
        "no secret in messages: {error}"
    );

    // The auth file entry unlocks it.
    let auth = base64::engine::general_purpose::STANDARD.encode("user:s3cret");
    let file = dir.path().join("auth.json");
    std::fs::write(
        &file,
        format!(r#"{{"auths":{{"http://{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    std::env::set_var("REGISTRY_AUTH_FILE", &file);
    let client = RegistryClient::new(&host).unwrap();
    assert_eq!(
        client
            .push_blob("me/x", &blob, &layout, &[], &NoProgress)
            .unwrap(),
        BlobPush::Uploaded(blob.size)
    );
    assert!(client.blob_exists("me/x", &blob.digest).unwrap());
    let dest = Layout::create(dir.path().join("dest")).unwrap();
    client.pull_blob("me/x", &blob, &dest, &NoProgress).unwrap();
    assert_eq!(dest.read_blob(&blob.digest).unwrap(), bytes);

    // Environment credentials: used for the hosts they are bound to only.
    std::env::set_var("REGISTRY_AUTH_FILE", &empty);
    std::env::set_var("STAGEX_REGISTRY_USER", "user");
    std::env::set_var("STAGEX_REGISTRY_PASSWORD", "s3cret");
    std::env::set_var("STAGEX_REGISTRY_HOSTS", format!("other.example,{host}"));
    let bound = RegistryClient::new(&host).unwrap();
    assert!(bound.blob_exists("me/x", &blob.digest).unwrap());
    std::env::set_var("STAGEX_REGISTRY_HOSTS", "other.example");
    let unbound = RegistryClient::new(&host).unwrap();
    let error = format!(
        "{:#}",
        unbound.blob_exists("me/x", &blob.digest).unwrap_err()
    );
    assert!(
        error.contains("asks for credentials") && error.contains("STAGEX_REGISTRY_HOSTS"),
        "{error}"
    );
    for name in [
        "STAGEX_REGISTRY_USER",
        "STAGEX_REGISTRY_PASSWORD",
        "STAGEX_REGISTRY_HOSTS",
    ] {
        std::env::remove_var(name);
    }
}

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A registry on the mock: `GET /v2/` answers 401 with `challenge` (or 200
/// without one), a manifest HEAD answers with a digest.
fn mock_registry(challenge: Option<String>) -> MockHttp {
    MockHttp::start(move |_, path| match (path, &challenge) {
        ("/v2/", Some(c)) => {
            Reply::status(401, "application/json", b"{}").with_header("WWW-Authenticate", c)
        }
        ("/v2/", None) => Reply::ok("application/json", b"{}"),
        _ => Reply::ok("application/vnd.oci.image.manifest.v1+json", b"")
            .with_header("Docker-Content-Digest", DIGEST),
    })
}

#[test]
fn credentials_go_only_after_a_challenge_and_only_to_their_host() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"auths":{}}"#).unwrap();
    std::env::set_var("REGISTRY_AUTH_FILE", &empty);
    std::env::set_var("HOME", dir.path());
    std::env::remove_var("DOCKER_CONFIG");
    std::env::remove_var("XDG_RUNTIME_DIR");
    std::env::set_var("STAGEX_REGISTRY_USER", "ci");
    std::env::set_var("STAGEX_REGISTRY_PASSWORD", "s3cret");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:s3cret")
    );
    let tokens = MockHttp::start(|_, _| Reply::ok("application/json", br#"{"token":"t0k"}"#));
    let challenging = mock_registry(Some("Basic realm=\"test\"".into()));
    let open = mock_registry(None);
    let bearer = mock_registry(Some(format!(
        "Bearer realm=\"{}\",service=\"reg\"",
        tokens.url("/token")
    )));
    let stranger = mock_registry(Some("Basic realm=\"test\"".into()));
    std::env::set_var(
        "STAGEX_REGISTRY_HOSTS",
        [&challenging, &open, &bearer].map(MockHttp::host).join(","),
    );
    let head = |mock: &MockHttp| {
        let client = RegistryClient::new(&mock.host()).unwrap();
        assert_eq!(
            client
                .manifest_digest("ns/x", "latest")
                .unwrap()
                .to_string(),
            DIGEST
        );
    };
    let manifest = "HEAD /v2/ns/x/manifests/latest".to_string();
    let probe = ("GET /v2/".to_string(), None);

    // Basic: the anonymous probe is challenged, then the credentials go.
    head(&challenging);
    assert_eq!(
        challenging.authorizations(),
        [probe.clone(), (manifest.clone(), Some(basic.clone()))]
    );
    // No challenge: nothing is sent, although credentials are bound.
    head(&open);
    assert_eq!(
        open.authorizations(),
        [probe.clone(), (manifest.clone(), None)]
    );
    // Bearer: the credentials go to the token service, its token to the registry.
    head(&bearer);
    assert_eq!(
        bearer.authorizations(),
        [probe.clone(), (manifest.clone(), Some("Bearer t0k".into()))]
    );
    let asked = tokens.authorizations();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0]
            .0
            .starts_with("GET /token?scope=repository%3Ans%2Fx%3Apull"),
        "{asked:?}"
    );
    assert_eq!(asked[0].1.as_deref(), Some(basic.as_str()));
    // A host the credentials are not bound to never sees them, challenge or not.
    head(&stranger);
    assert_eq!(
        stranger.authorizations(),
        [probe.clone(), (manifest.clone(), None)]
    );

    // Without STAGEX_REGISTRY_HOSTS, the hosts the command was configured
    // with (the CLI binds stagex.toml's registries and --registry).
    std::env::remove_var("STAGEX_REGISTRY_HOSTS");
    stagex::registry::auth::bind_env_credentials(&format!("{}/stagex", challenging.host()));
    head(&challenging);
    assert_eq!(
        challenging.authorizations()[3],
        (manifest.clone(), Some(basic.clone()))
    );
    head(&stranger);
    assert!(stranger
        .authorizations()
        .iter()
        .all(|(_, auth)| auth.is_none()));
    for name in ["STAGEX_REGISTRY_USER", "STAGEX_REGISTRY_PASSWORD"] {
        std::env::remove_var(name);
    }
}
