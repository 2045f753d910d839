//! Owns: a throwaway StageX repository root holding one package, `core-demo`,
//! whose single source `demo-1.0.tar` comes from the given mirrors (for
//! `stagex fetch` tests).

/// A repo root with `packages/core/demo/package.toml`: source
/// `demo-1.0.tar` with sha256 `hash` (hex), fetched from `mirrors` in order.
pub fn demo_root(mirrors: &[String], hash: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("packages/core/demo");
    std::fs::create_dir_all(&dir).unwrap();
    let mirrors: Vec<String> = mirrors.iter().map(|m| format!("{m:?}")).collect();
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "[package]\nname = \"demo\"\nversion = \"1.0\"\n\n[sources.demo]\nhash = \"{hash}\"\nformat = \"tar\"\nfile = \"demo-{{version}}.{{format}}\"\nmirrors = [{}]\n",
            mirrors.join(", ")
        ),
    )
    .unwrap();
    root
}
