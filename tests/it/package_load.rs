//! package.toml fixtures: a tree using every field and placeholder loads
//! and expands as StageX would; each broken fixture is rejected with an
//! error naming its file and field.
use std::path::PathBuf;

use stagex::package::PackageTree;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/packages")
}

#[test]
fn good_tree_loads_with_every_field_and_placeholder() {
    let tree = PackageTree::load(&fixtures().join("good")).unwrap();
    // core-everything defines two subpackages: each is its own image, the
    // definition is none.
    assert_eq!(
        tree.packages.keys().collect::<Vec<_>>(),
        [
            "bootstrap-stage0",
            "core-everything-dev",
            "core-everything-doc",
            "core-inherit"
        ]
    );
    let err = tree.get("core-everything").unwrap_err().to_string();
    assert!(
        err.contains("core-everything-doc, core-everything-dev")
            || err.contains("core-everything-dev, core-everything-doc"),
        "{err}"
    );
    let p = tree.get("core-everything-doc").unwrap();
    assert_eq!(p.origin.as_deref(), Some("core-everything"));
    assert_eq!(p.target.as_deref(), Some("package-everything-doc"));
    assert!(p.subpackages.is_empty());
    assert_eq!(p.name, "everything", "sources fetched once, per definition");
    assert_eq!(p.platforms.len(), 2);
    assert_eq!(p.license.as_deref(), Some("MIT OR Apache-2.0"));
    let sources = p.resolved_sources().unwrap();
    assert_eq!(sources[0].id, "everything");
    assert_eq!(sources[0].file, "everything-3.2.1-rc.1.tar.xz");
    assert_eq!(
        sources[0].urls,
        [
            "https://a.example.invalid/3/3.2/everything-3.2.1-rc.1.tar.xz",
            "https://b.example.invalid/v3-2-1-rc-1/3_2_1-rc_1/3.2.1/everything-3.2.1-rc.1.tar.xz",
        ]
    );
    assert_eq!(sources[1].id, "extra");
    assert_eq!(sources[1].file, "extra-0.9.tar.gz");
    assert_eq!(
        sources[1].git_sha.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    let inherit = tree.get("inherit").unwrap();
    assert_eq!(inherit.version.as_deref(), Some("3.2.1-rc.1"));
    assert_eq!(
        inherit.resolved_sources().unwrap()[0].file,
        "inherit-3.2.1-rc.1.tar.gz"
    );
    let stage0 = tree.get("bootstrap-stage0").unwrap();
    assert_eq!(stage0.version_or_latest(), "latest");
    assert_eq!(stage0.platforms[0].architecture, "386");
}

#[test]
fn broken_fixtures_are_rejected_naming_file_and_field() {
    let cases = [
        ("missing-hash", "missing field `hash`"),
        ("bad-hash", "sources.x.hash"),
        ("unknown-placeholder", "{verison}"),
        (
            "version-and-from",
            "package.version and package.version_from",
        ),
        ("from-nowhere", "package.version_from = \"core-nowhere\""),
    ];
    for (case, field) in cases {
        let err = format!(
            "{:#}",
            PackageTree::load(&fixtures().join("broken").join(case)).unwrap_err()
        );
        assert!(
            err.contains(&format!("broken/{case}/core/x/package.toml")),
            "{case}: file not named: {err}"
        );
        assert!(err.contains(field), "{case}: expected {field:?} in: {err}");
    }
}

/// `stagex lint` over a tree: each unknown key of a package.toml or pallet
/// file and each file that does not load is one line naming the file (and
/// line), exit 1; a clean tree passes. Loading commands only warn.
#[test]
fn lint_lists_unknown_keys_and_broken_files_one_line_each() {
    let root = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let path = root.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "packages/core/x/package.toml",
        "[package]\nname = \"x\"\nversion = \"1\"\nlicenses = \"MIT\"\n",
    );
    write(
        "packages/core/y/package.toml",
        "[package]\nversion = \"1\"\n",
    );
    write("pallets/a.toml", "base = \"scratch\"\npakages = []\n");
    let lint = |root: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stagex"))
            .arg("--root")
            .arg(root)
            .arg("lint")
            .output()
            .unwrap()
    };
    let out = lint(root.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].ends_with(
        "packages/core/x/package.toml:4: unknown field `package.licenses` (did you mean `license`?)"
    ));
    assert!(
        lines[1].contains("packages/core/y/package.toml: ") && lines[1].contains("`name`"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].ends_with("pallets/a.toml:2: unknown field `pakages` (did you mean `packages`?)")
    );
    // Fixed, the same tree lints clean.
    write(
        "packages/core/y/package.toml",
        "[package]\nname = \"y\"\nversion = \"1\"\n",
    );
    write("pallets/a.toml", "base = \"scratch\"\n");
    write(
        "packages/core/x/package.toml",
        "[package]\nname = \"x\"\nversion = \"1\"\n",
    );
    let out = lint(root.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty());
}
