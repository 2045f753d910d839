//! A real docker-registry serving TLS (a throwaway CA made with openssl) and
//! requiring basic auth (htpasswd, bcrypt), on a free 127.0.0.1 port. The
//! CA certificate is `ca.crt` and a skopeo `--cert-dir` is `dir()`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tools::{self, run_ok};

pub struct TlsRegistry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub user: String,
    pub password: String,
    child: Child,
}

impl TlsRegistry {
    /// `None` when a peer is missing outside CI.
    pub fn start() -> Option<TlsRegistry> {
        let bins = tools::require(&["docker-registry", "openssl", "htpasswd", "curl"])?;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // The same throwaway CA + server certificate the nginx peer uses.
        super::nginx::make_tls(d)?;
        let (user, password) = ("stagex".to_string(), "s3cret-pass".to_string());
        let htpasswd = run_ok(Command::new(&bins[2]).args(["-Bbn", &user, &password]));
        std::fs::write(d.join("htpasswd"), htpasswd.stdout).unwrap();
        let port = tools::free_port();
        let config = d.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info, formatter: text}}\nstorage: {{filesystem: {{rootdirectory: {data}}}}}\nhttp: {{addr: 127.0.0.1:{port}, tls: {{certificate: {crt}, key: {key}}}}}\nauth: {{htpasswd: {{realm: test, path: {pw}}}}}\n",
                data = d.join("data").display(),
                crt = d.join("server.crt").display(),
                key = d.join("server.key").display(),
                pw = d.join("htpasswd").display(),
            ),
        )
        .unwrap();
        let child = Command::new(&bins[0])
            .arg("serve")
            // REGISTRY_* variables are config overrides for docker-registry.
            .env_remove("REGISTRY_AUTH_FILE")
            .arg(&config)
            .stdout(Stdio::from(
                std::fs::File::create(d.join("registry.log")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(d.join("registry.err")).unwrap(),
            ))
            .spawn()
            .expect("start docker-registry");
        let registry = TlsRegistry {
            port,
            dir,
            user,
            password,
            child,
        };
        registry.wait_ready();
        Some(registry)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A directory holding only `ca.crt`, for skopeo's `--cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.ca_file(), dir.join("ca.crt")).unwrap();
        dir
    }

    /// An auth file (docker config.json shape) with this registry's login.
    pub fn write_auth_file(&self, path: &Path) {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        std::fs::write(
            path,
            format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{token}\"}}}}}}",
                self.host()
            ),
        )
        .unwrap();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("https://127.0.0.1:{}/v2/", self.port);
        while Instant::now() < deadline {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(self.ca_file())
                .arg(&url)
                .output()
                .unwrap();
            if out.stdout == b"401" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let err = std::fs::read_to_string(self.dir.path().join("registry.err")).unwrap_or_default();
        panic!(
            "TLS docker-registry on port {} did not become ready:\n{err}",
            self.port
        );
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
