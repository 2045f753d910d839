//! Owns: `stagex reproduce` end to end: native packages reproduce under
//! every variation (the dependency taken from out/, out/ untouched), the
//! verdict says whether the digest is the committed one, and
//! `--sign-if-reproduced` signs only the reproduced package that matches
//! its committed digest; a buildah package whose Containerfile writes a
//! random UUID and the time into a file does not reproduce: exit 1, both
//! digests, the `stagex diff` command, and both roots kept for it; the
//! fixture's core-bbox reproduces across buildah and podman; a buildah
//! package recording the host name does not reproduce, its file named as
//! the cause, and does with `--vary -hostname`.
use crate::build_support;
use crate::peers;
use crate::sign_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peers::tools::{self, run_ok};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn reproduce(root: &Path, args: &[&str]) -> (Output, Value) {
    let output = tools::stagex_in(root, &["--json", "reproduce"])
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, report)
}

/// `reproduce` with the native builder only: ARGS, then `--builders native`.
fn reproduce_native(root: &Path, args: &[&str]) -> (Output, Value) {
    reproduce(root, &[args, &["--builders", "native"]].concat())
}

fn package<'r>(report: &'r Value, id: &str) -> &'r Value {
    report["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["package"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report}"))
}

/// core-a in out/ (built), core-b and core-c on it, not built.
fn native_tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    build_support::native_package(root.path(), "a", None, "a");
    build_support::native_package(root.path(), "b", Some("core-a"), "b");
    build_support::native_package(root.path(), "c", Some("core-a"), "c");
    run_ok(&mut tools::stagex_in(root.path(), &["build", "core-a"]));
    root
}

fn write_digests(root: &Path, lines: &[(&str, &str)]) {
    let dir = root.join("digests");
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = lines
        .iter()
        .map(|(id, d)| format!("{} {id}\n", d.trim_start_matches("sha256:")))
        .collect();
    std::fs::write(dir.join("core.txt"), text).unwrap();
}

#[test]
fn native_packages_reproduce_and_are_compared_with_the_committed_digests() {
    let root = native_tree();
    let work = root.path().join("work");
    let (output, report) =
        reproduce_native(root.path(), &["core-b", "--work", work.to_str().unwrap()]);
    assert!(output.status.success(), "{report}");
    let b = package(&report, "core-b");
    assert_eq!(b["verdict"], "reproducible", "{report}");
    let digest = b["digest"].as_str().unwrap().to_string();
    let builds = b["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 2);
    assert_ne!(builds[0]["out"], builds[1]["out"], "two roots");
    assert!(builds.iter().all(|x| x["digest"] == digest.as_str()));
    assert_eq!(b["committed"], Value::Null);
    assert!(!root.path().join("out/core-b").exists(), "out/ untouched");
    assert!(!work.exists(), "roots removed when everything reproduced");
    let native = report["variations"]["native"].as_array().unwrap();
    let state = |v: &str| native.iter().find(|a| a["variation"] == v).unwrap()["state"].clone();
    assert_eq!(state("hostname"), "not applicable");
    assert_eq!(state("umask"), "applied");
    assert_eq!(state("build_path"), "applied");

    // Committed: core-b as reproduced, core-c with another digest.
    let other = format!("sha256:{}", "0".repeat(64));
    write_digests(root.path(), &[("core-b", &digest), ("core-c", &other)]);
    let kept = root.path().join("kept");
    let (output, report) = reproduce_native(
        root.path(),
        &[
            "core-b",
            "core-c",
            "--vary",
            "-time",
            "--keep",
            "--work",
            kept.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{report}");
    // The dependency was hard-linked from out/ into each root, not rebuilt.
    use std::os::unix::fs::MetadataExt;
    let inode = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    for root_out in [
        "native/control/out",
        "native/varied-build-path/a/deeper/root/out",
    ] {
        assert_eq!(
            inode(kept.join(root_out).join("core-a/index.json")),
            inode(root.path().join("out/core-a/index.json"))
        );
    }
    assert_eq!(package(&report, "core-b")["matches_committed"], true);
    let c = package(&report, "core-c");
    assert_eq!(c["verdict"], "reproducible");
    assert_eq!(c["matches_committed"], false);
    assert_eq!(c["committed"], other.as_str());
    let time = report["variations"]["native"][0].clone();
    assert_eq!(time["variation"], "time");
    assert_eq!(time["state"], "off");

    // Signing: only core-b (reproduced AND committed).
    let key = sign_support::write_secret(root.path(), "alice", &sign_support::key("alice"));
    let signatures = root.path().join("sigs");
    let (output, report) = reproduce_native(
        root.path(),
        &[
            "core-b",
            "core-c",
            "--sign-if-reproduced",
            "--key",
            key.to_str().unwrap(),
            "--signatures",
            signatures.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{report}");
    let signed = report["signed"].as_array().unwrap();
    assert_eq!(signed.len(), 1, "{report}");
    assert_eq!(signed[0], format!("core-b {digest}").as_str());
    let files = signature_files(&signatures);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().contains("core-b"), "{files:?}");
}

fn signature_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                found.push(e.path());
            }
        }
    }
    found
}

