//! Owns: the ONE in-process HTTP/1.1 mock (std `TcpListener` on a free 127.0.0.1
//! port, one thread per connection) for the faults no real server can be
//! made to produce: a black hole that accepts and never answers, a slow
//! loris that sends headers and then nothing, a body that stops halfway,
//! hostile or wrong bytes, chosen statuses. Every connection is served
//! once and closed (`Connection: close`). Stalled connections are held
//! until the mock is dropped (at most `HOLD_CAP`), so a client that hangs
//! is seen hanging, never released by the mock.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a stalled connection is held open (a safety net for the test
/// process, far beyond any timeout under test).
const HOLD_CAP: Duration = Duration::from_secs(120);

/// What the mock does with one request.
pub enum Reply {
    /// A complete answer.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Status and headers declaring `declared` body bytes, then `sent` of
    /// them, then silence (slow loris when `sent` is empty; a blob stalled
    /// halfway otherwise).
    Stall { declared: u64, sent: Vec<u8> },
    /// Read the request, answer nothing.
    Silent,
}

impl Reply {
    pub fn ok(content_type: &str, body: &[u8]) -> Reply {
        Reply::status(200, content_type, body)
    }

    pub fn status(status: u16, content_type: &str, body: &[u8]) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.to_vec(),
        }
    }

    /// Adds a header to a `Full` reply.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

/// One request as seen: `METHOD /path?query`.
pub type Seen = Arc<Mutex<Vec<String>>>;

/// One request with its `Authorization` header (`None`: it had none).
pub type Authorized = Arc<Mutex<Vec<(String, Option<String>)>>>;

type Route = dyn Fn(&str, &str) -> Reply + Send + Sync;

pub struct MockHttp {
    pub port: u16,
    release: Arc<(Mutex<bool>, Condvar)>,
    seen: Seen,
    #[allow(dead_code)] // read by tests/registry_auth.rs only
    authorized: Authorized,
    thread: Option<JoinHandle<()>>,
}

impl MockHttp {
    /// Serves `route(method, path)` for every request.
    pub fn start(route: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> MockHttp {
        MockHttp::spawn(0, Some(Arc::new(route)))
    }

    /// The same on a given port (e.g. where a real peer was stopped).
    pub fn start_on(
        port: u16,
        route: impl Fn(&str, &str) -> Reply + Send + Sync + 'static,
    ) -> MockHttp {
        MockHttp::spawn(port, Some(Arc::new(route)))
    }

    /// Accepts connections and never reads or answers.
    pub fn black_hole() -> MockHttp {
        MockHttp::spawn(0, None)
    }

    /// A registry front: `GET /v2/` answers 200 (no auth challenge), every
    /// other request goes to `route`.
    pub fn registry(route: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> MockHttp {
        MockHttp::start(move |method, path| {
            if path == "/v2/" {
                Reply::ok("application/json", b"{}")
            } else {
                route(method, path)
            }
        })
    }

    fn spawn(port: u16, route: Option<Arc<Route>>) -> MockHttp {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        let seen: Seen = Arc::default();
        let authorized: Authorized = Arc::default();
        let thread = {
            let (release, seen) = (Arc::clone(&release), Arc::clone(&seen));
            let authorized = Arc::clone(&authorized);
            std::thread::spawn(move || {
                // Bounded: at most 256 connections; Drop wakes it to stop.
                for _ in 0..256 {
                    let Ok((stream, _)) = listener.accept() else {
                        return;
                    };
                    if *release.0.lock().unwrap() {
                        return;
                    }
                    let (route, release, seen) =
                        (route.clone(), Arc::clone(&release), Arc::clone(&seen));
                    let authorized = Arc::clone(&authorized);
                    std::thread::spawn(move || match route {
                        None => hold(&stream, &release),
                        Some(route) => serve(&stream, &*route, &release, (&seen, &authorized)),
                    });
                }
            })
        };
        MockHttp {
            port,
            release,
            seen,
            authorized,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests seen so far (`METHOD /path?query`), each with the
    /// `Authorization` header it carried.
    #[allow(dead_code)] // read by tests/registry_auth.rs only
    pub fn authorizations(&self) -> Vec<(String, Option<String>)> {
        self.authorized.lock().unwrap().clone()
    }
}

impl Drop for MockHttp {
    fn drop(&mut self) {
        *self.release.0.lock().unwrap() = true;
        self.release.1.notify_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps `stream` open, silent, until the mock is dropped (or the cap).
fn hold(stream: &TcpStream, release: &(Mutex<bool>, Condvar)) {
    let (lock, wake) = release;
    let guard = lock.lock().unwrap();
    let _ = wake.wait_timeout_while(guard, HOLD_CAP, |released| !*released);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn serve(
    stream: &TcpStream,
    route: &Route,
    release: &(Mutex<bool>, Condvar),
    (seen, authorized): (&Seen, &Authorized),
) {
    let _ = stream.set_read_timeout(Some(HOLD_CAP));
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") {
                        authorization = Some(value.trim().to_string());
                    }
                }
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    seen.lock().unwrap().push(format!("{method} {path}"));
    authorized
        .lock()
        .unwrap()
        .push((format!("{method} {path}"), authorization));
    let mut out = stream;
    match route(method, path) {
        Reply::Silent => hold(stream, release),
        Reply::Stall { declared, sent } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&sent);
            let _ = out.flush();
            hold(stream, release);
        }
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n",
                reason(status),
                body.len()
            );
            for (name, value) in headers {
                head += &format!("{name}: {value}\r\n");
            }
            head += "\r\n";
            let _ = out.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = out.write_all(&body);
            }
            let _ = out.flush();
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}
