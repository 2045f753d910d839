//! A real nginx serving a directory over http or https (test CA made with
//! openssl) on a free 127.0.0.1 port, one per test, stopped when dropped.
//! Runs in the foreground (`daemon off; master_process off`), everything
//! (pid, logs, temp paths) inside its own temp dir. Readiness is awaited by
//! polling the port (bounded), never by a fixed sleep.
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tools;

pub struct Nginx {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM) the server's certificate chains to, with TLS.
    pub ca: Option<PathBuf>,
    child: Child,
}

/// A test CA and a server certificate for 127.0.0.1/localhost.
pub struct TestTls {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Makes a CA and a server certificate with openssl in `dir`.
pub fn make_tls(dir: &Path) -> Option<TestTls> {
    let openssl = tools::require(&["openssl"])?.remove(0);
    let run = |args: &[&str]| {
        tools::run_ok(Command::new(&openssl).current_dir(dir).args(args));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=test-CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "30",
        "-extfile",
        "server.ext",
    ]);
    Some(TestTls {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    })
}

/// How a test nginx is set up beyond the served root.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// https with a fresh test CA.
    pub tls: bool,
    /// HTTP/2 on the TLS listener (`listen ... ssl http2`).
    pub http2: bool,
    /// WebDAV uploads (PUT, DELETE, MKCOL, MOVE) behind basic auth for this
    /// `(user, password)`; GET and HEAD stay anonymous.
    pub webdav: Option<(String, String)>,
    /// Inserted into the `server` block (e.g. `error_page`).
    pub extra: String,
}

impl Nginx {
    /// Serves `root` read-only; `tls` switches to https with a fresh test CA;
    /// `extra` is inserted into the `server` block (e.g. `error_page`).
    /// `None` if nginx (or openssl) is missing outside CI.
    pub fn start(root: &Path, tls: bool, extra: &str) -> Option<Nginx> {
        Nginx::start_with(
            root,
            &Options {
                tls,
                extra: extra.to_string(),
                ..Options::default()
            },
        )
    }

    /// A WebDAV mirror of `root` (uploads need `user`/`password`).
    pub fn start_webdav(root: &Path, tls: bool, user: &str, password: &str) -> Option<Nginx> {
        Nginx::start_with(
            root,
            &Options {
                tls,
                webdav: Some((user.to_string(), password.to_string())),
                ..Options::default()
            },
        )
    }

    /// Serves `root` as `options` say. `None` if nginx (or openssl) is
    /// missing outside CI.
    pub fn start_with(root: &Path, options: &Options) -> Option<Nginx> {
        let bin = tools::require(&["nginx"])?.remove(0);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        let port = tools::free_port();
        let http2 = if options.http2 { " http2" } else { "" };
        let (listen, ca) = if options.tls {
            let certs = make_tls(d)?;
            (
                format!(
                    "listen 127.0.0.1:{port} ssl{http2}; ssl_certificate {}; ssl_certificate_key {};",
                    certs.server_cert.display(),
                    certs.server_key.display()
                ),
                Some(certs.ca_cert),
            )
        } else {
            (format!("listen 127.0.0.1:{port};"), None)
        };
        let location = match &options.webdav {
            None => String::new(),
            Some((user, password)) => {
                let htpasswd = d.join("htpasswd");
                write_htpasswd(&htpasswd, user, password)?;
                format!(
                    "location / {{ dav_methods PUT DELETE MKCOL MOVE; create_full_put_path on;\n\
                       dav_access user:rw group:r all:r; client_max_body_size 16m;\n\
                       limit_except GET HEAD {{ auth_basic \"mirror\"; auth_basic_user_file {}; }} }}",
                    htpasswd.display()
                )
            }
        };
        let t = d.join("tmp").display().to_string();
        let conf = format!(
            "daemon off; master_process off; pid {pid}; error_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log {d}/access.log;\n\
               client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;\n\
               uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;\n\
               keepalive_requests 100000;\n\
               types {{ text/html html; }} default_type application/octet-stream;\n\
               server {{ {listen} root {root}; {extra} {location} }} }}\n",
            pid = d.join("nginx.pid").display(),
            d = d.display(),
            root = root.display(),
            extra = options.extra,
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            port,
            dir,
            ca,
            child,
        };
        nginx.wait_ready();
        Some(nginx)
    }

    /// `http://127.0.0.1:<port>` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", self.logs());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "nginx on port {} did not become ready:\n{}",
            self.port,
            self.logs()
        );
    }

    /// The access log alone (one line per request, in order).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        ["stderr.log", "error.log", "access.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// An htpasswd line for `user` (apr1, which nginx checks natively).
fn write_htpasswd(path: &Path, user: &str, password: &str) -> Option<()> {
    let openssl = tools::require(&["openssl"])?.remove(0);
    let out = tools::run_ok(Command::new(openssl).args(["passwd", "-apr1", password]));
    let hash = String::from_utf8(out.stdout).unwrap();
    std::fs::write(path, format!("{user}:{}\n", hash.trim())).unwrap();
    Some(())
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
