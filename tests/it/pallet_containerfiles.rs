//! Owns: the proof that StageX's own pallet Containerfiles
//! (`packages/pallet/*/Containerfile` of release 2026.03.0) translate, each
//! into the same composition plan as the matching `pallets/*.toml`; that a
//! line the composer cannot honour is refused naming file and line; and
//! that a `pallets/<name>.toml` overrides the Containerfile of that name.
use crate::peers;

use std::path::{Path, PathBuf};

use peers::tools;
use stagex::pallet::definition::Catalog;

fn real_packages() -> Option<PathBuf> {
    tools::real_stagex_tree().map(|tree| tree.join("packages"))
}

#[test]
fn every_stagex_pallet_containerfile_plans_like_its_toml() {
    let Some(packages) = real_packages() else {
        return;
    };
    let none = Path::new("/nonexistent-pallets-dir");
    let from_tree = Catalog::load_with_tree(none, &packages).unwrap();
    let from_toml =
        Catalog::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pallets")).unwrap();
    assert_eq!(from_tree.pallets.len(), 20);
    assert_eq!(
        from_tree.pallets.keys().collect::<Vec<_>>(),
        from_toml.pallets.keys().collect::<Vec<_>>()
    );
    for name in from_tree.pallets.keys() {
        let expr = name.parse().unwrap();
        let want = from_toml.expand(&expr).unwrap();
        let got = from_tree.expand(&expr).unwrap();
        assert_eq!(got, want, "pallet-{name}");
    }
    // The RUN lines of pallet-rust became its hard links, per arch.
    let rust = &from_tree.pallets["rust"];
    assert_eq!(rust.links.len(), 7);
    assert_eq!(
        rust.links[3].path,
        "/usr/lib/rustlib/{arch}-unknown-linux-musl/bin/gcc-ld/ld.lld"
    );
}

fn tree_with(name: &str, containerfile: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("packages/pallet").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Containerfile"), containerfile).unwrap();
    root
}

#[test]
fn an_unsupported_run_is_refused_naming_file_and_line() {
    let root = tree_with(
        "bad",
        "FROM stagex/core-profile\nCOPY --from=stagex/core-busybox . /\n\nRUN ln /bin/a /bin/b && chmod 4755 /bin/b\n",
    );
    let err = format!(
        "{:#}",
        Catalog::load_with_tree(&root.path().join("pallets"), &root.path().join("packages"))
            .unwrap_err()
    );
    assert!(
        err.contains("packages/pallet/bad/Containerfile:4"),
        "no file:line in {err}"
    );
    assert!(err.contains("chmod 4755"), "{err}");

    // Through the command line too, before anything is pulled.
    let out = tools::stagex()
        .arg("--root")
        .arg(root.path())
        .args(["pallet", "bad", "--no-verify", "--source"])
        .arg(root.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("packages/pallet/bad/Containerfile:4"),
        "{stderr}"
    );
}

#[test]
fn a_toml_of_the_same_name_overrides_the_containerfile() {
    let root = tree_with(
        "tool",
        "FROM stagex/core-profile\nCOPY --from=stagex/core-busybox . /\nENTRYPOINT [\"/bin/sh\"]\n",
    );
    let pallets = root.path().join("pallets");
    let packages = root.path().join("packages");
    let catalog = Catalog::load_with_tree(&pallets, &packages).unwrap();
    assert_eq!(
        catalog.pallets["tool"].entrypoint,
        Some(vec!["/bin/sh".to_string()])
    );
    std::fs::create_dir_all(&pallets).unwrap();
    std::fs::write(
        pallets.join("tool.toml"),
        "base = \"core-profile\"\npackages = [\"core-busybox\"]\nentrypoint = [\"/bin/ash\"]\n",
    )
    .unwrap();
    let catalog = Catalog::load_with_tree(&pallets, &packages).unwrap();
    assert_eq!(
        catalog.pallets["tool"].entrypoint,
        Some(vec!["/bin/ash".to_string()])
    );
}
