//! The signature mirror writer against a real nginx WebDAV server (PUT
//! behind basic auth, anonymous GET/HEAD): uploads only what is missing by
//! content, keeps numbering contiguous, never replaces a file (nginx
//! ignores `If-None-Match: *`, so HEAD guards the PUT), reads back what it
//! wrote, and names the mirror and the ways to give credentials on a 401.
use crate::peers;

use std::path::Path;

use peers::nginx::Nginx;
use stagex::lookaside::{Lookaside, StoreError};
use stagex::net::block_on;
use stagex::oci::digest::Digest;

fn with_credentials(url: &str, user: &str, password: &str) -> String {
    url.replacen("://", &format!("://{user}:{password}@"), 1)
}

fn on_disk(root: &Path, digest: &Digest, name: &str) -> Option<Vec<u8>> {
    std::fs::read(
        root.join(format!("stagex/core-x@sha256={}", digest.hex()))
            .join(name),
    )
    .ok()
}

#[test]
fn webdav_uploads_only_missing_blobs_contiguously_and_never_overwrites() {
    let root = tempfile::tempdir().unwrap();
    let Some(nginx) = Nginx::start_webdav(root.path(), false, "mirror", "s3cret") else {
        return;
    };
    let mirror =
        Lookaside::parse_mirror(&with_credentials(&nginx.url(), "mirror", "s3cret")).unwrap();
    assert_eq!(mirror.describe(), nginx.url(), "credentials never shown");
    let digest = Digest::of_bytes(b"manifest");

    let first = block_on(mirror.put_missing(
        "stagex/core-x",
        &digest,
        &[b"one".to_vec(), b"two".to_vec()],
    ))
    .unwrap_or_else(|e| panic!("{e}\n{}", nginx.logs()));
    let names: Vec<&str> = first.uploaded.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["signature-1", "signature-2"]);
    assert!(first.present.is_empty());
    assert_eq!(
        on_disk(root.path(), &digest, "signature-2").unwrap(),
        b"two"
    );

    // Same content again plus one new blob: exactly one upload, at 3.
    let second = block_on(mirror.put_missing(
        "stagex/core-x",
        &digest,
        &[b"two".to_vec(), b"three".to_vec(), b"one".to_vec()],
    ))
    .unwrap();
    assert_eq!(second.uploaded.len(), 1);
    assert_eq!(second.uploaded[0].name, "signature-3");
    assert_eq!(second.present.len(), 2);
    assert_eq!(
        on_disk(root.path(), &digest, "signature-3").unwrap(),
        b"three"
    );

    // A file hidden behind a gap (signature-5, no 4) is never replaced: the
    // next blob fills 4, the one after skips 5 (HEAD says taken) to 6.
    let dir = root
        .path()
        .join(format!("stagex/core-x@sha256={}", digest.hex()));
    std::fs::write(dir.join("signature-5"), b"someone else's").unwrap();
    let third = block_on(mirror.put_missing(
        "stagex/core-x",
        &digest,
        &[b"four".to_vec(), b"six".to_vec()],
    ))
    .unwrap();
    let names: Vec<&str> = third.uploaded.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["signature-4", "signature-6"]);
    assert_eq!(
        on_disk(root.path(), &digest, "signature-5").unwrap(),
        b"someone else's"
    );
    let existing = block_on(mirror.existing("stagex/core-x", &digest))
        .unwrap()
        .len();
    assert_eq!(existing, 6);
}

#[test]
fn webdav_without_credentials_says_which_mirror_and_how_to_log_in() {
    let root = tempfile::tempdir().unwrap();
    let Some(nginx) = Nginx::start_webdav(root.path(), false, "mirror", "s3cret") else {
        return;
    };
    let digest = Digest::of_bytes(b"m");
    for url in [
        nginx.url(),
        with_credentials(&nginx.url(), "mirror", "wrong"),
    ] {
        let mirror = Lookaside::parse_mirror(&url).unwrap();
        let err =
            block_on(mirror.put_missing("stagex/core-x", &digest, &[b"sig".to_vec()])).unwrap_err();
        assert!(matches!(err, StoreError::Unauthorized { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&nginx.url()), "{text}");
        // Where to type them: this mirror's own URL, scheme and port kept.
        let typed = nginx.url().replacen("://", "://USER:PASSWORD@", 1);
        assert!(text.contains(typed.trim_end_matches('/')), "{text}");
        assert!(
            text.contains("STAGEX_MIRROR_USER") && text.contains(".netrc"),
            "{text}"
        );
        assert!(!text.contains("wrong"), "password leaked: {text}");
    }
    assert!(on_disk(root.path(), &digest, "signature-1").is_none());
}

#[test]
fn a_soft_404_mirror_is_an_error_not_an_empty_list() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<html>not here</html>").unwrap();
    let Some(nginx) = Nginx::start(root.path(), false, "error_page 404 =200 /index.html;") else {
        return;
    };
    let mirror = Lookaside::parse_mirror(&nginx.url()).unwrap();
    let err = block_on(mirror.existing("stagex/core-x", &Digest::of_bytes(b"m"))).unwrap_err();
    assert!(matches!(err, StoreError::SoftNotFound { .. }), "{err}");
}
