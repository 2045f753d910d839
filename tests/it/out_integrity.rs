//! Owns: the tests of "nothing is vouched for without checking its bytes"
//! (issue 17, section 1): `verify`, `sign`, `publish --dry-run`, `digests`
//! and `digests --check` refuse an `out/` image whose layer, config or
//! manifest blob is corrupt, with one error naming the image, the blob,
//! both digests and the fix, and say nothing good about it; and the blob
//! verdict cache: a second check hashes nothing, a touched blob is hashed
//! again, a rewritten one (its mtime put back) is caught.
use crate::peers;
use crate::publish_support;
use crate::sign_support;

use std::fs::{File, FileTimes};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use peers::tools::{free_port, stagex_in, text};
use publish_support::{make_release, publish, Package};
use stagex::image::integrity::{check_images, BlobRole};
use stagex::image::verdicts::Verdicts;
use stagex::image::{IntegrityError, OutDir};
use stagex::oci::descriptor::Descriptor;
use stagex::oci::digest::Digest;
use stagex::oci::json::JsonBlob;
use stagex::oci::layout::Layout;
use stagex::oci::manifest::{ImageIndex, ImageManifest};
use stagex::oci::media_type;

/// `stagex --root ROOT ARGS...` with the verdict cache in `ROOT/cache`.
fn run(root: &Path, args: &[&str]) -> Output {
    stagex_in(root, args)
        .env("STAGEX_BLOB_VERDICTS", root.join("cache/blob-verdicts"))
        .env("STAGEX_SIGNATURE_CACHE", "off")
        .output()
        .unwrap()
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "stagex failed: {}", text(&output));
    output
}

/// A release of two images (index -> manifest -> config + one layer),
/// digests/core.txt, and alice's key trusted (her secret key returned).
fn release(root: &Path) -> (Vec<Package>, PathBuf) {
    let packages = make_release(root, "core", 2, 64 * 1024, 17);
    let alice = sign_support::key("alice");
    sign_support::write_keys(&root.join("keys"), &[&alice]);
    (packages, sign_support::write_secret(root, "alice", &alice))
}

/// The per-platform manifest of `package`, parsed.
fn manifest(root: &Path, package: &Package) -> ImageManifest {
    let layout = Layout::open(root.join("out").join(&package.name)).unwrap();
    serde_json::from_slice(&layout.read_blob(&package.manifest).unwrap()).unwrap()
}

fn blob_path(root: &Path, package: &Package, digest: &Digest) -> PathBuf {
    root.join("out")
        .join(&package.name)
        .join("blobs/sha256")
        .join(digest.hex())
}

/// Flips one bit in the middle of `path`, in place; returns the digest
/// the bytes have now.
fn flip_bit(path: &Path) -> Digest {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(path, &bytes).unwrap();
    Digest::of_bytes(&bytes)
}

/// The error names the image, the blob, what it should and does hash to,
/// and how to get good bytes back.
fn assert_names_the_blob(all: &str, image: &str, role: &str, expected: &Digest, actual: &Digest) {
    for want in [
        format!("image {image}: {role} blob {expected} is corrupt"),
        format!("hash to {actual}"),
        format!("expected {expected}"),
        format!("stagex build {image}"),
        "stagex preseed".to_string(),
    ] {
        assert!(all.contains(&want), "{want:?} missing from:\n{all}");
    }
}

#[test]
fn verify_refuses_an_image_with_a_corrupt_layer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, secret) = release(root);
    ok(run(root, &["sign", "--key", secret.to_str().unwrap()]));
    let verified = ok(run(root, &["verify", "--threshold", "1"]));
    assert_eq!(
        text(&verified).matches(" met").count(),
        2,
        "{}",
        text(&verified)
    );

    let layer = manifest(root, &packages[1]).layers[0].digest.clone();
    let actual = flip_bit(&blob_path(root, &packages[1], &layer));
    let refused = run(root, &["verify", "--threshold", "1"]);
    let all = text(&refused);
    assert!(
        !refused.status.success(),
        "verified a corrupt image:\n{all}"
    );
    assert!(!all.contains(" met"), "{all}");
    assert_names_the_blob(&all, "core-p1", "layer", &layer, &actual);
    // The intact image alone still verifies.
    ok(run(root, &["verify", "--threshold", "1", "core-p0"]));
}

