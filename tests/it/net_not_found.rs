//! "Not found" is decided by the registry's answer, never by an error's
//! text: with a warm store, a registry that fails with HTTP 500 for tag
//! `1.404` (its URL holds "404") is an outage, so `stagex pallet` falls back
//! to the digest the tag had last time and warns; a real 404 is an error.
//! The first run uses a real docker-registry; the outage is a mock bound
//! to the same port once the registry is stopped (`peers::mock_http`).
use crate::pallet_support;
use crate::peers;

use std::collections::BTreeMap;

use pallet_support::*;
use peers::mock_http::{MockHttp, Reply};
use peers::registry::Registry;
use stagex::oci::layout::Layout;
use stagex::progress::NoProgress;

#[test]
fn an_outage_for_tag_1_404_is_not_taken_for_not_found() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let host = registry.host();
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let package = write_package(
        &out,
        "core-x",
        &[filesystem_layer(), package_layer("core-x")],
        Default::default(),
    );
    stagex::registry::push::push_image(
        &format!("{host}/stagex/core-x:1.404"),
        &Layout::open(out.join("core-x")).unwrap(),
        &package.manifest,
        &BTreeMap::new(),
        &NoProgress,
    )
    .unwrap();
    let source = format!("{host}/stagex");
    let store = tmp.path().join("store");
    let args = ["core-x:1.404", "--no-verify", "--source", &source];
    let first = pallet_json(&store, &args);
    drop(registry);

    // An outage: HTTP 500 for every manifest. The warm store serves.
    let outage = MockHttp::start_on(port, |_, path| {
        if path == "/v2/" {
            Reply::ok("application/json", b"{}")
        } else {
            Reply::status(500, "text/plain", b"backend down")
        }
    });
    let (second, stderr) = pallet_output(&repo_root(), &store, &args);
    assert_eq!(second["digest"], first["digest"]);
    assert!(
        stderr.contains("core-x:1.404 unreachable") && stderr.contains("HTTP 500"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("using {}", package.manifest.digest)),
        "{stderr}"
    );
    assert!(
        outage.seen().iter().any(|r| r.contains("/manifests/1.404")),
        "{:?}",
        outage.seen()
    );
    drop(outage);

    // The tag is really gone: a 404 with MANIFEST_UNKNOWN is an error, not
    // a fallback to the stale digest.
    let _gone = MockHttp::start_on(port, |_, path| {
        if path == "/v2/" {
            Reply::ok("application/json", b"{}")
        } else {
            Reply::status(
                404,
                "application/json",
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
        }
    });
    let stderr = pallet_fails(&store, &args);
    assert!(stderr.contains("not found on 127.0.0.1:"), "{stderr}");
    assert!(!stderr.contains("using sha256:"), "{stderr}");
}
