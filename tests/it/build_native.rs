//! `stagex build` of the native packages core-filesystem and core-profile:
//! bit-for-bit reproducible across umask, TZ and build directory; the
//! StageX buildx output shape; umoci unpacks the tree with the right modes,
//! symlinks and owners; `stagex digests` writes StageX's format.
use crate::build_support;
use crate::peers;

use std::path::{Path, PathBuf};
use std::process::Command;

use peers::tools::{self, run_ok};
use serde_json::Value;

fn repo_packages() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packages")
}

/// Runs `stagex build` under a given umask and TZ; returns parsed --json.
fn build(root: &Path, packages: &Path, out: &Path, umask: &str, tz: &str, names: &[&str]) -> Value {
    let exe = env!("CARGO_BIN_EXE_stagex");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg(exe)
        .arg("--json")
        .arg("--root")
        .arg(root)
        .arg("build")
        .args(names)
        .arg("--packages")
        .arg(packages)
        .arg("--out")
        .arg(out)
        .env("TZ", tz)
        .env_remove("SOURCE_DATE_EPOCH");
    let output = run_ok(&mut command);
    serde_json::from_slice(&output.stdout).unwrap()
}

fn manifest_digest(report: &Value, id: &str) -> String {
    report["built"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["package"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report}"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

#[test]
fn core_filesystem_is_reproducible_across_umask_tz_and_directory() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    tools::copy_dir(&repo_packages(), &b.path().join("elsewhere/pkgs"));
    let one = build(
        a.path(),
        &repo_packages(),
        &a.path().join("out"),
        "022",
        "UTC",
        &["core-filesystem", "core-profile"],
    );
    let two = build(
        b.path(),
        &b.path().join("elsewhere/pkgs"),
        &b.path().join("other-out"),
        "077",
        "Pacific/Kiritimati",
        &["core-filesystem", "core-profile"],
    );
    for id in ["core-filesystem", "core-profile"] {
        assert_eq!(
            manifest_digest(&one, id),
            manifest_digest(&two, id),
            "{id} differs"
        );
    }

    // The StageX buildx shape: index.json -> image index -> manifest.
    let layout = a.path().join("out/core-filesystem");
    let top: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index = json_blob(&layout, top["manifests"][0]["digest"].as_str().unwrap());
    let manifest_desc = &index["manifests"][0];
    assert_eq!(
        manifest_desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest_desc["digest"].as_str().unwrap(),
        manifest_digest(&one, "core-filesystem")
    );
    assert_eq!(manifest_desc["platform"]["os"], "linux");
    let manifest = json_blob(&layout, manifest_desc["digest"].as_str().unwrap());
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.created"],
        "1970-01-01T00:00:01Z"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "latest"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let config = json_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["created"], "1970-01-01T00:00:01Z");
    assert_eq!(config["config"]["User"], "1000:1000");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh"])
    );
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "PS1=[Stageˣ] $ ",
            "TZ=UTC",
            "LANG=C.UTF-8",
            "LC_ALL=C",
            "USER=user",
            "HOME=/home/user",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
    assert_eq!(config["history"][0]["created"], "1970-01-01T00:00:01Z");

    let profile = a.path().join("out/core-profile");
    let top: Value =
        serde_json::from_slice(&std::fs::read(profile.join("index.json")).unwrap()).unwrap();
    let index = json_blob(&profile, top["manifests"][0]["digest"].as_str().unwrap());
    let manifest = json_blob(&profile, index["manifests"][0]["digest"].as_str().unwrap());
    let config = json_blob(&profile, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(
        config["config"]["Shell"],
        serde_json::json!(["/bin/sh", "-l", "-c"])
    );

    // digests/<stage>.txt, byte for byte.
    let out = run_ok(
        tools::stagex()
            .arg("--root")
            .arg(a.path())
            .args(["digests", "--out"])
            .arg(a.path().join("out")),
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(a.path().join("digests/core.txt")).unwrap();
    let hex = |id| {
        manifest_digest(&one, id)
            .trim_start_matches("sha256:")
            .to_string()
    };
    assert_eq!(
        text,
        format!(
            "{} core-filesystem\n{} core-profile\n",
            hex("core-filesystem"),
            hex("core-profile")
        )
    );
}

#[test]
fn umoci_unpacks_core_filesystem_with_modes_links_and_owners() {
    let Some(_) = tools::require(&["umoci"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    build(
        dir.path(),
        &repo_packages(),
        &dir.path().join("out"),
        "022",
        "UTC",
        &["core-filesystem"],
    );
    let root = unsafe { libc::geteuid() } == 0;
    let bundle = dir.path().join("bundle");
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !root {
        unpack.arg("--rootless");
    }
    run_ok(
        unpack
            .arg("--image")
            .arg(format!(
                "{}:latest",
                dir.path().join("out/core-filesystem").display()
            ))
            .arg(&bundle),
    );
    use std::os::unix::fs::MetadataExt;
    let rootfs = bundle.join("rootfs");
    let meta =
        |p: &str| std::fs::symlink_metadata(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("var/tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("root").mode() & 0o7777, 0o750);
    assert_eq!(meta("etc/passwd").mode() & 0o7777, 0o644);
    assert_eq!(meta("home/user").mode() & 0o7777, 0o755);
    if root {
        assert_eq!(
            (meta("home/user").uid(), meta("home/user").gid()),
            (1000, 1000)
        );
        assert_eq!((meta("etc").uid(), meta("etc").gid()), (0, 0));
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib"),
        ("usr/lib64", "lib"),
        ("var/run", "../run"),
        ("var/lock", "../run/lock"),
    ] {
        assert_eq!(
            std::fs::read_link(rootfs.join(link)).unwrap(),
            PathBuf::from(target),
            "{link}"
        );
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
    assert!(passwd.contains("\nuser:x:1000:1000::/home/user:/bin/sh\n"));
    assert!(std::fs::read_to_string(rootfs.join("etc/os-release"))
        .unwrap()
        .contains("ID=stagex"));
    assert!(std::fs::read_to_string(rootfs.join("etc/group"))
        .unwrap()
        .contains("\nuser:x:1000:\n"));
}

#[test]
fn a_native_package_on_a_base_builds_the_base_first_and_keeps_its_layer() {
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("packages");
    tools::copy_dir(
        &repo_packages().join("core/filesystem"),
        &packages.join("core/filesystem"),
    );
    std::fs::create_dir_all(packages.join("user/motd")).unwrap();
    std::fs::write(
        packages.join("user/motd/package.toml"),
        "[package]\nname = \"motd\"\nversion = \"1.0\"\n[native]\nbase = \"core-filesystem\"\n[native.config]\nenv = [\"PATH=/opt/bin:${PATH}\"]\nworkdir = \"/home/user\"\n[[native.file]]\npath = \"etc/motd\"\ncontent = \"hi\\n\"\n",
    )
    .unwrap();
    let report = build(
        dir.path(),
        &packages,
        &dir.path().join("out"),
        "022",
        "UTC",
        &["user-motd"],
    );
    assert_eq!(
        build_support::built(&report),
        ["core-filesystem", "user-motd"]
    );
    let out = dir.path().join("out");
    let layer_of = |id: &str| {
        let layout = out.join(id);
        let manifest = json_blob(&layout, &manifest_digest(&report, id));
        let config = json_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
        (manifest["layers"].clone(), config)
    };
    let (fs_layers, _) = layer_of("core-filesystem");
    let (motd_layers, motd_config) = layer_of("user-motd");
    assert_eq!(motd_layers.as_array().unwrap().len(), 2);
    assert_eq!(motd_layers[0], fs_layers[0]);
    assert_eq!(motd_config["config"]["User"], "1000:1000");
    assert_eq!(motd_config["config"]["WorkingDir"], "/home/user");
    let env = motd_config["config"]["Env"].to_string();
    assert!(env.contains("PATH=/opt/bin:/usr/local/sbin:"), "{env}");
    let manifest = json_blob(
        &out.join("user-motd"),
        &manifest_digest(&report, "user-motd"),
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "1.0"
    );
}

/// Golden digests: a change to any byte of these images (layer writer,
/// compression, JSON shape, package definitions) must be deliberate.
#[cfg(target_arch = "x86_64")]
#[test]
fn golden_manifest_digests_of_core_filesystem_and_core_profile() {
    let dir = tempfile::tempdir().unwrap();
    let report = build(
        dir.path(),
        &repo_packages(),
        &dir.path().join("out"),
        "022",
        "UTC",
        &["core-filesystem", "core-profile"],
    );
    assert_eq!(
        manifest_digest(&report, "core-filesystem"),
        "sha256:4949507b6da400d37c76769f9966580971651822140f106f512c4b309542502d"
    );
    assert_eq!(
        manifest_digest(&report, "core-profile"),
        "sha256:d854889d7595492c95c2a38b9c55df018e2fd7fa8d124f2119d395013689d391"
    );
}
