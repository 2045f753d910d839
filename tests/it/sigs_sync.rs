//! `stagex sigs sync` end to end against real peers: nginx over TLS as the
//! source, a directory and nginx WebDAV (TLS, basic auth) as destinations,
//! skopeo with a `signedBy` policy reading the DESTINATION as its lookaside;
//! a second run with nothing new uploads nothing (and asks the source only
//! conditional GETs), one new upstream signature means exactly one upload;
//! a hostile source (forged, other digest, unknown key, 5 MiB, HTML 200,
//! redirect loop, 500 in the middle, stall) lands nothing bad, reports
//! everything, and the good signatures still sync.
use crate::peers;
use crate::sign_support;
use crate::sigs_support;

use std::path::Path;
use std::process::Command;

use peers::nginx::Nginx;
use peers::registry::Registry;
use peers::tools::{require, text};
use sequoia_openpgp::serialize::SerializeInto;
use sign_support::{
    json, key, make_image, skopeo_pull, skopeo_push, write_keys, write_stage_digests, Shape,
};
use sigs_support::*;
use stagex::oci::digest::Digest;

/// `stagex ARGS...` without the environment's CA file and mirror credentials.
fn stagex(args: &[&str]) -> Command {
    let mut c = peers::tools::stagex();
    c.args(args)
        .env_remove("STAGEX_CA_FILE")
        .env_remove("STAGEX_MIRROR_USER")
        .env_remove("STAGEX_MIRROR_PASSWORD");
    c
}

/// `stagex --json sigs sync --from FROM --to TO` with the test's keys,
/// digests, identity and state file.
fn sync(root: &Path, from: &str, to: &str, identity: &str, state: &str) -> Command {
    let mut c = stagex(&["--json", "--root"]);
    c.arg(root)
        .args(["sigs", "sync", "--from", from, "--to", to]);
    c.arg("--keys").arg(root.join("keys"));
    c.arg("--digests").arg(root.join("digests"));
    c.args(["--identity", identity]);
    c.arg("--state").arg(root.join(state));
    c
}

