//! Owns: `stagex build --dry-run` on this repository's native packages (no
//! builder needed): the plan in build order, and `up_to_date` following the
//! inputs record a build writes in `out/<id>/` — false before a build, true
//! after, false when an input changes, true again once rebuilt, and a
//! dependency rebuilt to the very same bytes leaves its dependants fresh.
use crate::peers;

use std::path::{Path, PathBuf};

use peers::tools::{self, run_ok};
use serde_json::Value;

/// This repository's packages plus core-motd, a native package on top of
/// core-filesystem.
fn repo() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let packages = root.path().join("packages");
    tools::copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packages"),
        &packages,
    );
    std::fs::create_dir_all(packages.join("core/motd")).unwrap();
    std::fs::write(
        packages.join("core/motd/package.toml"),
        "[package]\nname = \"motd\"\nversion = \"1.0\"\n\n[native]\nbase = \"core-filesystem\"\n\n[[native.file]]\npath = \"etc/motd\"\ncontent = \"hi\\n\"\n",
    )
    .unwrap();
    root
}

/// `stagex --root ROOT ARGS...`, which must succeed, without the
/// environment's SOURCE_DATE_EPOCH.
fn stagex(root: &Path, args: &[&str]) -> std::process::Output {
    run_ok(tools::stagex_in(root, args).env_remove("SOURCE_DATE_EPOCH"))
}

/// (name, `field`) of every entry of `build --dry-run --json core-motd`:
/// `up_to_date` (what out/ holds) or `build` (what a real `stagex build
/// core-motd` would build, the scheduler's own decision).
fn plan_of(root: &Path, field: &str) -> Vec<(String, bool)> {
    let out = stagex(root, &["--json", "build", "--dry-run", "core-motd"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["containerfile"], Value::Null, "native: no Containerfile");
            (
                e["name"].as_str().unwrap().to_string(),
                e[field].as_bool().unwrap(),
            )
        })
        .collect()
}

fn plan(root: &Path) -> Vec<(String, bool)> {
    plan_of(root, "up_to_date")
}

fn builds(root: &Path) -> Vec<(String, bool)> {
    plan_of(root, "build")
}

fn fresh(flags: &[bool]) -> Vec<(String, bool)> {
    ["core-filesystem", "core-motd"]
        .iter()
        .zip(flags)
        .map(|(n, f)| (n.to_string(), *f))
        .collect()
}

#[test]
fn up_to_date_follows_the_inputs_record() {
    let root = repo();
    let r = root.path();
    assert_eq!(plan(r), fresh(&[false, false]));
    assert_eq!(builds(r), fresh(&[true, true]));
    stagex(r, &["build", "core-motd"]);
    assert!(r.join("out/core-motd/.stagex-inputs").is_file());
    assert_eq!(plan(r), fresh(&[true, true]));
    let text = String::from_utf8(stagex(r, &["build", "--dry-run"]).stdout).unwrap();
    assert!(
        text.contains("core-motd 1.0") && text.contains("up to date (after core-filesystem)"),
        "{text}"
    );

    // Another SOURCE_DATE_EPOCH is another build argument: nothing is fresh.
    let other = run_ok(
        tools::stagex()
            .arg("--json")
            .arg("--root")
            .arg(r)
            .args(["build", "--dry-run", "core-motd"])
            .env("SOURCE_DATE_EPOCH", "2"),
    );
    let doc: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(doc["plan"][0]["up_to_date"], false);
    assert_eq!(doc["plan"][0]["build_args"]["SOURCE_DATE_EPOCH"], "2");

    // A changed input: stale, and so is everything built on it.
    let toml = r.join("packages/core/filesystem/package.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("# a comment changes the inputs, not the image\n");
    std::fs::write(&toml, text).unwrap();
    assert_eq!(plan(r), fresh(&[false, false]));
    // ...but, as `stagex build core-motd` would, the dry run leaves the
    // stale dependency nobody named that out/ holds, and says so.
    assert_eq!(builds(r), fresh(&[false, true]));
    let text = String::from_utf8(stagex(r, &["build", "--dry-run", "core-motd"]).stdout).unwrap();
    assert!(
        text.contains("core-filesystem") && text.contains("not rebuilt"),
        "{text}"
    );

    // Rebuilt to the very same bytes: the dependant is fresh again.
    stagex(r, &["build", "core-filesystem"]);
    assert_eq!(plan(r), fresh(&[true, true]));
}
