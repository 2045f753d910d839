//! `stagex build` resolves the dependency graph before building anything:
//! a cycle or a missing package is one clear error naming the chain; with
//! no argument every package is built in dependency order.
use crate::build_support;
use crate::peers;

use std::path::Path;

use peers::tools::stagex;

fn package(root: &Path, stage: &str, name: &str, containerfile: Option<&str>, extra: &str) {
    let dir = root.join("packages").join(stage).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!("[package]\nname = \"{name}\"\n{extra}"),
    )
    .unwrap();
    if let Some(text) = containerfile {
        std::fs::write(dir.join("Containerfile"), text).unwrap();
    }
}

fn build(root: &Path, args: &[&str]) -> std::process::Output {
    stagex()
        .arg("--root")
        .arg(root)
        .arg("build")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_cycle_is_reported_as_a_chain() {
    let root = tempfile::tempdir().unwrap();
    package(
        root.path(),
        "core",
        "a",
        Some("FROM stagex/core-b AS package\n"),
        "",
    );
    package(
        root.path(),
        "core",
        "b",
        Some("FROM scratch\nCOPY --from=stagex/core-c . /\n"),
        "",
    );
    package(
        root.path(),
        "core",
        "c",
        Some("FROM scratch\nCOPY --from=stagex/core-a:1.0 . /\n"),
        "",
    );
    let out = build(root.path(), &["core-a"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dependency cycle: core-a -> core-b -> core-c -> core-a"),
        "{stderr}"
    );
    assert!(!root.path().join("out/core-a").exists());
}

#[test]
fn a_missing_package_names_who_needs_it() {
    let root = tempfile::tempdir().unwrap();
    package(
        root.path(),
        "user",
        "app",
        Some("FROM stagex/core-musl AS package\n"),
        "",
    );
    let out = build(root.path(), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing package core-musl: needed by user-app -> core-musl"),
        "{stderr}"
    );
}

#[test]
fn no_argument_builds_everything_dependencies_first() {
    let root = tempfile::tempdir().unwrap();
    // Named so that alphabetical order would be wrong.
    package(
        root.path(),
        "core",
        "aaa",
        None,
        "[native]\nbase = \"core-zzz\"\n[[native.file]]\npath = \"a\"\ncontent = \"a\"\n",
    );
    package(
        root.path(),
        "core",
        "zzz",
        None,
        "[[native.file]]\npath = \"z\"\ncontent = \"z\"\n",
    );
    let out = stagex()
        .arg("--json")
        .arg("--root")
        .arg(root.path())
        .arg("build")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(build_support::built(&report), ["core-zzz", "core-aaa"]);
}
