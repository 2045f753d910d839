//! Faults a real registry cannot be made to produce: a hostile or broken
//! server that sends blobs longer than their descriptor, wrong or short
//! blob bytes, manifests over the 4 MiB cap, manifest bytes that do not
//! match the digest asked for, statuses whose URL holds "404", mount
//! answers (202, 401), rate limits with Retry-After. The mock is
//! `peers::mock_http` (a std `TcpListener` server answering `GET /v2/`
//! with 200 and no auth challenge, so the client stays anonymous). Every
//! fault test has a matching honest answer that must succeed, so a failure
//! cannot come from the mock itself.
use crate::peers;

use std::path::Path;
use std::time::Duration;

use peers::mock_http::{MockHttp, Reply};
use stagex::net::RegistryError;
use stagex::oci::descriptor::Descriptor;
use stagex::oci::digest::Digest;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;
use stagex::progress::NoProgress;
use stagex::registry::{Mount, RegistryClient};

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
fn blob_server(body: Vec<u8>) -> MockHttp {
    MockHttp::registry(move |_, path| {
        if path.starts_with("/v2/stagex/core/blobs/sha256:") {
            Reply::ok("application/octet-stream", &body)
        } else {
            Reply::status(404, "application/json", br#"{"errors":[]}"#)
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
    (format!("{err:#}"), left, server.seen())
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
    let requests = server.seen();
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
fn manifest_server(body: Vec<u8>) -> MockHttp {
    MockHttp::registry(move |_, path| {
        if path.starts_with("/v2/stagex/core/manifests/") {
            Reply::ok(media_type::OCI_INDEX, &body)
        } else {
            Reply::status(404, "application/json", br#"{"errors":[]}"#)
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
    let requests = server.seen();
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

/// A registry answering every manifest request with `status` (and an
/// optional `Retry-After`).
fn status_server(status: u16, body: &'static [u8], retry_after: Option<&'static str>) -> MockHttp {
    MockHttp::registry(move |_, path| {
        if path.starts_with("/v2/stagex/core/manifests/") {
            let reply = Reply::status(status, "application/json", body);
            match retry_after {
                Some(v) => reply.with_header("Retry-After", v),
                None => reply,
            }
        } else {
            Reply::status(404, "application/json", b"{}")
        }
    })
}

#[test]
fn a_server_error_for_a_tag_holding_404_is_not_not_found() {
    // The URL of tag 1.404 contains "404": only the status may decide.
    let outage = status_server(500, b"internal error", None);
    let client = RegistryClient::new(&outage.host()).unwrap();
    let err = client.pull_manifest("stagex/core", "1.404").unwrap_err();
    assert!(
        matches!(err, RegistryError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert!(!err.is_not_found() && err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("/stagex/core:1.404") && text.contains("HTTP 500"),
        "{text}"
    );

    // The honest counterpart: a real 404 with an OCI code is not found.
    let missing = status_server(
        404,
        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        None,
    );
    let client = RegistryClient::new(&missing.host()).unwrap();
    let err = client.pull_manifest("stagex/core", "1.404").unwrap_err();
    assert!(err.is_not_found() && !err.is_retryable(), "{err:?}");
}

#[test]
fn rate_limits_carry_retry_after() {
    let limited = status_server(
        429,
        br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        Some("3"),
    );
    let client = RegistryClient::new(&limited.host()).unwrap();
    let err = client.pull_manifest("stagex/core", "1").unwrap_err();
    assert!(matches!(err, RegistryError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(err.is_retryable());
}

/// A registry answering mount requests with `status`.
fn mount_server(status: u16) -> MockHttp {
    MockHttp::registry(move |method, path| {
        if method == "POST" && path.starts_with("/v2/stagex/to/blobs/uploads/?mount=sha256") {
            Reply::status(status, "application/json", b"")
                .with_header("Location", "/v2/stagex/to/blobs/uploads/u1")
        } else {
            Reply::status(404, "application/json", b"{}")
        }
    })
}

#[test]
fn mount_tells_not_mounted_from_failure() {
    let digest = blob_descriptor().digest;
    let accepted = mount_server(202);
    let client = RegistryClient::new(&accepted.host()).unwrap();
    assert_eq!(
        client
            .mount_blob("stagex/to", "stagex/from", &digest)
            .unwrap(),
        Mount::NotMounted
    );
    assert!(
        accepted
            .seen()
            .iter()
            .any(|r| r.starts_with("POST ") && r.contains("from=stagex%2Ffrom")),
        "{:?}",
        accepted.seen()
    );

    let created = mount_server(201);
    let client = RegistryClient::new(&created.host()).unwrap();
    assert_eq!(
        client
            .mount_blob("stagex/to", "stagex/from", &digest)
            .unwrap(),
        Mount::Mounted
    );

    // Refused credentials are an error, never "not mounted".
    let refused = mount_server(401);
    let client = RegistryClient::new(&refused.host()).unwrap();
    let err = client
        .mount_blob("stagex/to", "stagex/from", &digest)
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains(&refused.host()), "{err}");
}

/// Records progress events as text.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl stagex::progress::Progress for Recorder {
    fn event(&self, event: stagex::progress::Event<'_>) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
}

#[test]
fn a_pull_reports_progress_as_events() {
    let server = blob_server(BLOB.to_vec());
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path().join("oci")).unwrap();
    let client = RegistryClient::new(&server.host()).unwrap();
    let recorder = Recorder::default();
    client
        .pull_blob("stagex/core", &blob_descriptor(), &layout, &recorder)
        .unwrap();
    let events = recorder.0.into_inner().unwrap();
    assert!(events.first().unwrap().starts_with("Started"), "{events:?}");
    assert!(
        events[0].contains(&format!("total: Some({}), unit: Bytes", BLOB.len())),
        "{events:?}"
    );
    let advanced: u64 = events
        .iter()
        .filter_map(|e| e.split("amount: ").nth(1))
        .map(|n| n.trim_end_matches(" }").parse::<u64>().unwrap())
        .sum();
    assert_eq!(advanced, BLOB.len() as u64, "{events:?}");
    assert!(events.last().unwrap().starts_with("Finished"), "{events:?}");
}

/// A registry that opens uploads and then answers `put` to the bytes.
fn upload_server(put: fn() -> Reply) -> MockHttp {
    MockHttp::registry(move |method, path| match method {
        "POST" if path == "/v2/stagex/core/blobs/uploads/" => {
            Reply::status(202, "application/json", b"")
                .with_header("Location", "/v2/stagex/core/blobs/uploads/u1?_state=x")
        }
        "PUT" if path.starts_with("/v2/stagex/core/blobs/uploads/u1?_state=x&digest=sha256%3A") => {
            put()
        }
        _ => Reply::status(404, "application/json", b"{}"),
    })
}

#[test]
fn an_upload_the_registry_stops_taking_fails_on_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path().join("oci")).unwrap();
    // Larger than the loopback socket buffers: the body cannot all leave.
    let bytes = vec![9u8; 24 << 20];
    let layer = Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        layout.write_blob(&bytes).unwrap(),
        bytes.len() as u64,
    );
    let honest = Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        layout.write_blob(BLOB).unwrap(),
        BLOB.len() as u64,
    );
    let config = stagex::net::NetConfig::with_timeout(1);
    // Silent after the headers: the body stalls (big blob) or the answer
    // never comes (small one). Both end on the idle timeout.
    let server = upload_server(|| Reply::Silent);
    let client = RegistryClient::with_config(&server.host(), config.clone()).unwrap();
    for blob in [&layer, &honest] {
        let start = std::time::Instant::now();
        let err = client
            .upload_blob("stagex/core", blob, &layout, &NoProgress)
            .unwrap_err();
        assert!(matches!(err, RegistryError::Timeout { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(start.elapsed() < Duration::from_secs(20), "{err}");
    }
    // The same upload answered 201 succeeds, through the Location given.
    let server = upload_server(|| Reply::status(201, "application/json", b""));
    let client = RegistryClient::with_config(&server.host(), config).unwrap();
    client
        .upload_blob("stagex/core", &honest, &layout, &NoProgress)
        .unwrap();
    let seen = server.seen();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("PUT /v2/stagex/core/blobs/uploads/u1?_state=x&digest=")),
        "{seen:?}"
    );
}

/// A registry with a token service: `GET /v2/` asks for a bearer token
/// from `/token` on the same mock; blobs are absent (404), mounts 202. The
/// first `refused` blob HEADs are answered 401 (a token that expired).
fn token_server(refused: usize) -> MockHttp {
    let port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let realm = port.clone();
    let heads = std::sync::atomic::AtomicUsize::new(0);
    let server = MockHttp::start(move |method, path| {
        if method == "HEAD" && heads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < refused {
            return Reply::status(401, "application/json", br#"{"errors":[]}"#);
        }
        let realm = realm.load(std::sync::atomic::Ordering::SeqCst);
        if path == "/v2/" {
            Reply::status(401, "application/json", b"{}").with_header(
                "WWW-Authenticate",
                &format!("Bearer realm=\"http://127.0.0.1:{realm}/token\",service=\"mock\""),
            )
        } else if path.starts_with("/token?") {
            Reply::ok("application/json", br#"{"token":"t0k","expires_in":300}"#)
        } else if method == "POST" {
            Reply::status(202, "application/json", b"")
                .with_header("Location", "/v2/stagex/core/blobs/uploads/u1")
        } else {
            Reply::status(404, "application/json", br#"{"errors":[]}"#)
        }
    });
    port.store(server.port, std::sync::atomic::Ordering::SeqCst);
    server
}

#[test]
fn a_bearer_token_serves_every_request_of_its_scope() {
    let server = token_server(0);
    let client = RegistryClient::new(&server.host()).unwrap();
    let digest = blob_descriptor().digest;
    for _ in 0..5 {
        assert!(!client.blob_exists("stagex/core", &digest).unwrap());
    }
    for _ in 0..3 {
        assert_eq!(
            client
                .mount_blob("stagex/core", "stagex/other", &digest)
                .unwrap(),
            Mount::NotMounted
        );
    }
    let seen = server.seen();
    let count = |prefix: &str| seen.iter().filter(|r| r.starts_with(prefix)).count();
    // One token per scope (pull, then push), not one per request.
    assert_eq!(count("GET /token?"), 2, "{seen:?}");
    assert_eq!(count("HEAD /v2/stagex/core/blobs/"), 5, "{seen:?}");
    assert_eq!(count("POST /v2/stagex/core/blobs/uploads/"), 3, "{seen:?}");
    // One probe per token asked for.
    assert_eq!(
        seen.iter().filter(|r| *r == "GET /v2/").count(),
        2,
        "{seen:?}"
    );
}

#[test]
fn a_refused_token_is_replaced_once_and_the_request_sent_again() {
    let server = token_server(1);
    let client = RegistryClient::new(&server.host()).unwrap();
    let digest = blob_descriptor().digest;
    assert!(!client.blob_exists("stagex/core", &digest).unwrap());
    assert!(!client.blob_exists("stagex/core", &digest).unwrap());
    let seen = server.seen();
    let count = |prefix: &str| seen.iter().filter(|r| r.starts_with(prefix)).count();
    assert_eq!(count("GET /token?"), 2, "{seen:?}");
    assert_eq!(count("HEAD /v2/stagex/core/blobs/"), 3, "{seen:?}");
    // Refused every time: the 401 reaches the caller, after one renewal.
    let server = token_server(usize::MAX);
    let client = RegistryClient::new(&server.host()).unwrap();
    let err = client.blob_exists("stagex/core", &digest).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        server
            .seen()
            .iter()
            .filter(|r| r.starts_with("GET /token?"))
            .count(),
        2
    );
}