#[test]
fn sign_refuses_to_sign_over_a_corrupt_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, secret) = release(root);
    let config = manifest(root, &packages[0]).config.digest;
    let actual = flip_bit(&blob_path(root, &packages[0], &config));
    let refused = run(root, &["sign", "--key", secret.to_str().unwrap()]);
    let all = text(&refused);
    assert!(!refused.status.success(), "signed a corrupt image:\n{all}");
    assert_names_the_blob(&all, "core-p0", "config", &config, &actual);
    assert!(
        !root.join("signatures").exists(),
        "a signature was written:\n{all}"
    );
}

#[test]
fn publish_dry_run_refuses_a_corrupt_layer_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, secret) = release(root);
    // Nothing listens there: the check must come before any request.
    let ns = format!("127.0.0.1:{}/stagex", free_port());
    publish_support::sign_all(root, &secret, &ns);
    let layer = manifest(root, &packages[0]).layers[0].digest.clone();
    let actual = flip_bit(&blob_path(root, &packages[0], &layer));
    let refused = publish(
        root,
        &ns,
        &["--registry", &ns, "--threshold", "1", "--dry-run"],
    )
    .env("STAGEX_BLOB_VERDICTS", "off")
    .output()
    .unwrap();
    let all = text(&refused);
    assert!(!refused.status.success(), "the dry run passed:\n{all}");
    assert_names_the_blob(&all, "core-p0", "layer", &layer, &actual);
    assert!(all.contains("nothing was pushed"), "{all}");
}

#[test]
fn digests_check_hashes_the_manifest_instead_of_trusting_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, _) = release(root);
    let matched = ok(run(root, &["digests", "--check"]));
    assert!(
        text(&matched).contains("2 match, 0 mismatch"),
        "{}",
        text(&matched)
    );
    let listed = std::fs::read(root.join("digests/core.txt")).unwrap();

    // The index still names the manifest; the manifest's bytes changed.
    let expected = packages[0].manifest.clone();
    let actual = flip_bit(&blob_path(root, &packages[0], &expected));
    for args in [&["digests", "--check"][..], &["digests"][..]] {
        let refused = run(root, args);
        let all = text(&refused);
        assert!(!refused.status.success(), "{args:?} passed:\n{all}");
        assert!(!all.contains("match "), "{args:?}: {all}");
        assert_names_the_blob(&all, "core-p0", "manifest", &expected, &actual);
    }
    assert_eq!(
        std::fs::read(root.join("digests/core.txt")).unwrap(),
        listed,
        "digests/core.txt was rewritten from a corrupt image"
    );
}

/// Waits until the file system's clock has moved past `path`'s ctime, so
/// that any later change of `path` gets another ctime (file times tick
/// coarsely: two writes in one tick can leave the same times).
fn wait_for_the_next_tick(path: &Path) {
    let ctime = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    let probe = path.with_extension("tick");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::fs::write(&probe, b"tick").unwrap();
        if ctime(&probe) > ctime(path) {
            break;
        }
        assert!(Instant::now() < deadline, "the file clock did not move");
        std::thread::yield_now();
    }
    std::fs::remove_file(probe).unwrap();
}

