//! Faults a real registry cannot be made to produce: a hostile or broken
//! server that sends blobs longer than their descriptor, wrong or short
//! blob bytes, manifests over the 4 MiB cap, or manifest bytes that do not
//! match the digest asked for. A mock is the only way to get these, so this
//! file holds a tiny single-threaded HTTP/1.1 server (std `TcpListener` on a
//! free 127.0.0.1 port) that speaks just what `RegistryClient` asks:
//! `GET /v2/` (200, no auth challenge, so oci-client stays anonymous), then
//! `GET /v2/<repo>/blobs/<digest>` or `/v2/<repo>/manifests/<ref>`.
//! Each answer sets `Connection: close`, so every request is a new
//! connection and the one thread serves them in order. Every fault test has
//! a matching honest answer that must succeed, so a failure cannot come
//! from the mock itself.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use stagex::oci::descriptor::Descriptor;
use stagex::oci::digest::Digest;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;
use stagex::progress::NoProgress;
use stagex::registry::RegistryClient;

/// What the mock answers for a path: status, content type, body.
type Route = dyn Fn(&str) -> (u16, &'static str, Vec<u8>) + Send + Sync;

struct MockRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl MockRegistry {
    /// Serves `route` for everything but `/v2/` (always 200).
    fn start(route: impl Fn(&str) -> (u16, &'static str, Vec<u8>) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free 127.0.0.1 port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        let thread = {
            let (stop, requests) = (Arc::clone(&stop), Arc::clone(&requests));
            std::thread::spawn(move || {
                // Bounded: at most 64 connections, and Drop wakes it to stop.
                for _ in 0..64 {
                    let Ok((stream, _)) = listener.accept() else {
                        return;
                    };
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    serve(stream, &*route, &requests);
                }
            })
        };
        MockRegistry {
            port,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for MockRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head and writes one answer. I/O errors (the client
/// hanging up on a hostile answer) are expected and ignored.
fn serve(stream: TcpStream, route: &Route, requests: &Mutex<Vec<String>>) {
    let timeout = Some(Duration::from_secs(30)); // a stuck client cannot block the test forever
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    requests.lock().unwrap().push(format!("{method} {path}"));
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        (405, "text/plain", b"only GET".to_vec())
    } else if path == "/v2/" {
        (200, "application/json", b"{}".to_vec())
    } else {
        route(path)
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Docker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = &stream;
    let _ = stream.write_all(head.as_bytes());
    if method == "GET" {
        let _ = stream.write_all(&body);
    }
    let _ = stream.flush();
}

/// Every file under the layout's blob directory (blobs and temporaries).
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found.sort();
    found
}

const BLOB: &[u8] = b"the honest layer bytes";

fn blob_descriptor() -> Descriptor {
    Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        Digest::of_bytes(BLOB),
        BLOB.len() as u64,
    )
}

/// A registry that answers every blob request with `body`.
fn blob_server(body: Vec<u8>) -> MockRegistry {
    MockRegistry::start(move |path| {
        if path.starts_with("/v2/stagex/core/blobs/sha256:") {
            (200, "application/octet-stream", body.clone())
        } else {
            (404, "application/json", br#"{"errors":[]}"#.to_vec())
        }
    })
}

fn pull_blob_error(body: Vec<u8>) -> (String, Vec<String>, Vec<String>) {
    let server = blob_server(body);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path().join("oci")).unwrap();
    let client = RegistryClient::new(&server.host()).unwrap();
    let err = client
        .pull_blob("stagex/core", &blob_descriptor(), &layout, &NoProgress)
        .expect_err("a bad blob must not be accepted");
    assert!(!layout.has_blob(&blob_descriptor().digest));
    let left = files_under(&dir.path().join("oci/blobs"));
    (format!("{err:#}"), left, server.requests())
}

#[test]
fn honest_blob_is_stored() {
    let server = blob_server(BLOB.to_vec());
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path().join("oci")).unwrap();
    let client = RegistryClient::new(&server.host()).unwrap();
    let desc = blob_descriptor();
    client
        .pull_blob("stagex/core", &desc, &layout, &NoProgress)
        .unwrap();
    assert_eq!(layout.read_blob(&desc.digest).unwrap(), BLOB);
    assert_eq!(
        files_under(&dir.path().join("oci/blobs")),
        vec![layout.blob_path(&desc.digest).display().to_string()]
    );
    let requests = server.requests();
    assert!(
        requests.contains(&format!("GET /v2/stagex/core/blobs/{}", desc.digest)),
        "{requests:?}"
    );
}

#[test]
fn blob_longer_than_its_descriptor_is_refused_and_nothing_stored() {
    // A hostile registry streaming far more than declared (here 8 MiB for a
    // 22-byte descriptor) must be cut off at the declared size.
    let mut body = BLOB.to_vec();
    body.resize(8 << 20, b'x');
    let (err, left, requests) = pull_blob_error(body);
    assert!(
        err.contains("more than the 22 bytes the descriptor declares"),
        "{err}"
    );
    assert!(
        err.contains("/stagex/core/blobs/sha256:"),
        "names the URL: {err}"
    );
    assert!(left.is_empty(), "left in the layout: {left:?}");
    assert!(
        requests.iter().any(|r| r.contains("/blobs/")),
        "{requests:?}"
    );
}

#[test]
fn blob_with_wrong_or_missing_bytes_is_refused_and_nothing_stored() {
    let mut wrong = BLOB.to_vec();
    wrong[0] ^= 1; // same size, other digest
    let short = BLOB[..BLOB.len() - 3].to_vec();
    for (what, body) in [("wrong", wrong), ("short", short), ("empty", Vec::new())] {
        let (err, left, _) = pull_blob_error(body);
        assert!(
            err.contains(&blob_descriptor().digest.to_string()),
            "{what}: the error names the digest: {err}"
        );
        assert!(
            err.to_lowercase().contains("digest") || err.contains("bytes"),
            "{what}: {err}"
        );
        assert!(left.is_empty(), "{what}: left in the layout: {left:?}");
    }
}

const MANIFEST: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// A registry that answers every manifest request with `body`.
fn manifest_server(body: Vec<u8>) -> MockRegistry {
    MockRegistry::start(move |path| {
        if path.starts_with("/v2/stagex/core/manifests/") {
            (200, media_type::OCI_INDEX, body.clone())
        } else {
            (404, "application/json", br#"{"errors":[]}"#.to_vec())
        }
    })
}

#[test]
fn honest_manifest_is_returned_exactly() {
    let server = manifest_server(MANIFEST.to_vec());
    let client = RegistryClient::new(&server.host()).unwrap();
    let digest = Digest::of_bytes(MANIFEST);
    for reference in ["latest".to_string(), digest.to_string()] {
        let (bytes, got) = client.pull_manifest("stagex/core", &reference).unwrap();
        assert_eq!(bytes, MANIFEST, "{reference}");
        assert_eq!(got, digest, "{reference}");
    }
    let requests = server.requests();
    assert!(
        requests.contains(&format!("GET /v2/stagex/core/manifests/{digest}")),
        "{requests:?}"
    );
}

#[test]
fn manifest_over_4_mib_is_refused() {
    // Valid JSON, just padded past the cap.
    let mut body = br#"{"schemaVersion":2,"manifests":[],"pad":""#.to_vec();
    body.resize((4 << 20) + 1, b' ');
    body.extend_from_slice(br#""}"#);
    let server = manifest_server(body);
    let client = RegistryClient::new(&server.host()).unwrap();
    let err = client.pull_manifest("stagex/core", "latest").unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("over the 4194304-byte limit"), "{err}");
    assert!(
        err.contains("/stagex/core:latest"),
        "names the reference: {err}"
    );
}

#[test]
fn manifest_not_matching_the_requested_digest_is_refused() {
    let asked = Digest::of_bytes(MANIFEST);
    // Still valid JSON, one byte more: another digest.
    let mut other = MANIFEST.to_vec();
    other.push(b' ');
    let server = manifest_server(other);
    let client = RegistryClient::new(&server.host()).unwrap();
    let err = client
        .pull_manifest("stagex/core", &asked.to_string())
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains(&asked.to_string()), "names the digest: {err}");
    assert!(err.to_lowercase().contains("digest"), "{err}");
}