/// `root/keys` trusting m1 and `digests/core.txt` listing `core-a` at the
/// digest of `seed`: (that digest, m1's valid signature of it).
fn listed_image(root: &Path, seed: &[u8]) -> (Digest, Vec<u8>) {
    let m1 = key("m1");
    write_keys(&root.join("keys"), &[&m1]);
    let digest = Digest::of_bytes(seed);
    write_stage_digests(root, "core", &[("core-a", &digest)]);
    let good = signature(&m1, "stagex/core-a:1", &digest);
    (digest, good)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn https_source_to_directory_and_webdav_then_skopeo_trusts_the_destination() {
    let Some(tools) = require(&["skopeo", "nginx", "openssl"]) else {
        return;
    };
    let skopeo = &tools[0];
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-x", "1.0", Shape::Manifest, "sync");
    let reference = skopeo_push(skopeo, root, &registry.host(), "core-x");
    let identity = format!("{}/stagex", registry.host());
    let (m1, m2) = (key("m1"), key("m2"));
    write_keys(&root.join("keys"), &[&m1, &m2]);
    let keyring = root.join("trusted.gpg");
    std::fs::write(
        &keyring,
        [m1.to_vec().unwrap(), m2.to_vec().unwrap()].concat(),
    )
    .unwrap();
    write_stage_digests(root, "core", &[("core-x", &digest)]);

    let upstream = root.join("upstream");
    place(
        &upstream,
        "stagex/core-x",
        &digest,
        1,
        &signature(&m1, &reference, &digest),
    );
    let Some(source) = Nginx::start(&upstream, true, "") else {
        return;
    };
    let dav_root = root.join("dav");
    std::fs::create_dir_all(&dav_root).unwrap();
    let Some(dav) = Nginx::start_webdav(&dav_root, true, "mirror", "s3cret") else {
        return;
    };
    let ca_bundle = root.join("ca.pem");
    std::fs::write(
        &ca_bundle,
        [
            std::fs::read(source.ca.as_ref().unwrap()).unwrap(),
            std::fs::read(dav.ca.as_ref().unwrap()).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let mirror_dir = root.join("mirror");
    let dav_env = |c: &mut Command| {
        c.env("STAGEX_CA_FILE", &ca_bundle)
            .env("STAGEX_MIRROR_USER", "mirror")
            .env("STAGEX_MIRROR_PASSWORD", "s3cret");
    };

    // First sync: one signature lands on each destination.
    for (to, state) in [
        (mirror_dir.to_str().unwrap().to_string(), "state-dir.json"),
        (dav.url(), "state-dav.json"),
    ] {
        let mut c = sync(root, &source.url(), &to, &identity, state);
        dav_env(&mut c);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}\n{}",
            text(&out),
            source.logs(),
            dav.logs()
        );
        let report = json(&out);
        assert_eq!(report["uploaded"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(report["rejected"].as_array().unwrap().len(), 0);
    }
    assert_eq!(
        names(&mirror_dir, "stagex/core-x", &digest),
        ["signature-1"]
    );
    assert_eq!(names(&dav_root, "stagex/core-x", &digest), ["signature-1"]);

    // skopeo verifies the image against each DESTINATION.
    let file_lookaside = format!("file://{}", mirror_dir.display());
    let pulled = skopeo_pull(skopeo, root, &keyring, &file_lookaside, &reference, None);
    assert!(pulled.status.success(), "{}", text(&pulled));
    let cert_dir = root.join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(dav.ca.as_ref().unwrap(), cert_dir.join("ca.crt")).unwrap();
    let pulled = skopeo_pull(
        skopeo,
        root,
        &keyring,
        &dav.url(),
        &reference,
        Some(&cert_dir),
    );
    assert!(pulled.status.success(), "{}\n{}", text(&pulled), dav.logs());
    // ...and the policy does bite: an empty lookaside is refused.
    let empty = format!("file://{}", root.join("empty").display());
    let refused = skopeo_pull(skopeo, root, &keyring, &empty, &reference, None);
    assert!(!refused.status.success(), "an unsigned pull must fail");

    // Nothing new: nothing uploaded, the source only answers 304/404 and
    // the WebDAV mirror is not asked at all.
    let (source_log, dav_log) = (source.access_log(), dav.access_log());
    let mut c = sync(root, &source.url(), &dav.url(), &identity, "state-dav.json");
    dav_env(&mut c);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["uploaded"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["unchanged"], 1);
    let new_source = source.access_log()[source_log.len()..].to_string();
    assert_eq!(count(&new_source, "\" 304 "), 1, "{new_source}");
    assert_eq!(count(&new_source, "\" 200 "), 0, "{new_source}");
    assert_eq!(dav.access_log(), dav_log, "the mirror was asked");

    // One new upstream signature: exactly one upload to each destination.
    place(
        &upstream,
        "stagex/core-x",
        &digest,
        2,
        &signature(&m2, &reference, &digest),
    );
    for (to, state) in [
        (mirror_dir.to_str().unwrap().to_string(), "state-dir.json"),
        (dav.url(), "state-dav.json"),
    ] {
        let before = count(&dav.access_log(), "\"PUT ");
        let mut c = sync(root, &source.url(), &to, &identity, state);
        dav_env(&mut c);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let report = json(&out);
        let uploaded = report["uploaded"].as_array().unwrap();
        assert_eq!(uploaded.len(), 1, "{report}");
        assert_eq!(uploaded[0]["file"], "signature-2");
        assert_eq!(report["present"], 1);
        if to == dav.url() {
            assert_eq!(count(&dav.access_log(), "\"PUT ") - before, 1);
        }
    }
    assert_eq!(
        std::fs::read(image_dir(&dav_root, "stagex/core-x", &digest).join("signature-2")).unwrap(),
        std::fs::read(image_dir(&upstream, "stagex/core-x", &digest).join("signature-2")).unwrap()
    );
}

#[test]
fn a_hostile_source_lands_nothing_bad_and_the_good_signatures_still_sync() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (m1, outsider) = (key("m1"), key("outsider"));
    write_keys(&root.join("keys"), &[&m1]);
    let d: Vec<Digest> = (0..5)
        .map(|i| Digest::of_bytes(format!("image-{i}").as_bytes()))
        .collect();
    let names_of = ["core-a", "core-b", "core-c", "core-d", "core-e"];
    let listed: Vec<(&str, &Digest)> = names_of.iter().copied().zip(&d).collect();
    write_stage_digests(root, "core", &listed);
    let good = |i: usize| signature(&m1, &format!("stagex/{}:1", names_of[i]), &d[i]);
    let mut forged = good(0);
    let at = forged.len() - 10;
    forged[at] ^= 0x55;
    let (good_a, good_b, good_e) = (good(0), good(1), good(4));
    let landed_a = good_a.clone();
    let other_digest = signature(&m1, "stagex/core-a:1", &Digest::of_bytes(b"another"));
    let unknown = signature(&outsider, "stagex/core-a:1", &d[0]);
    let hex: Vec<String> = d.iter().map(|d| d.hex().to_string()).collect();
    let server = Hostile::start(move |path| {
        let file =
            |i: usize, n: u32| format!("/stagex/{}@sha256={}/signature-{n}", names_of[i], hex[i]);
        let sig = |b: &Vec<u8>| Answer::Send(200, "application/octet-stream", b.clone());
        match path {
            p if p == file(0, 1) => sig(&good_a),
            p if p == file(0, 2) => sig(&forged),
            p if p == file(0, 3) => sig(&other_digest),
            p if p == file(0, 4) => sig(&unknown),
            p if p == file(0, 5) => {
                Answer::Send(200, "application/octet-stream", vec![0x90; 5 << 20])
            }
            p if p == file(0, 6) => Answer::Send(200, "text/html", b"<html>gone</html>".to_vec()),
            p if p == file(1, 1) => sig(&good_b),
            p if p == file(1, 2) => Answer::Send(500, "text/plain", b"boom".to_vec()),
            p if p == file(2, 1) => Answer::RedirectLoop,
            p if p == file(3, 1) => Answer::Stall,
            p if p == file(4, 1) => sig(&good_e),
            _ => Answer::Send(404, "text/plain", Vec::new()),
        }
    });
    let mirror = root.join("mirror");
    let out = stagex(&["--json", "--root"])
        .arg(root)
        .args(["sigs", "sync", "--from", &server.url(), "--to"])
        .arg(&mirror)
        .arg("--keys")
        .arg(root.join("keys"))
        .arg("--digests")
        .arg(root.join("digests"))
        .args(["--timeout", "2", "--full"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "errors => exit 1: {}",
        text(&out)
    );
    let report = json(&out);

    // Only the three good signatures landed, each as signature-1.
    assert_eq!(names(&mirror, "stagex/core-a", &d[0]), ["signature-1"]);
    assert_eq!(names(&mirror, "stagex/core-b", &d[1]), ["signature-1"]);
    assert!(names(&mirror, "stagex/core-c", &d[2]).is_empty());
    assert!(names(&mirror, "stagex/core-d", &d[3]).is_empty());
    assert_eq!(names(&mirror, "stagex/core-e", &d[4]), ["signature-1"]);
    assert_eq!(
        std::fs::read(image_dir(&mirror, "stagex/core-a", &d[0]).join("signature-1")).unwrap(),
        landed_a
    );
    let codes: Vec<(String, String)> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["file"].as_str().unwrap().to_string(),
                r["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (file, code) in [
        ("signature-2", "bad-signature"),
        ("signature-3", "digest-mismatch"),
        ("signature-4", "unknown-key"),
        ("signature-5", "too-large"),
        ("signature-6", "soft-404"),
    ] {
        assert!(
            codes.contains(&(file.to_string(), code.to_string())),
            "{file} {code} not in {codes:?}"
        );
    }
    let errors: Vec<String> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["image"], e["message"]))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("core-b") && e.contains("HTTP 500")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("core-c") && e.contains("redirect")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("core-d") && e.contains("timed out")),
        "{errors:?}"
    );
    // The 500 was retried (transient), the 404 that ends a list was not.
    let requests = server.requests();
    let b2 = format!("/stagex/core-b@sha256={}/signature-2", d[1].hex());
    assert_eq!(requests.iter().filter(|r| **r == b2).count(), 3);
}

