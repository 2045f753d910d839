//! A real static HTTP server (`python3 -m http.server`) on a free
//! 127.0.0.1 port, serving a directory; killed on drop.
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::tools;

pub struct HttpServer {
    child: Child,
    pub port: u16,
}

impl HttpServer {
    /// Starts serving `dir`; `None` (skip) when python3 is missing outside CI.
    pub fn start(dir: &Path) -> Option<HttpServer> {
        let python = tools::require(&["python3"])?.remove(0);
        let port = tools::free_port();
        let child = Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m http.server");
        let server = HttpServer { child, port };
        // Bounded readiness poll: the port accepts connections once serving.
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("python3 http.server on port {port} did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
