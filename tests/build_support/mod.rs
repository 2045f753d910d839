//! Owns: fixtures shared by the build tests: a native package definition
//! written into a StageX tree, the buildah build command line, and the
//! package names of a build report. Starts no peer and runs no command
//! (its includers also include `peers`).
use std::path::Path;

use serde_json::Value;

/// Writes `packages/core/<name>/package.toml`: a native package holding
/// `etc/<name>` with `content`, on `base` when given (`core-a`).
pub fn native_package(root: &Path, name: &str, base: Option<&str>, content: &str) {
    let dir = root.join("packages/core").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let base = base
        .map(|b| format!("[native]\nbase = \"{b}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("package.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"1.0\"\n{base}[[native.file]]\npath = \"etc/{name}\"\ncontent = \"{content}\\n\"\n"),
    )
    .unwrap();
}

/// `stagex --json --root ROOT build --builder buildah ARGS...` (to run).
pub fn buildah_build(root: &Path, args: &[&str]) -> std::process::Command {
    let mut command = crate::peers::tools::stagex();
    command
        .arg("--json")
        .arg("--root")
        .arg(root)
        .args(["build", "--builder", "buildah"])
        .args(args);
    command
}

/// The packages a `build --json` report lists as built, in its order.
pub fn built(report: &Value) -> Vec<&str> {
    report["built"]
        .as_array()
        .unwrap_or_else(|| panic!("no built list in {report}"))
        .iter()
        .map(|r| r["package"].as_str().unwrap())
        .collect()
}