/// A mirror that accepts the PUT but serves other bytes when the file is
/// read back (a rewriting proxy, a concurrent writer): the sync names the
/// mirror URL and the signature file, and exits non-zero.
#[test]
fn a_mirror_that_serves_other_bytes_after_the_put_fails_the_sync() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (digest, good) = listed_image(root, b"read-back");
    let upstream = root.join("upstream");
    place(&upstream, "stagex/core-a", &digest, 1, &good);
    let file = format!("/stagex/core-a@sha256={}/signature-1", digest.hex());
    let put = Arc::new(AtomicBool::new(false));
    let mirror = {
        let (file, put) = (file.clone(), put.clone());
        Hostile::start_with_methods(move |method, path| match method {
            "PUT" if path == file => {
                put.store(true, Ordering::SeqCst);
                Answer::Send(201, "text/plain", Vec::new())
            }
            "GET" if path == file && put.load(Ordering::SeqCst) => {
                Answer::Send(200, "application/octet-stream", b"rewritten".to_vec())
            }
            _ => Answer::Send(404, "text/plain", Vec::new()),
        })
    };
    let out = stagex(&["--json", "--root"])
        .arg(root)
        .args(["sigs", "sync", "--from"])
        .arg(&upstream)
        .args(["--to", &mirror.url(), "--keys"])
        .arg(root.join("keys"))
        .arg("--digests")
        .arg(root.join("digests"))
        .args(["--timeout", "5", "--full"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(put.load(Ordering::SeqCst), "the PUT was never sent");
    let report = json(&out);
    assert_eq!(report["uploaded"].as_array().unwrap().len(), 0, "{report}");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}{file}", mirror.url())) && message.contains("read back"),
        "{message}"
    );
    // The listing's GET (404), then HEAD, PUT and one read-back GET.
    let asked = mirror.requests().iter().filter(|p| **p == file).count();
    assert_eq!(asked, 4, "{:?}", mirror.requests());
}

