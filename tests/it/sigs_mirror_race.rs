//! Owns: the tests of two writers of ONE WebDAV mirror storing the same
//! signature at once (`Lookaside::put_missing` over http, `webdav.rs`'s
//! claim loop), against a real nginx WebDAV server behind the fault proxy.
//! The other writer is injected by the proxy: on our first
//! `HEAD .../signature-1` (after our listing saw the image empty) it
//! stores a file there in nginx's document root, then lets the HEAD
//! through. The same bytes -> found, reported present, nothing written
//! twice; different bytes -> the writer moves on to `signature-2`. For a
//! server that honours `If-None-Match: *` (nginx does not), the proxy
//! stores the other writer's file on our PUT and answers 412 for it (a
//! fault nginx cannot produce).
use crate::peers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use peers::fault_proxy::{Fault, FaultProxy};
use peers::nginx::Nginx;
use stagex::lookaside::{Lookaside, PutReport};
use stagex::net::block_on;
use stagex::oci::digest::Digest;

const SIGNATURE: &[u8] = b"the signature both writers push";

fn image_dir(root: &Path, digest: &Digest) -> PathBuf {
    root.join(format!("stagex/core-x@sha256={}", digest.hex()))
}

/// The names in the image's directory, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// One put and what it left; the server and its root live as long as it.
struct Race {
    report: PutReport,
    dir: PathBuf,
    _nginx: Nginx,
    _root: tempfile::TempDir,
}

/// Puts `SIGNATURE` through the proxy while "another writer" stores
/// `other` at `signature-1` right after our listing.
fn put_while_another_writer_stores(other: &'static [u8]) -> Option<Race> {
    put_racing(other, "HEAD", Fault::Pass)
}

/// Puts `SIGNATURE` through the proxy; the first `method` request for
/// `signature-1` makes "another writer" store `other` there first, and is
/// answered as `fault` says.
fn put_racing(other: &'static [u8], method: &'static str, fault: Fault) -> Option<Race> {
    let root = tempfile::tempdir().unwrap();
    let nginx = Nginx::start_webdav(root.path(), false, "mirror", "s3cret")?;
    let digest = Digest::of_bytes(b"manifest");
    let dir = image_dir(root.path(), &digest);
    let injected = AtomicBool::new(false);
    let method: &'static str = method;
    let other_writer_dir = dir.clone();
    let proxy = FaultProxy::start(nginx.port, move |_, line| {
        let claim = line.starts_with(&format!("{method} ")) && line.contains("/signature-1 ");
        if claim && !injected.swap(true, Ordering::SeqCst) {
            std::fs::create_dir_all(&other_writer_dir).unwrap();
            std::fs::write(other_writer_dir.join("signature-1"), other).unwrap();
            return fault;
        }
        Fault::Pass
    });
    let mirror =
        Lookaside::parse_mirror(&format!("http://mirror:s3cret@{}", proxy.host())).unwrap();
    let report = block_on(mirror.put_missing("stagex/core-x", &digest, &[SIGNATURE.to_vec()]))
        .unwrap_or_else(|e| panic!("{e}\n{}", nginx.logs()));
    let log = nginx.access_log();
    assert!(
        log.contains("HEAD /stagex/core-x@sha256=") && log.contains("/signature-1 "),
        "the claim went through nginx:\n{log}"
    );
    assert!(
        injected_once(&proxy, method, fault),
        "the race was injected"
    );
    Some(Race {
        report,
        dir,
        _nginx: nginx,
        _root: root,
    })
}

#[test]
fn a_signature_another_writer_stored_after_our_listing_is_not_stored_twice() {
    let Some(race) = put_while_another_writer_stores(SIGNATURE) else {
        return;
    };
    let (report, dir) = (&race.report, &race.dir);
    assert_eq!(files_in(dir), ["signature-1"], "one copy on the mirror");
    assert_eq!(std::fs::read(dir.join("signature-1")).unwrap(), SIGNATURE);
    assert!(report.uploaded.is_empty(), "nothing uploaded: {report:?}");
    let present: Vec<&str> = report.present.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(present, ["signature-1"]);
    assert!(report.present[0].location.ends_with("/signature-1"));
    // The mirror changed since the listing: none to reuse.
    assert_eq!(report.listing, None);
}

#[test]
fn a_different_signature_stored_meanwhile_makes_the_writer_take_the_next_slot() {
    let Some(race) = put_while_another_writer_stores(b"someone else's") else {
        return;
    };
    let (report, dir) = (&race.report, &race.dir);
    assert_eq!(files_in(dir), ["signature-1", "signature-2"]);
    assert_eq!(
        std::fs::read(dir.join("signature-1")).unwrap(),
        b"someone else's"
    );
    assert_eq!(std::fs::read(dir.join("signature-2")).unwrap(), SIGNATURE);
    let uploaded: Vec<&str> = report.uploaded.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(uploaded, ["signature-2"]);
    assert!(report.present.is_empty(), "{report:?}");
}

/// True if the proxy answered one `method` request itself (a `Pass` is not
/// recorded, so the HEAD race is seen on disk instead).
fn injected_once(proxy: &FaultProxy, method: &str, fault: Fault) -> bool {
    let injected = proxy.injected.lock().unwrap();
    match fault {
        Fault::Pass => injected.is_empty(),
        _ => injected.len() == 1 && injected[0].1.starts_with(&format!("{method} ")),
    }
}

#[test]
fn a_412_for_a_slot_holding_our_signature_is_found_not_written_again() {
    // A server honouring `If-None-Match: *` (nginx does not; the proxy
    // answers for it) refuses the PUT because the other writer got there
    // between our HEAD and our PUT.
    let Some(race) = put_racing(SIGNATURE, "PUT", Fault::Status(412)) else {
        return;
    };
    let (report, dir) = (&race.report, &race.dir);
    assert_eq!(files_in(dir), ["signature-1"], "one copy on the mirror");
    assert!(report.uploaded.is_empty(), "nothing uploaded: {report:?}");
    let present: Vec<&str> = report.present.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(present, ["signature-1"]);
}
