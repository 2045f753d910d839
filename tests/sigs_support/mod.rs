//! Owns: fixtures of the `sigs_*` tests: signature trees on disk (one blob
//! per `signature-N`, signed with sequoia test keys), and a HOSTILE
//! lookaside server for the faults a real server cannot be made to produce
//! on demand (a redirect loop, a 500 in the middle, a stalled connection,
//! a 503 once, a WebDAV mirror that accepts a PUT and then serves other
//! bytes).
//! The mock is a std `TcpListener` with one thread per connection (a
//! stalled answer must not block the others), on a free 127.0.0.1 port,
//! stopped on drop. It speaks just enough HTTP/1.1: one request per
//! connection, `Connection: close`.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sequoia_openpgp::Cert;
use stagex::oci::digest::Digest;

use crate::sign_support::{payload, sign_raw};

/// A skopeo-style signature of `identity` at `digest` by `cert`.
pub fn signature(cert: &Cert, identity: &str, digest: &Digest) -> Vec<u8> {
    sign_raw(cert, &payload(identity, digest), None, false, false)
}

/// StageX's legacy payload (sign.sh before mid-2025), signed by `cert`.
pub fn legacy_signature(cert: &Cert, repository: &str, digest: &Digest) -> Vec<u8> {
    let text = format!(
        r#"[{{"critical":{{"identity":{{"docker-reference":"{repository}"}},"image":{{"docker-manifest-digest":"{}"}},"type":"pgp container image signature"}},"optional":null}}]"#,
        digest.hex()
    );
    sign_raw(cert, text.as_bytes(), None, false, false)
}

/// `<root>/<repo>@sha256=<hex>/`.
pub fn image_dir(root: &Path, repo: &str, digest: &Digest) -> PathBuf {
    root.join(format!("{repo}@sha256={}", digest.hex()))
}

/// Writes `signature-<n>` of an image under `root`.
pub fn place(root: &Path, repo: &str, digest: &Digest, n: u32, bytes: &[u8]) {
    let dir = image_dir(root, repo, digest);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("signature-{n}")), bytes).unwrap();
}

/// The names of the `signature-*` files of an image, sorted by number.
pub fn names(root: &Path, repo: &str, digest: &Digest) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(image_dir(root, repo, digest)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| {
        n.strip_prefix("signature-")
            .and_then(|x| x.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    });
    names
}

/// What the hostile server answers for a path.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Status, content type, body.
    Send(u16, &'static str, Vec<u8>),
    /// Status, ETag, body (application/octet-stream): a file a client
    /// can ask for conditionally next time.
    Tagged(u16, &'static str, Vec<u8>),
    /// 302 to the same path, forever.
    RedirectLoop,
    /// Accept, read the request, never answer (until the server stops).
    Stall,
}

/// `route(method, path)`.
type Route = dyn Fn(&str, &str) -> Answer + Send + Sync;

pub struct Hostile {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    /// Serves `route(path)` for every request, whatever its method.
    pub fn start(route: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Hostile {
        Hostile::start_with_methods(move |_, path| route(path))
    }

    /// Serves `route(method, path)` for every request (a request body is
    /// read, by its Content-Length, before the answer).
    pub fn start_with_methods(
        route: impl Fn(&str, &str) -> Answer + Send + Sync + 'static,
    ) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free 127.0.0.1 port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (route, requests, stop) = (route.clone(), requests.clone(), stop.clone());
                    std::thread::spawn(move || serve(stream, &*route, &requests, &stop));
                }
            });
        }
        Hostile {
            port,
            stop,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes accept()
    }
}

fn serve(stream: TcpStream, route: &Route, requests: &Mutex<Vec<String>>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("GET").to_string();
    let path = words.next().unwrap_or("/").to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).map_or(true, |n| n == 0) || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    // Drain the body (bounded: a test sends small ones) so that closing
    // the connection does not reset it under the client's feet.
    let mut body = vec![0u8; length.min(8 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    requests.lock().unwrap().push(path.clone());
    let mut stream = stream;
    let send = |stream: &mut TcpStream, status: u16, extra: String, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    match route(&method, &path) {
        Answer::Send(status, content_type, body) => send(
            &mut stream,
            status,
            format!("Content-Type: {content_type}\r\n"),
            &body,
        ),
        Answer::Tagged(status, etag, body) => send(
            &mut stream,
            status,
            format!("Content-Type: application/octet-stream\r\nETag: {etag}\r\n"),
            &body,
        ),
        Answer::RedirectLoop => {
            let head = format!(
                "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
        }
        Answer::Stall => {
            // Hold the connection open without answering: poll the stop
            // flag (bounded by the client's own timeout in practice).
            let mut sink = [0u8; 64];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            for _ in 0..300 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match stream.read(&mut sink) {
                    Ok(0) => break, // the client gave up
                    _ => continue,
                }
            }
        }
    }
}