/// `stagex verify` reads an http lookaside with the same bounded retry as
/// the sync: a mirror that answers 503 once, then the file, passes.
#[test]
fn verify_over_http_retries_a_503_and_passes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-r", "1.0", Shape::Manifest, "r");
    let (k1, k2) = (key("r1"), key("r2"));
    write_keys(&root.join("keys"), &[&k1, &k2]);
    let first = signature(&k1, "stagex/core-r:1.0", &digest);
    let second = signature(&k2, "stagex/core-r:1.0", &digest);
    let file = |n: u32| format!("/stagex/core-r@sha256={}/signature-{n}", digest.hex());
    let (one, two) = (file(1), file(2));
    let asked = AtomicUsize::new(0);
    let server = Hostile::start(move |path| {
        let sig = |b: &Vec<u8>| Answer::Send(200, "application/octet-stream", b.clone());
        match path {
            p if p == one && asked.fetch_add(1, Ordering::SeqCst) == 0 => {
                Answer::Send(503, "text/plain", b"busy".to_vec())
            }
            p if p == one => sig(&first),
            p if p == two => sig(&second),
            _ => Answer::Send(404, "text/plain", Vec::new()),
        }
    });
    let out = stagex(&["--json", "--root"])
        .arg(root)
        .args(["verify", "--lookaside", &server.url(), "core-r"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report[0]["valid_signers"], 2, "{report}");
    let requests = server.requests();
    assert_eq!(
        requests.iter().filter(|p| **p == file(1)).count(),
        2,
        "one 503, one retry: {requests:?}"
    );
}

