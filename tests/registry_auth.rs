//! The registry client's credentials from an auth file (`auths` with base64
//! `user:pass`) against a real docker-registry with htpasswd basic auth on
//! 127.0.0.1: with the entry, pushes and pulls work; without, the error
//! names the registry; with a wrong one, it names the file the refused
//! credentials came from.
#[allow(dead_code)] // this binary uses a part of the shared support
mod peers;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use peers::registry::http_status;
use peers::tools;
use stagex::oci::descriptor::Descriptor;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;
use stagex::progress::NoProgress;
use stagex::registry::{BlobPush, RegistryClient};

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn basic_auth_from_the_auth_file() {
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
}