#[test]
fn a_second_check_hashes_nothing_and_a_changed_blob_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (packages, _) = release(root);
    let out = OutDir::open(root.join("out"));
    let ids: Vec<String> = packages.iter().map(|p| p.name.clone()).collect();
    let cache = root.join("cache/blob-verdicts");
    // A fresh `Verdicts` from the file is what the next command sees.
    // Racy window zero: the blobs were just written (see `verdicts`).
    let command = || Verdicts::open(Some(cache.clone())).with_racy_window(Duration::ZERO);
    let layer = manifest(root, &packages[0]).layers[0].digest.clone();
    let layer_path = blob_path(root, &packages[0], &layer);
    wait_for_the_next_tick(&layer_path);

    let first = check_images(&out, &ids, &command()).unwrap();
    assert_eq!((first.hashed, first.reused, first.manifests), (4, 0, 4));
    let written = std::fs::read_to_string(&cache).unwrap();
    assert!(written.contains(layer.hex()), "{written}");
    let second = check_images(&out, &ids, &command()).unwrap();
    assert_eq!(
        (second.hashed, second.reused, second.bytes_hashed),
        (0, 4, 0)
    );

    // Touched (same bytes, another mtime): hashed again, still good.
    let touched_mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(86400);
    set_mtime(&layer_path, touched_mtime);
    let touched = check_images(&out, &ids, &command()).unwrap();
    assert_eq!((touched.hashed, touched.reused), (1, 3));

    // Rewritten with one bit flipped, same size, the mtime the cache holds
    // put back: the ctime still tells, and the bytes are hashed and refused.
    wait_for_the_next_tick(&layer_path);
    let actual = flip_bit(&layer_path);
    set_mtime(&layer_path, touched_mtime);
    match check_images(&out, &ids, &command()) {
        Err(IntegrityError::Corrupt {
            image,
            role: BlobRole::Layer,
            expected,
            actual: found,
            ..
        }) => {
            assert_eq!(image, "core-p0");
            assert_eq!((expected, found), (layer, actual));
        }
        other => panic!("a rewritten blob was not caught: {other:?}"),
    }
}

fn set_mtime(path: &Path, time: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(time))
        .unwrap();
}

/// `out/core-x/`: index.json -> one manifest whose layer descriptor says
/// `declared` bytes for a 5-byte blob; returns the layer's digest.
fn image_with_layer_size(out: &Path, declared: u64) -> Digest {
    let layout = Layout::create(out.join("core-x")).unwrap();
    let layer = layout.write_blob(b"layer").unwrap();
    let config = JsonBlob::from_bytes(br#"{"architecture":"amd64","os":"linux"}"#.to_vec());
    let config = layout.write_json(&config, media_type::OCI_CONFIG).unwrap();
    let layers = vec![Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        layer.clone(),
        declared,
    )];
    let manifest = JsonBlob::of(&ImageManifest::new(config, layers)).unwrap();
    let manifest = layout
        .write_json(&manifest, media_type::OCI_MANIFEST)
        .unwrap();
    let mut index = ImageIndex::new();
    index.manifests.push(manifest);
    layout.write_index(&index).unwrap();
    layer
}

#[test]
fn a_wrong_declared_size_a_missing_blob_and_no_build_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out_root = dir.path().join("out");
    let layer = image_with_layer_size(&out_root, 6);
    let out = OutDir::open(&out_root);
    let ids = vec!["core-x".to_string()];
    let verdicts = Verdicts::open(None);
    let err = check_images(&out, &ids, &verdicts).unwrap_err();
    assert!(
        matches!(
            &err,
            IntegrityError::Size {
                declared_size: 6,
                actual_size: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&layer.to_string()), "{err}");

    std::fs::remove_file(out_root.join("core-x/blobs/sha256").join(layer.hex())).unwrap();
    let err = check_images(&out, &ids, &verdicts).unwrap_err();
    assert!(matches!(&err, IntegrityError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("stagex preseed"), "{err}");
    // A "manifest" larger than registries take is hashed, not loaded.
    let big = Layout::create(out_root.join("core-big")).unwrap();
    let bytes = vec![b' '; 5 << 20];
    let digest = big.write_blob(&bytes).unwrap();
    let mut index = ImageIndex::new();
    index.manifests.push(Descriptor::new(
        media_type::OCI_MANIFEST,
        digest,
        bytes.len() as u64,
    ));
    big.write_index(&index).unwrap();
    let err = check_images(&out, &["core-big".to_string()], &verdicts).unwrap_err();
    assert!(err.to_string().contains("more than the"), "{err}");
    let err = check_images(&out, &["core-none".to_string()], &verdicts).unwrap_err();
    assert!(matches!(&err, IntegrityError::NotBuilt { .. }), "{err}");
    assert!(err.to_string().contains("stagex build core-none"), "{err}");
}
