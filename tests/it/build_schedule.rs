//! Owns: the tests of `stagex build -j N [--keep-going]` on a fixture graph
//! of native packages: dependency order from the recorded start/finish
//! positions, up-to-date packages skipped, a failure stopping its
//! dependants (reported as skipped, with the failure's log path) and, with
//! --keep-going, the independent rest still built; a built digest proved
//! against the committed one (bootstrap packages by default, every one
//! with --check-digests) stopping its dependants; durations recorded.
use crate::build_support;
use crate::peers;

use std::path::Path;

use build_support::native_package;
use peers::tools::stagex;
use serde_json::Value;

/// a <- b <- d, a <- c <- e, f alone.
fn six(root: &Path) {
    native_package(root, "a", None, "a");
    native_package(root, "b", Some("core-a"), "b");
    native_package(root, "c", Some("core-a"), "c");
    native_package(root, "d", Some("core-b"), "d");
    native_package(root, "e", Some("core-c"), "e");
    native_package(root, "f", None, "f");
}

/// A Containerfile package: with --builder native its build fails.
fn broken(root: &Path, name: &str) {
    let dir = root.join("packages/core").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!("[package]\nname = \"{name}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("Containerfile"), "FROM stagex/core-a AS package\n").unwrap();
}

fn build(root: &Path, args: &[&str]) -> (bool, Value) {
    let out = stagex()
        .arg("--json")
        .arg("--root")
        .arg(root)
        .args(["build", "--builder", "native"])
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| v["package"].as_str().unwrap()))
        .map(str::to_string)
        .collect()
}

fn position(report: &Value, id: &str, key: &str) -> u64 {
    report["built"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["package"] == id)
        .unwrap_or_else(|| panic!("{id} not built: {report}"))[key]
        .as_u64()
        .unwrap()
}

#[test]
fn j2_builds_in_dependency_order_then_everything_is_up_to_date() {
    let root = tempfile::tempdir().unwrap();
    six(root.path());
    let (ok, report) = build(root.path(), &["-j", "2"]);
    assert!(ok, "{report}");
    let mut built = names(&report["built"]);
    built.sort();
    assert_eq!(
        built,
        ["core-a", "core-b", "core-c", "core-d", "core-e", "core-f"]
    );
    for (dep, dependant) in [
        ("core-a", "core-b"),
        ("core-a", "core-c"),
        ("core-b", "core-d"),
        ("core-c", "core-e"),
    ] {
        assert!(
            position(&report, dep, "finished") < position(&report, dependant, "started"),
            "{dependant} started before {dep} finished: {report}"
        );
    }
    // Each build's log sits beside its layout, which stays a clean layout.
    let out = root.path().join("out");
    let log = std::fs::read_to_string(out.join("core-d.log")).unwrap();
    assert!(log.contains("core-d: built with native"), "{log}");
    assert_eq!(
        report["built"][0]["log"].as_str().unwrap(),
        out.join(report["built"][0]["package"].as_str().unwrap().to_string() + ".log")
            .display()
            .to_string()
    );
    let digests = stagex()
        .arg("--root")
        .arg(root.path())
        .arg("digests")
        .output()
        .unwrap();
    assert!(digests.status.success(), "{digests:?}");
    let listed = std::fs::read_to_string(root.path().join("digests/core.txt")).unwrap();
    assert_eq!(listed.lines().count(), 6, "{listed}");

    let (ok, again) = build(root.path(), &["-j", "2"]);
    assert!(ok, "{again}");
    assert!(names(&again["built"]).is_empty(), "{again}");
    assert_eq!(names(&again["up_to_date"]).len(), 6, "{again}");

    // A changed package is rebuilt with what depends on it, nothing else.
    native_package(root.path(), "c", Some("core-f"), "c");
    let (ok, third) = build(root.path(), &["-j", "2"]);
    assert!(ok, "{third}");
    let mut rebuilt = names(&third["built"]);
    rebuilt.sort();
    assert_eq!(rebuilt, ["core-c", "core-e"], "{third}");
}

