//! `stagex fetch` against real HTTP servers on 127.0.0.1: mirror fallback,
//! hash checking with nothing left behind, recovery after an interrupted
//! download, keeping valid files and replacing invalid ones, file:// mirrors.
use crate::peers;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use peers::demo_package::demo_root;
use peers::http_server::HttpServer;
use peers::tools::stagex;
use sha2::{Digest, Sha256};

const BODY: &[u8] = b"pretend this is a source tarball\n";

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn fetch(root: &Path) -> std::process::Output {
    stagex()
        .arg("--root")
        .arg(root)
        .args(["fetch", "core-demo"])
        .output()
        .unwrap()
}

fn fetched(root: &Path) -> Vec<String> {
    let dir = root.join("fetch/core/demo");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn served_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("good")).unwrap();
    std::fs::write(dir.path().join("good/demo-1.0.tar"), BODY).unwrap();
    dir
}

#[test]
fn first_mirror_404_then_second_mirror_is_used_and_reruns_skip() {
    let served = served_dir();
    let Some(server) = HttpServer::start(served.path()) else {
        return;
    };
    let root = demo_root(
        &[server.url("missing/{file}"), server.url("good/{file}")],
        &sha(BODY),
    );
    let out = fetch(root.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("good/demo-1.0.tar"), "{stdout}");
    let file = root.path().join("fetch/core/demo/demo-1.0.tar");
    assert_eq!(std::fs::read(&file).unwrap(), BODY);

    // Present and valid: kept, not downloaded again.
    let out = fetch(root.path());
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok "),
        "{out:?}"
    );

    // Present but invalid: replaced.
    std::fs::write(&file, b"corrupt").unwrap();
    let out = fetch(root.path());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("replaced"));
    assert_eq!(std::fs::read(&file).unwrap(), BODY);
    assert_eq!(fetched(root.path()), ["demo-1.0.tar"]);
}

#[test]
fn wrong_hash_is_an_error_and_leaves_no_file() {
    let served = served_dir();
    let Some(server) = HttpServer::start(served.path()) else {
        return;
    };
    let wrong = sha(b"something else");
    let root = demo_root(&[server.url("good/{file}")], &wrong);
    let out = fetch(root.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
    assert!(stderr.contains(&wrong), "{stderr}");
    assert!(
        stderr.contains(&server.url("good/demo-1.0.tar")),
        "{stderr}"
    );
    assert!(
        fetched(root.path()).is_empty(),
        "{:?}",
        fetched(root.path())
    );
}

/// Serves `BODY` with a full Content-Length, but on the first connection
/// sends only half of it and closes.
fn flaky_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                BODY.len()
            );
            let _ = stream.write_all(header.as_bytes());
            let body = if n == 0 {
                &BODY[..BODY.len() / 2]
            } else {
                BODY
            };
            let _ = stream.write_all(body);
            let _ = stream.flush();
        }
    });
    (port, count)
}

#[test]
fn interrupted_download_leaves_nothing_and_the_next_run_completes() {
    let (port, count) = flaky_server();
    let root = demo_root(&[format!("http://127.0.0.1:{port}/{{file}}")], &sha(BODY));
    let out = fetch(root.path());
    assert!(!out.status.success(), "{out:?}");
    assert!(
        fetched(root.path()).is_empty(),
        "{:?}",
        fetched(root.path())
    );
    let out = fetch(root.path());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(
        std::fs::read(root.path().join("fetch/core/demo/demo-1.0.tar")).unwrap(),
        BODY
    );
}

#[test]
fn file_mirrors_are_copied_and_verified() {
    let served = served_dir();
    let url = format!("file://{}/good/{{file}}", served.path().display());
    let root = demo_root(&[url], &sha(BODY));
    let out = fetch(root.path());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fetched(root.path()), ["demo-1.0.tar"]);
}
