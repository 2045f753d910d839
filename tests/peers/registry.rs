//! A real OCI distribution registry (Debian's `docker-registry`) on a free
//! 127.0.0.1 port, one per test, stopped when dropped. Readiness is awaited
//! by polling `GET /v2/` (bounded), never by a fixed sleep.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tools;

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a plain-HTTP registry; `None` if docker-registry is missing
    /// outside CI.
    pub fn start() -> Option<Registry> {
        let bin = tools::require(&["docker-registry"])?.remove(0);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = tools::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info, formatter: text}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let child = Command::new(bin)
            .arg("serve")
            // REGISTRY_* variables are config overrides for docker-registry.
            .env_remove("REGISTRY_AUTH_FILE")
            .arg(&config)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("registry.err")).unwrap(),
            ))
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            port,
            dir,
            log,
            child,
        };
        registry.wait_ready();
        Some(registry)
    }

    /// CPU seconds (user + system) the registry process used so far, from
    /// /proc/<pid>/stat (in clock ticks).
    #[allow(dead_code)] // read by benches/publish.rs only
    pub fn cpu_seconds(&self) -> f64 {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // Fields after the command name (which may hold spaces); utime and
        // stime are fields 14 and 15, the list starts at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> f64 {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{path}: no field {}", i + 3))
        };
        // SAFETY: sysconf only reads a system constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / per_second
    }

    /// The file this registry keeps the blob of sha256 `hex` in (tests
    /// overwrite it to serve bytes that are not the blob's).
    #[allow(dead_code)] // read by tests/it only
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_status(self.port, "/v2/") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let err = std::fs::read_to_string(self.dir.path().join("registry.err")).unwrap_or_default();
        panic!(
            "docker-registry on port {} did not become ready:\n{err}",
            self.port
        );
    }

    /// Everything the registry logged (access lines included).
    pub fn logs(&self) -> String {
        let mut all = std::fs::read_to_string(&self.log).unwrap_or_default();
        all.push_str(
            &std::fs::read_to_string(self.dir.path().join("registry.err")).unwrap_or_default(),
        );
        all
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status code of a plain HTTP GET on 127.0.0.1 (None if not reachable).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Crash and restart (for resume tests): same port, same storage.
impl Registry {
    /// Kills the registry as a crash would (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage; logs are appended.
    pub fn restart(&mut self) {
        let bin = tools::find("docker-registry").expect("docker-registry ran before");
        let append = |name: &str| {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(self.dir.path().join(name))
                .unwrap()
        };
        self.child = Command::new(bin)
            .arg("serve")
            // REGISTRY_* variables are config overrides for docker-registry.
            .env_remove("REGISTRY_AUTH_FILE")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::from(append("registry.log")))
            .stderr(Stdio::from(append("registry.err")))
            .spawn()
            .expect("restart docker-registry");
        self.wait_ready();
    }

    /// Blob files the registry has stored so far.
    pub fn stored_blobs(&self) -> usize {
        let dir = self.dir.path().join("data/docker/registry/v2/blobs/sha256");
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() == "data")
            .count()
    }
}
