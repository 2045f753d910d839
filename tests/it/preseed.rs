//! Owns: the tests of `stagex preseed`, `stagex digests --check` and
//! `stagex build --deps-from` against the real docker-registry seeded with
//! fixture images (built by stagex, pushed with skopeo by digest), and of
//! preseeded images counting as built until their definition changes.
use crate::build_support;
use crate::peers;

use std::path::Path;
use std::process::{Command, Output};

use build_support::{built, native_package};
use peers::registry::Registry;
use peers::tools::{self, json, run_ok, stagex_in};
use serde_json::Value;

fn cmd(root: &Path, store: &Path, args: &[&str]) -> Output {
    stagex_in(root, args)
        .env("STAGEX_STORE", store)
        .output()
        .unwrap()
}

/// Builds the publisher's packages, writes digests/, pushes every image to
/// `<registry>/stagex/<id>` by its manifest digest.
fn publish(root: &Path, registry: &Registry) {
    let store = root.join("store");
    let built = cmd(root, &store, &["build"]);
    assert!(built.status.success(), "{built:?}");
    let digests = cmd(root, &store, &["digests"]);
    assert!(digests.status.success(), "{digests:?}");
    for id in std::fs::read_dir(root.join("out")).unwrap() {
        let id = id.unwrap().file_name().to_string_lossy().to_string();
        if !root.join("out").join(&id).join("index.json").is_file() {
            continue;
        }
        run_ok(
            Command::new("skopeo")
                .args([
                    "copy",
                    "--quiet",
                    "--preserve-digests",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("oci:{}", root.join("out").join(&id).display()))
                .arg(format!("docker://{}/stagex/{id}:1.0", registry.host())),
        );
    }
}

/// The publisher's side of a test: a real registry holding the images of
/// a tree built from `packages` (`(name, dependency, content)`), pushed by
/// digest. None when a peer is missing (outside CI).
struct Release {
    registry: Registry,
    publisher: tempfile::TempDir,
    /// `<registry>/stagex`.
    ns: String,
}

fn release(packages: &[(&str, Option<&str>, &str)]) -> Option<Release> {
    tools::require(&["skopeo"])?;
    let registry = Registry::start()?;
    let publisher = tempfile::tempdir().unwrap();
    for (name, dependency, content) in packages {
        native_package(publisher.path(), name, *dependency, content);
    }
    publish(publisher.path(), &registry);
    let ns = format!("{}/stagex", registry.host());
    Some(Release {
        registry,
        publisher,
        ns,
    })
}

/// `digests --check --json`: the output and its entries.
fn check_entries(root: &Path, store: &Path) -> (Output, Vec<Value>) {
    let check = cmd(root, store, &["--json", "digests", "--check"]);
    let entries = json(&check)["check"].as_array().unwrap().clone();
    (check, entries)
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["preseed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["package"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn blob_gets(registry: &Registry) -> usize {
    registry
        .logs()
        .lines()
        .filter(|l| l.contains("GET /v2/") && l.contains("/blobs/"))
        .count()
}

#[test]
fn preseed_pulls_the_release_then_check_is_green_and_a_tampered_layout_mismatches() {
    let Some(Release {
        registry,
        publisher,
        ns,
    }) = release(&[
        ("a", None, "a"),
        ("b", Some("core-a"), "b"),
        ("f", None, "f"),
    ])
    else {
        return;
    };

    // A new machine: only the committed digests.
    let me = tempfile::tempdir().unwrap();
    let store = me.path().join("store");
    tools::copy_dir(
        &publisher.path().join("digests"),
        &me.path().join("digests"),
    );
    let out = cmd(
        me.path(),
        &store,
        &["--json", "preseed", "--source", &ns, "-j", "3"],
    );
    assert!(out.status.success(), "{out:?}");
    let pulled = ["core-a", "core-b", "core-f"].map(|id| (id.to_string(), "pulled".to_string()));
    assert_eq!(statuses(&json(&out)), pulled);
    // The layout is the one the build writes, byte for byte.
    for id in ["core-a", "core-b", "core-f"] {
        assert_eq!(
            std::fs::read(me.path().join("out").join(id).join("index.json")).unwrap(),
            std::fs::read(publisher.path().join("out").join(id).join("index.json")).unwrap(),
            "{id}"
        );
    }
    let (check, entries) = check_entries(me.path(), &store);
    assert!(check.status.success(), "{check:?}");
    assert_eq!(entries.len(), 3);
    assert!(
        entries.iter().all(|e| e["status"] == "match"),
        "{entries:?}"
    );

    // A second preseed finds everything there and pulls nothing.
    let before = blob_gets(&registry);
    assert!(
        before >= 3,
        "the first preseed fetched blobs:\n{}",
        registry.logs()
    );
    let again = cmd(me.path(), &store, &["--json", "preseed", "--source", &ns]);
    assert!(again.status.success(), "{again:?}");
    let present = ["core-a", "core-b", "core-f"].map(|id| (id.to_string(), "present".to_string()));
    assert_eq!(statuses(&json(&again)), present);
    assert_eq!(blob_gets(&registry), before, "no blob fetched again");

    // Tamper: out/core-b now holds another image.
    let b = me.path().join("out/core-b");
    std::fs::remove_dir_all(&b).unwrap();
    tools::copy_dir(&me.path().join("out/core-f"), &b);
    let expected = std::fs::read_to_string(me.path().join("digests/core.txt")).unwrap();
    let hex = |id: &str| {
        expected
            .lines()
            .find(|l| l.ends_with(&format!(" {id}")))
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let (check, entries) = check_entries(me.path(), &store);
    assert!(!check.status.success());
    let b_entry = entries.iter().find(|e| e["package"] == "core-b").unwrap();
    assert_eq!(b_entry["status"], "mismatch");
    assert_eq!(b_entry["expected"], format!("sha256:{}", hex("core-b")));
    assert_eq!(b_entry["actual"], format!("sha256:{}", hex("core-f")));
    let text = cmd(me.path(), &store, &["digests", "--check"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "MISMATCH core-b expected sha256:{}",
            hex("core-b")
        )) && text.contains(&format!("out/ has sha256:{}", hex("core-f"))),
        "{text}"
    );

    // Preseed repairs it (from the store: no blob fetched again), and a
    // package out of the release is reported as extra, not as a failure.
    let fixed = cmd(me.path(), &store, &["--json", "preseed", "--source", &ns]);
    assert!(fixed.status.success(), "{fixed:?}");
    assert!(statuses(&json(&fixed)).contains(&("core-b".to_string(), "pulled".to_string())));
    assert_eq!(blob_gets(&registry), before, "repaired from the store");
    tools::copy_dir(&me.path().join("out/core-f"), &me.path().join("out/user-x"));
    let (check, entries) = check_entries(me.path(), &store);
    assert!(check.status.success(), "{check:?}");
    let extra = entries.iter().find(|e| e["package"] == "user-x").unwrap();
    assert_eq!(extra["status"], "extra");
}

#[test]
fn deps_from_takes_the_dependency_from_the_registry_not_out() {
    // `_registry` keeps the registry running to the end of the test.
    let Some(Release {
        registry: _registry,
        publisher,
        ns,
    }) = release(&[("a", None, "released a")])
    else {
        return;
    };

    // Here core-a differs from the release, and out/ holds that local build.
    let me = tempfile::tempdir().unwrap();
    let store = me.path().join("store");
    native_package(me.path(), "a", None, "local a");
    native_package(me.path(), "b", Some("core-a"), "b");
    // The release digests live where stagex.toml says: --deps-from and
    // digests --check both read them there (there is no me/digests).
    std::fs::write(me.path().join("stagex.toml"), "digests = \"release\"\n").unwrap();
    tools::copy_dir(
        &publisher.path().join("digests"),
        &me.path().join("release"),
    );
    let local = cmd(me.path(), &store, &["build", "core-a"]);
    assert!(local.status.success(), "{local:?}");

    let out = cmd(
        me.path(),
        &store,
        &["--json", "build", "core-b", "--deps-from", &ns],
    );
    assert!(out.status.success(), "{out:?}");
    let report = json(&out);
    assert_eq!(built(&report), ["core-b"], "core-a is not built: {report}");
    // out/core-a is now the released image...
    let (_, entries) = check_entries(me.path(), &store);
    let a = entries.iter().find(|e| e["package"] == "core-a").unwrap();
    assert_eq!(a["status"], "match", "{entries:?}");
    // ...and core-b sits on its layer, not on the local one.
    let layers = |root: &Path, id: &str| -> Vec<String> {
        let layout = root.join("out").join(id);
        let blob = |d: &str| -> Value {
            serde_json::from_slice(
                &std::fs::read(
                    layout
                        .join("blobs/sha256")
                        .join(d.trim_start_matches("sha256:")),
                )
                .unwrap(),
            )
            .unwrap()
        };
        let top: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let index = blob(top["manifests"][0]["digest"].as_str().unwrap());
        let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let released = layers(publisher.path(), "core-a");
    let b_layers = layers(me.path(), "core-b");
    assert_eq!(b_layers.len(), 2);
    assert_eq!(b_layers[0], released[0]);

    // A dependency the release does not list is a clear error.
    native_package(me.path(), "c", Some("core-b"), "c");
    let out = cmd(me.path(), &store, &["build", "core-c", "--deps-from", &ns]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dependency core-b is not listed in the release digests"),
        "{stderr}"
    );
}

/// The dry run's state of each package: `(id, build, preseeded_from)`.
fn plan_states(root: &Path, store: &Path) -> Vec<(String, bool, Option<String>)> {
    let out = cmd(root, store, &["--json", "build", "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    json(&out)["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["build"].as_bool().unwrap(),
                e["preseeded_from"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn preseeded_images_count_as_built_until_their_definition_changes() {
    let Some(Release {
        registry: _registry,
        publisher,
        ns,
    }) = release(&[
        ("a", None, "a"),
        ("b", Some("core-a"), "b"),
        ("c", Some("core-b"), "c"),
        ("f", None, "f"),
    ])
    else {
        return;
    };

    // A maintainer's clone of the same tree: packages/ and digests/.
    let me = tempfile::tempdir().unwrap();
    let store = me.path().join("store");
    for dir in ["packages", "digests"] {
        tools::copy_dir(&publisher.path().join(dir), &me.path().join(dir));
    }
    let out = cmd(me.path(), &store, &["--json", "preseed", "--source", &ns]);
    assert!(out.status.success(), "{out:?}");
    let report = json(&out);
    assert!(
        report["preseed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["recorded"] == true),
        "{report}"
    );

    // Nothing to build: each one up to date, preseeded from the namespace.
    let ids = ["core-a", "core-b", "core-c", "core-f"];
    let all_preseeded: Vec<_> = ids
        .iter()
        .map(|id| (id.to_string(), false, Some(ns.clone())))
        .collect();
    let mut states = plan_states(me.path(), &store);
    states.sort();
    assert_eq!(states, all_preseeded);
    let text = cmd(me.path(), &store, &["build", "--dry-run"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert_eq!(
        text.matches(&format!("up to date (preseeded from {ns})"))
            .count(),
        4,
        "{text}"
    );

    // One definition changes: that package and its dependants, nothing else.
    native_package(me.path(), "b", Some("core-a"), "b, patched");
    let mut states = plan_states(me.path(), &store);
    states.sort();
    let some = Some(ns.clone());
    assert_eq!(
        states,
        [
            ("core-a".to_string(), false, some.clone()),
            ("core-b".to_string(), true, None),
            ("core-c".to_string(), true, None),
            ("core-f".to_string(), false, some),
        ]
    );
    // And the build does exactly that.
    let built_now = stagex_in(me.path(), &["--json", "build", "--builder", "native"])
        .env("STAGEX_STORE", &store)
        .output()
        .unwrap();
    assert!(built_now.status.success(), "{built_now:?}");
    let report = json(&built_now);
    assert_eq!(built(&report), ["core-b", "core-c"], "{report}");
}

/// Pulls run several at once by default, for `preseed` and for `build
/// --deps-from` alike (whose `-j` is about builds and defaults to 1): the
/// help says so.
#[test]
fn pulls_default_to_four_at_once_in_preseed_and_deps_from() {
    let tmp = tempfile::tempdir().unwrap();
    let help = |command: &str| {
        let out = cmd(tmp.path(), &tmp.path().join("store"), &[command, "--help"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let preseed = help("preseed");
    assert!(preseed.contains("[default: 4]"), "{preseed}");
    let build = help("build");
    assert!(build.contains("pulls at least 4 images at once"), "{build}");
}