#[test]
fn a_dependency_missing_from_out_is_built_in_each_root() {
    let root = tempfile::tempdir().unwrap();
    build_support::native_package(root.path(), "a", None, "a");
    build_support::native_package(root.path(), "b", Some("core-a"), "b");
    let (output, report) = reproduce_native(root.path(), &["core-b"]);
    assert!(output.status.success(), "{report}");
    assert_eq!(package(&report, "core-b")["verdict"], "reproducible");
    assert!(!root.path().join("out/core-a").exists(), "out/ untouched");
}

#[test]
fn bad_input_is_one_clear_error() {
    let root = native_tree();
    let output = tools::stagex_in(root.path(), &["reproduce", "core-b", "--vary", "-kernel"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("unknown variation \"kernel\""), "{err}");

    // A work directory already holding build roots is refused, kept as is.
    let work = root.path().join("used");
    std::fs::create_dir_all(work.join("native/control")).unwrap();
    let output = tools::stagex_in(
        root.path(),
        &["reproduce", "core-b", "--builders", "native"],
    )
    .arg("--work")
    .arg(&work)
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert!(
        err.contains(&work.join("native").display().to_string()),
        "{err}"
    );
    assert!(work.join("native/control").is_dir());
}

const NOISY: &str = r#"FROM stagex/core-bbox AS build
RUN ["/usr/bin/busybox", "sh", "-c", "/usr/bin/busybox mkdir -p /rootfs/etc && /usr/bin/busybox cat /proc/sys/kernel/random/uuid > /rootfs/etc/noise && /usr/bin/busybox date +%s%N >> /rootfs/etc/noise"]
FROM scratch AS package
COPY --from=build /rootfs/ /
"#;

/// A package whose build records the host name RUN steps see.
const HOSTNAME: &str = r#"FROM stagex/core-bbox AS build
RUN ["/usr/bin/busybox", "sh", "-c", "/usr/bin/busybox mkdir -p /rootfs/etc && /usr/bin/busybox hostname > /rootfs/etc/built-on"]
FROM scratch AS package
COPY --from=build /rootfs/ /
"#;

/// The buildah fixture's core-bbox (the host's static busybox, fetched and
/// built into out/), and core-noisy and core-hostname on it.
fn noisy_tree(busybox: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let packages = root.path().join("packages");
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packages/buildah/core/bbox");
    tools::copy_dir(&fixture, &packages.join("core/bbox"));
    let hash = hex::encode(Sha256::digest(std::fs::read(busybox).unwrap()));
    std::fs::write(
        packages.join("core/bbox/package.toml"),
        format!(
            "[package]\nname = \"bbox\"\nversion = \"1.0\"\n\n[sources.busybox]\nhash = \"{hash}\"\nversion = \"1.0\"\nmirrors = [\"file://{}\"]\n",
            busybox.display()
        ),
    )
    .unwrap();
    for (name, containerfile) in [("noisy", NOISY), ("hostname", HOSTNAME)] {
        let dir = packages.join("core").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("Containerfile"), containerfile).unwrap();
        std::fs::write(
            dir.join("package.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"1.0\"\n"),
        )
        .unwrap();
    }
    let stagex = |args: &[&str]| {
        let mut c = tools::stagex();
        c.arg("--root").arg(root.path()).args(args);
        c
    };
    run_ok(&mut stagex(&["fetch", "core-bbox"]));
    run_ok(&mut build_support::buildah_build(
        root.path(),
        &["core-bbox"],
    ));
    root
}