/// `--prune` with a state file: a file that answers 304 to the listing is
/// fetched again before the upload and may have turned into a rejected
/// one. What to keep is counted after that fetch, so a source that now
/// serves nothing valid for the image does not empty the mirror.
#[test]
fn a_304_that_turns_invalid_on_the_refetch_never_empties_the_mirror() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (digest, good) = listed_image(root, b"refetch");
    let file = |n: u32| format!("/stagex/core-a@sha256={}/signature-{n}", digest.hex());
    let (one, two) = (file(1), file(2));
    let second_run = Arc::new(AtomicBool::new(false));
    let asked_one = AtomicUsize::new(0);
    let server = {
        let (second_run, good) = (second_run.clone(), good.clone());
        Hostile::start(move |path| match path {
            // First run: the signature; second run: 304 to the listing,
            // then other bytes to the unconditional re-fetch.
            p if p == one => match asked_one.fetch_add(1, Ordering::SeqCst) {
                0 => Answer::Tagged(200, "\"v1\"", good.clone()),
                1 => Answer::Tagged(304, "\"v1\"", Vec::new()),
                _ => Answer::Send(200, "application/octet-stream", b"not a signature".to_vec()),
            },
            // A new file on the second run, so that the image is not
            // skipped as unchanged.
            p if p == two && second_run.load(Ordering::SeqCst) => {
                Answer::Send(200, "application/octet-stream", b"junk".to_vec())
            }
            _ => Answer::Send(404, "text/plain", Vec::new()),
        })
    };
    let mirror = root.join("mirror");
    let run = |extra: &[&str]| {
        stagex(&["--json", "--root"])
            .arg(root)
            .args(["sigs", "sync", "--from", &server.url(), "--to"])
            .arg(&mirror)
            .arg("--keys")
            .arg(root.join("keys"))
            .arg("--digests")
            .arg(root.join("digests"))
            .arg("--state")
            .arg(root.join("state.json"))
            .args(["--timeout", "5"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(names(&mirror, "stagex/core-a", &digest), ["signature-1"]);

    second_run.store(true, Ordering::SeqCst);
    let out = run(&["--prune"]);
    let report = json(&out);
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "both files now rejected: {report}");
    assert_eq!(
        server.requests().iter().filter(|p| **p == file(1)).count(),
        3,
        "listing, 304, re-fetch: {:?}",
        server.requests()
    );
    assert_eq!(report["pruned"].as_array().unwrap().len(), 0, "{report}");
    // The mirror's refusal to prune to nothing is "nothing pruned", not an
    // error of the run.
    assert_eq!(report["errors"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(names(&mirror, "stagex/core-a", &digest), ["signature-1"]);
    assert_eq!(
        std::fs::read(image_dir(&mirror, "stagex/core-a", &digest).join("signature-1")).unwrap(),
        good
    );
}

/// A source or lookaside that answers 401: `verify` and `sigs sync` say
/// the same thing, naming the URL and how a reader is given credentials
/// (the URL's `user:password@` or a netrc line), and, when credentials
/// were sent, that they were refused and where they came from, never the
/// password.
#[test]
fn a_401_from_a_store_read_from_names_the_url_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let digest = make_image(&root.join("out"), "core-u", "1.0", Shape::Manifest, "u");
    write_keys(&root.join("keys"), &[&key("u1")]);
    write_stage_digests(root, "core", &[("core-u", &digest)]);
    let server = Hostile::start(|_| Answer::Send(401, "text/plain", b"who are you".to_vec()));
    let file = format!(
        "{}/stagex/core-u@sha256={}/signature-1",
        server.url(),
        digest.hex()
    );
    // The store's real scheme and port, with the placeholder userinfo.
    let typed = format!("({}/...)", server.url().replace("://", "://USER:PASSWORD@"));
    let no_netrc = root.join("no-netrc");
    let out = stagex(&["--json", "--root"])
        .arg(root)
        .args(["verify", "--lookaside", &server.url(), "core-u"])
        .env("NETRC", &no_netrc)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    for want in [
        file.as_str(),
        "HTTP 401",
        "none were sent",
        typed.as_str(),
        "machine 127.0.0.1 login USER password PASSWORD",
        "netrc",
    ] {
        assert!(said.contains(want), "{want:?} missing: {said}");
    }
    assert!(
        !said.contains("a lookaside must answer 200 or 404"),
        "{said}"
    );

    let from = server.url().replace("://", "://reader:s3cret@");
    let out = stagex(&["--json", "--root"])
        .arg(root)
        .args(["sigs", "sync", "--from", &from, "--to"])
        .arg(root.join("mirror"))
        .arg("--keys")
        .arg(root.join("keys"))
        .arg("--digests")
        .arg(root.join("digests"))
        .args(["--timeout", "5", "--full"])
        .env("NETRC", &no_netrc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json(&out);
    let message = report["errors"][0]["message"].as_str().unwrap();
    for want in [
        file.as_str(),
        "HTTP 401",
        "refused",
        "\"reader\"",
        "URL's user:password@",
        "machine 127.0.0.1 login USER password PASSWORD",
    ] {
        assert!(message.contains(want), "{want:?} missing: {message}");
    }
    assert!(
        !text(&out).contains("s3cret"),
        "password leaked: {}",
        text(&out)
    );

    // `sigs audit` reports the same message as an `unauthorized` finding.
    let out = stagex(&["--json", "--root"])
        .arg(root)
        .args(["sigs", "audit", &server.url(), "--keys"])
        .arg(root.join("keys"))
        .arg("--digests")
        .arg(root.join("digests"))
        .env("NETRC", &no_netrc)
        .output()
        .unwrap();
    let report = json(&out);
    let found = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "unauthorized")
        .unwrap_or_else(|| panic!("no unauthorized finding: {report}"));
    let detail = found["detail"].as_str().unwrap();
    assert!(
        detail.contains(&file) && detail.contains("none were sent"),
        "{detail}"
    );
}