#[test]
fn a_failure_stops_its_dependants_and_names_its_log() {
    let root = tempfile::tempdir().unwrap();
    native_package(root.path(), "a", None, "a");
    broken(root.path(), "bad");
    native_package(root.path(), "dep", Some("core-bad"), "dep");
    native_package(root.path(), "dep2", Some("core-dep"), "dep2");
    native_package(root.path(), "f", None, "f");
    native_package(root.path(), "g", Some("core-f"), "g");

    // -j 1: after the failure nothing new starts.
    let (ok, report) = build(root.path(), &[]);
    assert!(!ok);
    assert_eq!(names(&report["built"]), ["core-a"], "{report}");
    let failed = &report["failed"][0];
    assert_eq!(failed["package"], "core-bad");
    let log = failed["log"].as_str().unwrap();
    assert_eq!(
        log,
        root.path().join("out/core-bad.log").display().to_string()
    );
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("needs a Containerfile build"), "{text}");
    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(names(&report["skipped"]), ["core-dep", "core-dep2"]);
    assert!(skipped
        .iter()
        .all(|s| s["because"] == serde_json::json!(["core-bad"])));
    assert_eq!(names(&report["not_started"]), ["core-f", "core-g"]);
    assert!(!root.path().join("out/core-bad").exists());

    // --keep-going: the independent rest is built, dependants still skipped.
    let (ok, report) = build(root.path(), &["-j", "2", "--keep-going"]);
    assert!(!ok);
    let mut built = names(&report["built"]);
    built.sort();
    assert_eq!(built, ["core-f", "core-g"], "{report}");
    assert_eq!(names(&report["up_to_date"]), ["core-a"]);
    assert_eq!(names(&report["failed"]), ["core-bad"]);
    assert_eq!(names(&report["skipped"]), ["core-dep", "core-dep2"]);

    // The human report names the failure, its log and the skipped ones.
    let out = stagex()
        .arg("--root")
        .arg(root.path())
        .args(["build", "--builder", "native"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("FAILED     core-bad (log: {log})")),
        "{text}"
    );
    assert!(
        text.contains("skipped    core-dep (needs failed core-bad)"),
        "{text}"
    );
}

