//! Owns: the tests of the ONE blob push rule's mount decision
//! (`registry::push::read_mount`), through both of its callers, against a
//! real docker-registry behind the fault proxy (a docker-registry without
//! auth never refuses a mount by status, nor fails one alone):
//! - the registry client's push (image sinks, `pallet --push`): a mount
//!   refused with 401, 403 or 404 falls back to an upload (a 404 used to
//!   fail the push);
//! - `stagex publish`: a mount that keeps failing with 500 fails the image,
//!   naming the mount (it used to be hidden behind an upload).
use crate::peers;
use crate::publish_support;
use crate::sign_support;

use peers::fault_proxy::{Fault, FaultProxy};
use peers::registry::Registry;
use peers::tools::require;
use publish_support::*;
use stagex::oci::descriptor::Descriptor;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;
use stagex::progress::NoProgress;
use stagex::registry::{BlobPush, RegistryClient};

/// True for the request line of a mount into repository `ns/<into>`.
fn mount_into(line: &str, into: &str) -> bool {
    line.starts_with(&format!("POST /v2/ns/{into}/blobs/uploads/?")) && line.contains("mount=")
}

#[test]
fn a_mount_refused_by_status_falls_back_to_an_upload() {
    let Some(registry) = Registry::start() else {
        return;
    };
    // The repository's name says which status its mounts get.
    let proxy = FaultProxy::start(registry.port, |_, line| {
        [401, 403, 404]
            .into_iter()
            .find(|code| mount_into(line, &format!("to-{code}")))
            .map_or(Fault::Pass, Fault::Status)
    });
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path().join("src")).unwrap();
    let bytes = vec![3u8; 300_000];
    let layer = Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        layout.write_blob(&bytes).unwrap(),
        bytes.len() as u64,
    );
    let client = RegistryClient::new(&proxy.host()).unwrap();
    let push = |repo: &str, from: &[String]| {
        client
            .push_blob(repo, &layer, &layout, from, &NoProgress)
            .unwrap_or_else(|e| panic!("{repo}: {e}"))
    };
    let from = ["ns/from".to_string()];
    assert_eq!(push("ns/from", &[]), BlobPush::Uploaded(layer.size));
    // Unrefused, the source mounts: the uploads below are the refusals'.
    assert_eq!(push("ns/to-ok", &from), BlobPush::Mounted);
    for code in [401, 403, 404] {
        let repo = format!("ns/to-{code}");
        assert_eq!(push(&repo, &from), BlobPush::Uploaded(layer.size), "{repo}");
        assert!(client.blob_exists(&repo, &layer.digest).unwrap(), "{repo}");
    }
    let injected = proxy.injected.lock().unwrap();
    for code in [401, 403, 404] {
        assert!(
            injected
                .iter()
                .any(|(fault, line)| *fault == Fault::Status(code)
                    && mount_into(line, &format!("to-{code}"))),
            "no {code} was answered to a mount: {injected:?}"
        );
    }
}

#[test]
fn publish_fails_an_image_whose_mounts_keep_failing_and_names_the_mount() {
    let Some(_) = require(&["skopeo"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    // Every mount answered 500; every other request reaches the registry.
    let proxy = FaultProxy::start(registry.port, |_, line| {
        match line.starts_with("POST ") && line.contains("mount=") {
            true => Fault::Status500,
            false => Fault::Pass,
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let packages = make_release(root, "core", 2, 100_000, 1);
    let (alice, bob) = (sign_support::key("alice"), sign_support::key("bob"));
    sign_support::write_keys(&keys_dir(root), &[&alice, &bob]);
    let ns = format!("{}/stagex", proxy.host());
    for (name, cert) in [("alice", &alice), ("bob", &bob)] {
        sign_all(root, &sign_support::write_secret(root, name, cert), &ns);
    }
    // The second namespace of the registry mounts from the first.
    let second = format!("{}/mirror", proxy.host());
    let out = publish(root, &ns, &["--registry", &ns, "--registry", &second])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let report = json(&out);
    let first = &report["registries"][0];
    assert_eq!(first["failed"].as_array().unwrap().len(), 0, "{report:#}");
    assert_eq!(first["blobs_uploaded"], 2 * packages.len(), "{report:#}");
    let mirror = &report["registries"][1];
    let failed = mirror["failed"].as_array().unwrap();
    assert_eq!(failed.len(), packages.len(), "{report:#}");
    for f in failed {
        let error = f["error"].as_str().unwrap();
        assert!(
            error.contains("mount of") && error.contains("HTTP 500"),
            "{error}"
        );
    }
    assert_eq!(
        mirror["blobs_uploaded"], 0,
        "not hidden by an upload: {report:#}"
    );
    assert_eq!(mirror["blobs_mounted"], 0, "{report:#}");
}
