//! `stagex publish` when the network misbehaves: a proxy in front of a real
//! registry answering 500, 429 (with and without Retry-After) and
//! resetting connections -> the publish completes and counts its retries;
//! the registry killed in the middle of a publish -> the run reports
//! failures, and after a restart a second run uploads only what is missing.
use crate::peers;
use crate::publish_support;
use crate::sign_support;

use std::time::{Duration, Instant};

use peers::fault_proxy::{Fault, FaultProxy};
use peers::registry::Registry;
use peers::tools::require;
use publish_support::*;

/// A root with `count` images of `size` bytes signed by two trusted keys
/// under identity `ns`.
fn signed_release(root: &std::path::Path, ns: &str, count: usize, size: usize) -> Vec<Package> {
    let packages = make_release(root, "core", count, size, 3);
    let (alice, bob) = (sign_support::key("alice"), sign_support::key("bob"));
    sign_support::write_keys(&keys_dir(root), &[&alice, &bob]);
    for (name, cert) in [("alice", &alice), ("bob", &bob)] {
        sign_all(root, &sign_support::write_secret(root, name, cert), ns);
    }
    packages
}

#[test]
fn publish_completes_through_500s_429s_and_resets_and_counts_retries() {
    let Some(tools) = require(&["skopeo"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    // Deterministic faults spread over the whole run.
    let proxy = FaultProxy::start(registry.port, |n, _| match n % 10 {
        3 if n % 20 == 3 => Fault::Status500,
        3 => Fault::Reset,
        7 if n == 7 => Fault::TooMany {
            retry_after: Some(1),
        },
        7 if n % 20 == 7 => Fault::TooMany { retry_after: None },
        _ => Fault::Pass,
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Signed for the proxy's address: that is the registry clients see.
    let ns = format!("{}/stagex", proxy.host());
    let packages = signed_release(root, &ns, 4, 200_000);
    let out = publish(root, &ns, &["--registry", &ns, "--jobs", "2"])
        .output()
        .unwrap();
    let (s500, s429ra, s429, resets) = proxy.counts();
    assert!(
        out.status.success(),
        "{}\ninjected: {:?}",
        text(&out),
        proxy.injected.lock().unwrap()
    );
    assert!(
        s500 > 0 && s429ra > 0 && s429 > 0 && resets > 0,
        "every kind of fault must have been injected: {:?}",
        proxy.counts()
    );
    let report = json(&out);
    let retries = report["summary"]["retries"].as_u64().unwrap();
    assert!(retries > 0, "{report:#}");
    // Every call (mounts too) is retried only after an injected fault,
    // and the plan never faults twice in a row: at most one retry per fault.
    assert!(
        retries as usize <= s500 + s429ra + s429 + resets,
        "{report:#}"
    );
    assert_eq!(report["summary"]["failures"], 0);
    for p in &packages {
        for tag in [p.version.as_str(), "sx2026.03.0", "latest"] {
            // Straight to the registry, past the proxy.
            let direct = format!("{}/stagex/{}:{tag}", registry.host(), p.name);
            assert_eq!(
                served(&tools[0], &direct),
                Some(p.index.to_string()),
                "{direct}"
            );
        }
    }
}

#[test]
fn a_registry_killed_mid_publish_is_finished_by_a_second_run() {
    let Some(_) = require(&["skopeo"]) else {
        return;
    };
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ns = format!("{}/stagex", registry.host());
    let packages = signed_release(root, &ns, 16, 2_000_000);
    let total_blobs = 2 * packages.len() as u64;
    let mut first = publish(root, &ns, &["--registry", &ns, "--jobs", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the registry once a few blobs are stored (bounded poll).
    let deadline = Instant::now() + Duration::from_secs(120);
    while registry.stored_blobs() < 6 {
        assert!(Instant::now() < deadline, "the publish never stored a blob");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the publish finished before the registry could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    registry.kill();
    let first = first.wait_with_output().unwrap();
    assert!(!first.status.success(), "{}", text(&first));
    let first = json(&first);
    assert!(
        first["summary"]["failures"].as_u64().unwrap() > 0,
        "{first:#}"
    );
    let done_before = first["registries"][0]["blobs_uploaded"].as_u64().unwrap();
    assert!(done_before > 0 && done_before < total_blobs, "{first:#}");

    registry.restart();
    let second = publish(root, &ns, &["--registry", &ns]).output().unwrap();
    assert!(second.status.success(), "{}", text(&second));
    let second = json(&second);
    let r = &second["registries"][0];
    let (uploaded, skipped) = (
        r["blobs_uploaded"].as_u64().unwrap(),
        r["blobs_skipped"].as_u64().unwrap(),
    );
    assert_eq!(
        uploaded + skipped,
        total_blobs - 2 * r["images_journaled"].as_u64().unwrap(),
        "{second:#}"
    );
    assert!(
        skipped >= done_before.saturating_sub(2),
        "what the first run uploaded must not be sent again: {second:#}"
    );
    assert!(uploaded < total_blobs, "{second:#}");
    // Every image complete, with our digests.
    let third = publish(root, &ns, &["--registry", &ns, "--no-journal"])
        .output()
        .unwrap();
    assert!(third.status.success(), "{}", text(&third));
    let third = json(&third);
    assert_eq!(
        third["summary"]["tags_present"],
        3 * packages.len() as u64,
        "{third:#}"
    );
    assert_eq!(third["summary"]["bytes_uploaded"], 0);
}

/// The largest blob of an image in out/ (its layer).
fn layer_of(root: &std::path::Path, package: &Package) -> String {
    let blobs = root.join("out").join(&package.name).join("blobs/sha256");
    std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap())
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .file_name()
        .into_string()
        .unwrap()
}

#[test]
fn a_blob_link_left_empty_by_a_killed_registry_is_healed_by_the_upload() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ns = format!("{}/stagex", registry.host());
    let packages = signed_release(root, &ns, 1, 100_000);
    let hex = layer_of(root, &packages[0]);
    // What a docker-registry killed while committing a blob leaves: the
    // repository's link to the blob created, not yet written. It answers
    // 500 to a HEAD of that blob until the link is rewritten.
    let link = registry
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/stagex")
        .join(&packages[0].name)
        .join("_layers/sha256")
        .join(&hex)
        .join("link");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::write(&link, b"").unwrap();
    let status = peers::registry::http_status(
        registry.port,
        &format!("/v2/stagex/{}/blobs/sha256:{hex}", packages[0].name),
    );
    assert_eq!(
        status,
        Some(500),
        "the registry must fail on the empty link"
    );

    let out = publish(root, &ns, &["--registry", &ns]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["summary"]["blobs_uploaded"], 2, "{report:#}");
    // The 500 answered to the HEAD meant "absent" at once: no backoff.
    assert_eq!(report["summary"]["retries"], 0, "{report:#}");
    assert_eq!(
        std::fs::read_to_string(&link).unwrap(),
        format!("sha256:{hex}"),
        "the upload rewrote the link"
    );
}

#[test]
fn a_failed_read_back_after_a_push_is_reported_as_itself() {
    let Some(registry) = Registry::start() else {
        return;
    };
    // Once a tag was pushed, every HEAD of a tag answers 500: the read-back
    // fails, and the failure must be named as it is, not as a registry
    // serving nothing.
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = pushed.clone();
    let proxy = FaultProxy::start(registry.port, move |_, line| {
        use std::sync::atomic::Ordering::SeqCst;
        let tag = line.contains("/manifests/") && !line.contains("/manifests/sha256:");
        if tag && line.starts_with("PUT ") {
            seen.store(true, SeqCst);
        }
        if tag && line.starts_with("HEAD ") && seen.load(SeqCst) {
            Fault::Status500
        } else {
            Fault::Pass
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ns = format!("{}/stagex", proxy.host());
    signed_release(root, &ns, 1, 10_000);
    let out = publish(root, &ns, &["--registry", &ns]).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let report = json(&out);
    let error = report["registries"][0]["failed"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("one failure expected: {report:#}"));
    assert!(
        error.contains("checking what the registry serves failed") && error.contains("500"),
        "{error}"
    );
    assert!(!error.contains("rewrote the manifest"), "{error}");
    assert!(pushed.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn a_failing_credential_helper_runs_once_per_registry_and_fails_every_image() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ns = format!("{}/stagex", registry.host());
    signed_release(root, &ns, 3, 1000);
    // A helper that counts its runs and fails (a locked keyring, say).
    let runs = root.join("helper-runs");
    let (bin, docker) = credential_helper(
        root,
        "stagexlocked",
        &registry.host(),
        &format!(
            "#!/bin/sh\necho run >> {}\necho 'the keyring is locked' >&2\nexit 1\n",
            runs.display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = publish(root, &ns, &["--registry", &ns, "--jobs", "3"])
        .env("PATH", path)
        .env("DOCKER_CONFIG", &docker)
        .env("HOME", root)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("STAGEX_REGISTRY_USER")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    let report = json(&out);
    let failures = report["registries"][0]["failed"]
        .as_array()
        .unwrap_or_else(|| panic!("no failures list: {all}"));
    assert_eq!(failures.len(), 3, "every image fails: {all}");
    for failure in failures {
        assert!(
            failure.to_string().contains("the keyring is locked"),
            "{failure}"
        );
    }
    let count = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(count, 1, "the helper ran once for the registry: {all}");
}

/// A registry address where nothing listens: `publish --dry-run` (and a
/// real publish) gives up after 3 refused connections, saying so, instead
/// of retrying for a minute. The port is bound then released, so nothing
/// listens on it (a listener that accepts then closes would be a reset,
/// not a refusal).
#[test]
fn a_registry_refusing_connections_is_given_up_after_three_tries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let ns = format!("127.0.0.1:{port}/stagex");
    signed_release(root, &ns, 3, 1000);
    for extra in [&["--dry-run"][..], &[][..]] {
        let mut args = vec!["--registry", ns.as_str(), "--jobs", "2", "--no-journal"];
        args.extend_from_slice(extra);
        let out = publish(root, &ns, &args).output().unwrap();
        let all = text(&out);
        assert!(!out.status.success(), "{extra:?}: {all}");
        assert!(
            all.contains(&format!(
                "127.0.0.1:{port} refused the connection 3 times: is the registry running?"
            )),
            "{extra:?}: {all}"
        );
        assert!(!all.contains("attempts; re-run"), "{extra:?}: {all}");
    }
}

/// An image whose push fails on the only registry gets no signatures on
/// the mirror, and the report says why; the image that was pushed gets
/// its signatures.
#[test]
fn signatures_of_an_image_no_registry_holds_are_not_mirrored() {
    let Some(registry) = Registry::start() else {
        return;
    };
    // Every request about core-p1 fails (500, retried, then given up).
    let proxy = FaultProxy::start(registry.port, |_, line| {
        if line.contains("/core-p1/") {
            Fault::Status500
        } else {
            Fault::Pass
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ns = format!("{}/stagex", proxy.host());
    let packages = signed_release(root, &ns, 2, 10_000);
    let mirror = root.join("mirror");
    let out = publish(root, &ns, &["--registry", &ns, "--jobs", "1", "--mirror"])
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let report = json(&out);
    assert_eq!(
        report["registries"][0]["failed"].as_array().unwrap().len(),
        1
    );
    let m = &report["mirrors"][0];
    assert_eq!(m["signatures_uploaded"], 2, "{report:#}");
    let skipped = m["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{report:#}");
    assert!(
        skipped[0]["image"].as_str().unwrap().starts_with("core-p1"),
        "{report:#}"
    );
    assert!(
        skipped[0]["error"]
            .as_str()
            .unwrap()
            .contains("on no registry"),
        "{report:#}"
    );
    let signed = |p: &Package| {
        let dir = mirror.join(format!("stagex/{}@sha256={}", p.name, p.manifest.hex()));
        std::fs::read_dir(dir).map_or(0, |d| d.count())
    };
    assert_eq!(signed(&packages[0]), 2);
    assert_eq!(
        signed(&packages[1]),
        0,
        "no signatures for an unpublished image"
    );
}