/// Runs `stagex --root ROOT ARGS...` (human output): (success, stdout).
fn human(root: &Path, args: &[&str]) -> (bool, String) {
    let out = stagex()
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// A native package `bootstrap-<name>` (StageX's bootstrap stage).
fn bootstrap_package(root: &Path, name: &str) {
    native_package(root, name, None, name);
    let stage = root.join("packages/bootstrap");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::rename(root.join("packages/core").join(name), stage.join(name)).unwrap();
}

/// `<hex> <id>` of `id` in `digests/<stage>.txt`.
fn committed(root: &Path, stage: &str, id: &str) -> String {
    let text = std::fs::read_to_string(root.join("digests").join(format!("{stage}.txt"))).unwrap();
    let line = text
        .lines()
        .find(|l| l.ends_with(&format!(" {id}")))
        .unwrap_or_else(|| panic!("{id} not in {text}"));
    format!("sha256:{}", line.split(' ').next().unwrap())
}

const WRONG: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// bootstrap-seed <- core-a <- core-b; core-f alone.
fn seeded(root: &Path) {
    bootstrap_package(root, "seed");
    native_package(root, "a", Some("bootstrap-seed"), "a");
    native_package(root, "b", Some("core-a"), "b");
    native_package(root, "f", None, "f");
}

#[test]
fn a_bootstrap_package_whose_committed_digest_differs_stops_its_dependants() {
    let root = tempfile::tempdir().unwrap();
    seeded(root.path());
    std::fs::create_dir_all(root.path().join("digests")).unwrap();
    let bootstrap_txt = format!("{} bootstrap-seed\n", &WRONG[7..]);
    std::fs::write(root.path().join("digests/bootstrap.txt"), &bootstrap_txt).unwrap();

    let (ok, report) = build(root.path(), &["-j", "2"]);
    assert!(!ok, "{report}");
    assert_eq!(names(&report["built"]), ["core-f"], "{report}");
    let m = &report["mismatched"][0];
    assert_eq!(m["package"], "bootstrap-seed");
    assert_eq!(m["expected"], WRONG);
    assert_eq!(
        m["hint"],
        format!("stagex diff bootstrap-seed bootstrap-seed@{WRONG}")
    );
    let actual = m["actual"].as_str().unwrap().to_string();
    assert_ne!(actual, WRONG);
    assert_eq!(names(&report["skipped"]), ["core-a", "core-b"]);
    assert!(report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["because"] == serde_json::json!(["bootstrap-seed"])));
    assert!(names(&report["failed"]).is_empty(), "{report}");
    // The digest reported is the one `stagex digests` lists for out/.
    let (ok, _) = human(root.path(), &["digests"]);
    assert!(ok);
    assert_eq!(
        committed(root.path(), "bootstrap", "bootstrap-seed"),
        actual
    );

    // A mismatched image is never up to date: the next run builds it again
    // and stops again; the human report names both digests and the hint.
    std::fs::write(root.path().join("digests/bootstrap.txt"), &bootstrap_txt).unwrap();
    let (ok, text) = human(root.path(), &["build", "--builder", "native"]);
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "MISMATCH   bootstrap-seed built {actual} but the committed digest is {WRONG}"
        )) && text.contains(&format!(
            "run `stagex diff bootstrap-seed bootstrap-seed@{WRONG}`"
        )),
        "{text}"
    );
    assert!(
        text.contains("skipped    core-a (needs bootstrap-seed, not the committed digest)"),
        "{text}"
    );

    // --no-bootstrap-check builds through.
    let (ok, report) = build(root.path(), &["--no-bootstrap-check"]);
    assert!(ok, "{report}");
    let mut built = names(&report["built"]);
    built.sort();
    assert_eq!(built, ["bootstrap-seed", "core-a", "core-b"], "{report}");
}

#[test]
fn check_digests_proves_every_listed_package_and_a_match_goes_on() {
    let root = tempfile::tempdir().unwrap();
    seeded(root.path());
    let (ok, report) = build(root.path(), &[]);
    assert!(ok, "{report}");
    let (ok, _) = human(root.path(), &["digests"]);
    assert!(ok);
    // core-a's committed digest is now wrong; the bootstrap one is right.
    let core = std::fs::read_to_string(root.path().join("digests/core.txt")).unwrap();
    let right = committed(root.path(), "core", "core-a");
    std::fs::write(
        root.path().join("digests/core.txt"),
        core.replace(&right[7..], &WRONG[7..]),
    )
    .unwrap();
    std::fs::remove_dir_all(root.path().join("out")).unwrap();

    // Without --check-digests only bootstrap packages are proved.
    let (ok, report) = build(root.path(), &[]);
    assert!(ok, "{report}");
    assert_eq!(names(&report["built"]).len(), 4, "{report}");

    std::fs::remove_dir_all(root.path().join("out")).unwrap();
    let (ok, report) = build(root.path(), &["--check-digests", "-j", "2"]);
    assert!(!ok, "{report}");
    let mut built = names(&report["built"]);
    built.sort();
    assert_eq!(built, ["bootstrap-seed", "core-f"], "{report}");
    assert_eq!(report["mismatched"][0]["package"], "core-a");
    assert_eq!(report["mismatched"][0]["expected"], WRONG);
    assert_eq!(report["mismatched"][0]["actual"], right);
    assert_eq!(names(&report["skipped"]), ["core-b"]);
}

