//! A stalled peer can never hang a command. Three faults no real server
//! produces on demand (from `peers::mock_http`): a black hole (accepts,
//! never answers), a slow loris (headers, then nothing) and a body that
//! stops halfway, each used as the registry of `stagex pallet`, the
//! lookaside of `stagex verify` and the mirror of `stagex fetch`, with
//! `STAGEX_TIMEOUT=2`. Each command must end with one clear message naming
//! the host. The 60 s cap below is only a safety net so a regression fails
//! instead of hanging the suite; the assertions are on the outcome.
use crate::pallet_support;
use crate::peers;
use crate::sign_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use peers::mock_http::{MockHttp, Reply};
use peers::tools::stagex;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;

/// The configured timeout, in seconds.
const TIMEOUT: &str = "2";
/// The safety net: a command still running after this is a hang.
const CAP: Duration = Duration::from_secs(60);

/// Runs `command` with `STAGEX_TIMEOUT=2`; panics if it is still running
/// after `CAP` (it is killed first).
fn run_bounded(command: &mut Command) -> Output {
    peers::tools::run_bounded(command.env("STAGEX_TIMEOUT", TIMEOUT), CAP)
}

/// Asserts a failure whose message names `host` and the timeout (in the
/// network layer's words).
fn assert_timed_out(output: &Output, host: &str, case: &str) {
    assert_failed_with(
        output,
        host,
        case,
        &[
            &format!("did not answer within {TIMEOUT} s"),
            "STAGEX_TIMEOUT",
        ],
    );
}

/// Asserts a failure whose message names `host` and holds every phrase.
fn assert_failed_with(output: &Output, host: &str, case: &str, phrases: &[&str]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("--- {case}:\n{text}");
    assert!(!output.status.success(), "{case}: succeeded:\n{text}");
    assert!(
        text.contains(host),
        "{case}: the host is not named:\n{text}"
    );
    assert!(
        phrases.iter().all(|p| text.contains(p)),
        "{case}: not a timeout message ({phrases:?}):\n{text}"
    );
}

/// The three faults for every request `stalled(path)` selects; other
/// requests get `honest(path)`.
fn fault_servers(
    stalled: fn(&str) -> bool,
    honest: impl Fn(&str, &str) -> Reply + Clone + Send + Sync + 'static,
    half_of: impl Fn(&str) -> Vec<u8> + Clone + Send + Sync + 'static,
) -> Vec<(&'static str, MockHttp)> {
    let loris = {
        let honest = honest.clone();
        MockHttp::start(move |method, path| {
            if stalled(path) {
                Reply::Stall {
                    declared: 1 << 20,
                    sent: Vec::new(),
                }
            } else {
                honest(method, path)
            }
        })
    };
    let half = MockHttp::start(move |method, path| {
        if stalled(path) {
            let whole = half_of(path);
            Reply::Stall {
                declared: whole.len() as u64,
                sent: whole[..whole.len() / 2].to_vec(),
            }
        } else {
            honest(method, path)
        }
    });
    vec![
        ("black hole", MockHttp::black_hole()),
        ("slow loris", loris),
        ("stalled halfway", half),
    ]
}

#[test]
fn a_stalled_registry_fails_pallet_naming_the_host() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let package = pallet_support::write_package(
        &out,
        "core-x",
        &[pallet_support::package_layer("core-x")],
        Default::default(),
    );
    let layout = Layout::open(out.join("core-x")).unwrap();
    let manifest = layout.read_blob(&package.manifest.digest).unwrap();
    let layers: Vec<String> = package.layers.iter().map(|d| d.to_string()).collect();
    let blobs = out.join("core-x/blobs/sha256");
    // Manifest and config answer honestly; the layer is the one that stalls
    // halfway (the other two faults stall from the first request).
    let blob = move |path: &str| -> Vec<u8> {
        let hex = path.rsplit("sha256:").next().unwrap_or("");
        std::fs::read(blobs.join(hex)).unwrap_or_default()
    };
    let honest = {
        let (blob, manifest) = (blob.clone(), manifest.clone());
        move |_: &str, path: &str| -> Reply {
            if path == "/v2/" {
                Reply::ok("application/json", b"{}")
            } else if path.contains("/manifests/") {
                Reply::ok(media_type::OCI_MANIFEST, &manifest)
            } else if path.contains("/blobs/") {
                Reply::ok("application/octet-stream", &blob(path))
            } else {
                Reply::status(404, "application/json", b"{}")
            }
        }
    };
    static LAYERS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LAYERS.set(layers).unwrap();
    let is_layer = |path: &str| {
        LAYERS
            .get()
            .unwrap()
            .iter()
            .any(|d| path.ends_with(&format!("/blobs/{d}")))
    };
    for (case, server) in fault_servers(is_layer, honest, blob) {
        // The black hole and loris stall from the first request; only the
        // half-blob server answers manifest and config first.
        let store = work
            .path()
            .join(format!("store-{}", case.replace(' ', "-")));
        let output = run_bounded(
            stagex()
                .arg("--root")
                .arg(work.path())
                .args(["pallet", "core-x:latest", "--no-verify", "--source"])
                .arg(format!("{}/stagex", server.host()))
                .arg("--store")
                .arg(&store),
        );
        assert_timed_out(&output, &server.host(), case);
        if case == "stalled halfway" {
            let seen = server.seen();
            assert!(
                seen.iter().any(|r| r.contains("/manifests/latest")),
                "{seen:?}"
            );
            let text = String::from_utf8_lossy(&output.stderr);
            assert!(text.contains("blob "), "names the blob: {text}");
        }
    }
}