#[test]
fn a_containerfile_writing_a_uuid_and_the_time_does_not_reproduce() {
    let Some(found) = tools::require(&["buildah", "runc", "busybox"]) else {
        return;
    };
    let busybox = found[2].canonicalize().unwrap();
    let root = noisy_tree(&busybox);
    let work = root.path().join("work");
    let (output, report) = reproduce(
        root.path(),
        &[
            "core-noisy",
            "--builders",
            "buildah",
            "--work",
            work.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{report}");
    let noisy = package(&report, "core-noisy");
    assert_eq!(noisy["verdict"], "not reproducible", "{report}");
    assert_eq!(noisy["digest"], Value::Null);
    let builds = noisy["builds"].as_array().unwrap();
    let digests: Vec<&str> = builds
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 2);
    assert_ne!(digests[0], digests[1], "{report}");
    let diff = noisy["diff_command"].as_str().unwrap();
    for b in builds {
        let out = b["out"].as_str().unwrap();
        assert!(diff.contains(&format!("oci:{out}")), "{diff}");
        assert!(Path::new(out).join("index.json").is_file(), "{out} kept");
    }
    assert_eq!(report["kept"], true);
    // The first cause is the file the Containerfile made noisy.
    let causes = noisy["causes"].as_array().unwrap();
    assert!(
        causes
            .iter()
            .any(|c| c["kind"] == "content"
                && c["path"].as_str().unwrap_or("").ends_with("etc/noise")),
        "{report}"
    );
    let buildah = report["variations"]["buildah"].as_array().unwrap();
    let hostname = buildah
        .iter()
        .find(|a| a["variation"] == "hostname")
        .unwrap();
    assert_eq!(hostname["state"], "applied", "{hostname}");

    // core-bbox reproduces across buildah and podman, each twice (the
    // varied builds under faketime), and is its committed digest.
    if tools::require(&["podman", "faketime"]).is_some() {
        run_ok(&mut tools::stagex_in(root.path(), &["digests"]));
        let (output, report) =
            reproduce(root.path(), &["core-bbox", "--builders", "buildah,podman"]);
        assert!(output.status.success(), "{report}");
        let bbox = package(&report, "core-bbox");
        assert_eq!(bbox["verdict"], "reproducible", "{report}");
        assert_eq!(bbox["matches_committed"], true, "{report}");
        let builders: Vec<&str> = bbox["builds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["builder"].as_str().unwrap())
            .collect();
        assert_eq!(builders, ["buildah", "buildah", "podman", "podman"]);
        let time = &report["variations"]["podman"][0];
        assert_eq!(time["state"], "applied");
        assert!(time["how"].as_str().unwrap().contains("faketime"), "{time}");
    }

    // The human report names both digests and the diff command.
    let human = run_human(root.path(), &work);
    assert!(human.contains("NOT REPRODUCIBLE core-noisy"), "{human}");
    assert!(human.contains("stagex diff oci:"), "{human}");
    let kept = format!("build roots kept in {}", work.join("again").display());
    assert!(human.contains(&kept), "{human}");
}

/// Builds core-hostname twice with buildah under every variation but the
/// ones `vary` turns off; its verdict.
fn reproduce_hostname(root: &Path, work: &Path, vary: &str) -> (Output, Value) {
    let args = ["core-hostname", "--builders", "buildah", "--vary", vary];
    let mut args: Vec<&str> = args.to_vec();
    let work = work.to_str().unwrap();
    args.extend(["--work", work]);
    reproduce(root, &args)
}

#[test]
fn a_containerfile_writing_the_host_name_does_not_reproduce_unless_it_is_not_varied() {
    let Some(found) = tools::require(&["buildah", "runc", "busybox", "unshare"]) else {
        return;
    };
    let busybox = found[2].canonicalize().unwrap();
    let root = noisy_tree(&busybox);
    let (output, report) = reproduce_hostname(root.path(), &root.path().join("w1"), "-cpus");
    assert_eq!(output.status.code(), Some(1), "{report}");
    let built = package(&report, "core-hostname");
    assert_eq!(built["verdict"], "not reproducible", "{report}");
    let causes = built["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["kind"] == "content"
            && c["path"].as_str().unwrap_or("").ends_with("etc/built-on")),
        "the cause names the file holding the host name: {report}"
    );
    let hostname = report["variations"]["buildah"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["variation"] == "hostname")
        .unwrap();
    assert_eq!(hostname["state"], "applied", "{hostname}");

    // Without the variation both builds see one name (not the random
    // container id buildah would give each RUN step): reproducible.
    let (output, report) =
        reproduce_hostname(root.path(), &root.path().join("w2"), "-cpus,-hostname");
    assert!(output.status.success(), "{report}");
    assert_eq!(
        package_verdict(&report, "core-hostname"),
        "reproducible",
        "{report}"
    );
}

fn package_verdict<'r>(report: &'r Value, id: &str) -> &'r str {
    package(report, id)["verdict"].as_str().unwrap()
}

fn run_human(root: &Path, work: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_stagex"))
        .arg("--root")
        .arg(root)
        .args([
            "reproduce",
            "core-noisy",
            "--builders",
            "buildah",
            "--vary",
            "-cpus",
        ])
        .arg("--work")
        .arg(work.join("again"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stdout).to_string()
}
