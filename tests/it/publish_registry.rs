//! `stagex publish` against a real docker-registry (plain HTTP on
//! 127.0.0.1): every tag in two namespaces of one registry with our exact
//! digests, the second namespace MOUNTED (0 layer bytes uploaded), a re-run
//! answered from the journal (no request at all), a `--no-journal` re-run
//! sending no blob (and asking about none: the tags prove the images
//! whole), and `--dry-run` changing nothing.
use crate::peers;
use crate::publish_support;
use crate::sign_support;

use peers::registry::Registry;
use peers::tools::require;
use publish_support::*;

/// Requests the registry logged so far (its access lines).
fn requests(registry: &Registry) -> usize {
    registry
        .logs()
        .lines()
        .filter(|l| {
            l.contains("\"GET ")
                || l.contains("\"HEAD ")
                || l.contains("\"PUT ")
                || l.contains("\"POST ")
                || l.contains("\"PATCH ")
        })
        .count()
}

#[test]
fn publishes_to_two_namespaces_mounts_the_second_and_resumes_from_the_journal() {
    let Some(tools) = require(&["skopeo"]) else {
        return;
    };
    let skopeo = &tools[0];
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let packages = make_release(root, "core", 3, 300_000, 1);
    let (alice, bob) = (sign_support::key("alice"), sign_support::key("bob"));
    sign_support::write_keys(&keys_dir(root), &[&alice, &bob]);
    let ns = format!("{}/stagex", registry.host());
    for (name, cert) in [("alice", &alice), ("bob", &bob)] {
        sign_all(root, &sign_support::write_secret(root, name, cert), &ns);
    }
    let second = format!("{}/mirror", registry.host());

    // A dry run first: a plan, and nothing on the registry.
    let plan = publish(
        root,
        &ns,
        &["--registry", &ns, "--registry", &second, "--dry-run"],
    )
    .output()
    .unwrap();
    assert!(plan.status.success(), "{}", text(&plan));
    let plan = json(&plan);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["registries"][0]["blobs_uploaded"], 6, "{plan:#}");
    assert_eq!(plan["registries"][1]["blobs_mounted"], 6, "{plan:#}");
    assert_eq!(plan["registries"][1]["bytes_uploaded"], 0, "{plan:#}");
    assert_eq!(plan["summary"]["tags_pushed"], 18, "{plan:#}");
    for p in &packages {
        assert_eq!(
            served(skopeo, &format!("{ns}/{}:{}", p.name, p.version)),
            None
        );
    }
    assert!(!root.join(".stagex/publish-journal.json").exists());

    let out = publish(root, &ns, &["--registry", &ns, "--registry", &second])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = json(&out);
    let layers: u64 = packages.iter().map(|p| p.layer_bytes).sum();
    let first = &report["registries"][0];
    assert_eq!(first["blobs_uploaded"], 6, "{report:#}");
    assert!(first["bytes_uploaded"].as_u64().unwrap() >= layers);
    let mounted = &report["registries"][1];
    assert_eq!(mounted["blobs_mounted"], 6, "{report:#}");
    assert_eq!(mounted["blobs_uploaded"], 0, "{report:#}");
    assert_eq!(
        mounted["bytes_uploaded"], 0,
        "0 layer bytes to the second namespace"
    );
    assert_eq!(report["summary"]["tags_pushed"], 18);
    assert_eq!(report["summary"]["failures"], 0);
    for p in &packages {
        for repo in [&ns, &second] {
            for tag in [p.version.as_str(), "sx2026.03.0", "latest"] {
                assert_eq!(
                    served(skopeo, &format!("{repo}/{}:{tag}", p.name)),
                    Some(p.index.to_string()),
                    "{repo}/{}:{tag}",
                    p.name
                );
            }
        }
    }

    // Nothing new: the journal answers, the registry hears nothing.
    let before = requests(&registry);
    assert!(
        before > 0,
        "the registry logs its requests: {}",
        registry.logs()
    );
    let again = publish(root, &ns, &["--registry", &ns, "--registry", &second])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again));
    let again = json(&again);
    assert_eq!(again["registries"][0]["images_journaled"], 3, "{again:#}");
    assert_eq!(again["summary"]["bytes_uploaded"], 0);
    assert_eq!(again["summary"]["tags_pushed"], 0);
    assert_eq!(
        requests(&registry),
        before,
        "a journaled re-run sends nothing"
    );

    // Without the journal: HEADs only, no blob, no tag rewritten. Blob
    // bytes travel in PATCH or PUT requests to an upload session.
    let patches = |r: &Registry| {
        r.logs()
            .lines()
            .filter(|l| {
                (l.contains("\"PATCH ") || l.contains("\"PUT ")) && l.contains("/blobs/uploads/")
            })
            .count()
    };
    let sent = patches(&registry);
    assert!(sent > 0, "the first publish sent blob data");
    let blob_heads = |r: &Registry| {
        r.logs()
            .lines()
            .filter(|l| l.contains("\"HEAD ") && l.contains("/blobs/sha256:"))
            .count()
    };
    let heads = blob_heads(&registry);
    let checked = publish(
        root,
        &ns,
        &["--registry", &ns, "--registry", &second, "--no-journal"],
    )
    .output()
    .unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
    let checked = json(&checked);
    assert_eq!(checked["summary"]["blobs_skipped"], 12, "{checked:#}");
    assert_eq!(checked["summary"]["bytes_uploaded"], 0);
    assert_eq!(checked["summary"]["tags_present"], 18);
    assert_eq!(checked["summary"]["tags_pushed"], 0);
    assert_eq!(
        patches(&registry),
        sent,
        "blob data sent on a no-change run"
    );
    // Tags serving our digests prove the images whole: no blob asked about.
    assert_eq!(
        blob_heads(&registry),
        heads,
        "blob HEADs on a no-change run"
    );
}