#[test]
fn a_stalled_lookaside_fails_verify_naming_the_host() {
    let root = tempfile::tempdir().unwrap();
    sign_support::make_image(
        &root.path().join("out"),
        "core-x",
        "1.0",
        sign_support::Shape::Index,
        "net",
    );
    let keys = root.path().join("keys");
    sign_support::write_keys(&keys, &[&sign_support::key("alice")]);
    let signature = b"\x90\x0d not really a signature, but long enough to cut in half".to_vec();
    let is_signature = |path: &str| path.ends_with("/signature-1");
    let honest = |_: &str, _: &str| Reply::status(404, "text/plain", b"");
    let whole = move |_: &str| signature.clone();
    for (case, server) in fault_servers(is_signature, honest, whole) {
        let output = run_bounded(
            stagex()
                .arg("--root")
                .arg(root.path())
                .args(["verify", "core-x", "--threshold", "1", "--keys"])
                .arg(&keys)
                .arg("--lookaside")
                .arg(server.url("")),
        );
        // The lookaside GET (lookaside::fetch) words it its own way.
        assert_failed_with(&output, &server.host(), case, &["signature-1", "timed out"]);
    }
}

/// A repo root with one package `core-demo` fetched from `mirrors`.
fn fetch_repo(mirrors: &[String], body: &[u8]) -> tempfile::TempDir {
    use sha2::Digest;
    peers::demo_package::demo_root(mirrors, &hex::encode(sha2::Sha256::digest(body)))
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

const SOURCE: &[u8] = b"pretend this is a source tarball, cut in the middle\n";

#[test]
fn a_stalled_mirror_fails_fetch_naming_the_host_and_leaves_nothing() {
    let is_source = |path: &str| path.ends_with(".tar");
    let honest = |_: &str, _: &str| Reply::status(404, "text/plain", b"");
    let whole = |_: &str| SOURCE.to_vec();
    for (case, server) in fault_servers(is_source, honest, whole) {
        let root = fetch_repo(&[server.url("demo-1.0.tar")], SOURCE);
        let output = run_bounded(
            stagex()
                .arg("--root")
                .arg(root.path())
                .args(["fetch", "core-demo"]),
        );
        assert_timed_out(&output, &server.host(), case);
        let left = files_in(&root.path().join("fetch/core/demo"));
        assert!(left.is_empty(), "{case}: left behind: {left:?}");
    }
}

#[test]
fn a_stalled_mirror_fails_over_to_the_next() {
    let hole = MockHttp::black_hole();
    let good = MockHttp::start(|_, _| Reply::ok("application/octet-stream", SOURCE));
    let root = fetch_repo(
        &[hole.url("demo-1.0.tar"), good.url("demo-1.0.tar")],
        SOURCE,
    );
    let output = run_bounded(
        stagex()
            .arg("--root")
            .arg(root.path())
            .args(["fetch", "core-demo"]),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fetched = std::fs::read(root.path().join("fetch/core/demo/demo-1.0.tar")).unwrap();
    assert_eq!(fetched, SOURCE);
}

/// The same limits without the environment: a client built with its own
/// configuration (one second) gives a typed, retryable timeout.
#[test]
fn library_clients_time_out_with_their_own_configuration() {
    use stagex::net::{NetConfig, RegistryError};
    let hole = MockHttp::black_hole();
    let config = NetConfig::with_timeout(1);
    let client =
        stagex::registry::RegistryClient::with_config(&hole.host(), config.clone()).unwrap();
    let err = client.pull_manifest("stagex/core", "1").unwrap_err();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err:?}");
    assert!(
        err.is_retryable() && err.host() == Some(hole.host().as_str()),
        "{err:?}"
    );

    let lookaside =
        stagex::lookaside::http::HttpLookaside::with_config(&hole.url(""), config).unwrap();
    let digest = stagex::oci::digest::Digest::of_bytes(b"x");
    let err = stagex::lookaside::Lookaside::Http(lookaside)
        .read("stagex/core", &digest)
        .unwrap_err();
    let stagex::lookaside::StoreError::TimedOut { url, .. } = &err else {
        panic!("not a typed timeout: {err:?}");
    };
    assert!(url.contains(&hole.host()), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[test]
fn an_invalid_timeout_is_refused_with_the_variable_named() {
    let good = MockHttp::start(|_, _| Reply::ok("application/octet-stream", SOURCE));
    let root = fetch_repo(&[good.url("demo-1.0.tar")], SOURCE);
    let output = stagex()
        .arg("--root")
        .arg(root.path())
        .args(["fetch", "core-demo"])
        .env("STAGEX_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("STAGEX_TIMEOUT=\"soon\"") && stderr.contains("whole number of seconds"),
        "{stderr}"
    );
    assert!(
        good.seen().is_empty(),
        "asked the mirror anyway: {:?}",
        good.seen()
    );
}