#[test]
fn each_build_records_its_duration_beside_its_log() {
    let root = tempfile::tempdir().unwrap();
    six(root.path());
    let (ok, report) = build(root.path(), &["-j", "2"]);
    assert!(ok, "{report}");
    for id in ["core-a", "core-b", "core-c", "core-d", "core-e", "core-f"] {
        let text = std::fs::read_to_string(root.path().join(format!("out/{id}.duration")))
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let seconds: f64 = text.trim().parse().unwrap();
        assert!(seconds >= 0.0, "{id}: {text}");
    }
}

/// The text of `path` in the top layer of `out/<id>` (a gzip tar).
fn layer_file(out: &Path, id: &str, path: &str) -> String {
    let layout = out.join(id);
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
    let json = |d: &str| -> Value { serde_json::from_slice(&blob(d)).unwrap() };
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let index = json(top["manifests"][0]["digest"].as_str().unwrap());
    let manifest = json(index["manifests"][0]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    let gz = blob(layers.last().unwrap()["digest"].as_str().unwrap());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(path) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            return text;
        }
    }
    panic!("{path} not in {id}");
}

/// A family whose `build` stage writes random bytes: its two subpackages
/// hold the SAME bytes only if the stage ran once (taken from the cache
/// for the second member).
#[test]
fn a_subpackage_family_builds_its_shared_stage_once() {
    let Some(found) = peers::tools::require(&["buildah", "runc", "busybox"]) else {
        return;
    };
    let busybox = found[2].canonicalize().unwrap();
    let root = tempfile::tempdir().unwrap();
    let packages = root.path().join("packages/core");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packages/buildah/core/bbox");
    peers::tools::copy_dir(&fixture, &packages.join("bbox"));
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&busybox).unwrap()))
    };
    std::fs::write(
        packages.join("bbox/package.toml"),
        format!(
            "[package]\nname = \"bbox\"\nversion = \"1.0\"\n\n[sources.busybox]\nhash = \"{hash}\"\nversion = \"1.0\"\nmirrors = [\"file://{}\"]\n",
            busybox.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(packages.join("fam")).unwrap();
    std::fs::write(
        packages.join("fam/package.toml"),
        "[package]\nname = \"fam\"\nversion = \"1.0\"\nsubpackages = [\"fam-a\", \"fam-b\"]\n",
    )
    .unwrap();
    std::fs::write(
        packages.join("fam/Containerfile"),
        "FROM stagex/core-bbox AS build\n\
         RUN [\"/usr/bin/busybox\", \"sh\", \"-c\", \"/usr/bin/busybox mkdir -p /out && /usr/bin/busybox head -c 16 /dev/urandom | /usr/bin/busybox od -An -tx1 > /out/rand\"]\n\n\
         FROM scratch AS package-fam-a\nCOPY --from=build /out/rand /a\n\n\
         FROM scratch AS package-fam-b\nCOPY --from=build /out/rand /b\n",
    )
    .unwrap();
    peers::tools::run_ok(
        stagex()
            .arg("--root")
            .arg(root.path())
            .args(["fetch", "core-bbox"]),
    );
    let (ok, report) = {
        let out =
            build_support::buildah_build(root.path(), &["-j", "2", "core-fam-a", "core-fam-b"])
                .output()
                .unwrap();
        (
            out.status.success(),
            serde_json::from_slice::<Value>(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr))),
        )
    };
    assert!(ok, "{report}");
    let out = root.path().join("out");
    let a = layer_file(&out, "core-fam-a", "a");
    let b = layer_file(&out, "core-fam-b", "b");
    assert!(a.trim().len() >= 32, "{a:?}");
    assert_eq!(a, b, "the build stage ran twice");
    // The run's family storage is gone; out/ holds layouts, logs and
    // durations only.
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "core-bbox",
            "core-bbox.duration",
            "core-bbox.log",
            "core-fam-a",
            "core-fam-a.duration",
            "core-fam-a.log",
            "core-fam-b",
            "core-fam-b.duration",
            "core-fam-b.log"
        ]
    );
}
