//! Every pallet definition shipped in pallets/ composes: each is expanded,
//! every package it names (bases, packages, single-file copy sources) is
//! seeded as a small image in local layouts, and `stagex pallet <name>`
//! must write an image that umoci unpacks and that holds every package's
//! files, with gcc-gnu-gnu's single-file copy (core-bash:/bin/bash ->
//! /bin/sh) in place.
use crate::pallet_support;
use crate::peers;

use std::collections::BTreeSet;
use std::fs;

use pallet_support::{
    filesystem_layer, package_layer, pallet_json, repo_root, umoci_unpack, write_package,
};
use peers::tools;
use stagex::layer::tree::{FileSource, TreeEntry};
use stagex::oci::config::RunConfig;
use stagex::pallet::definition::Catalog;
use stagex::pallet::expr::Expr;

fn pallet_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo_root().join("pallets"))
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_shipped_pallet_composes_and_unpacks() {
    let Some(_) = tools::require(&["umoci"]) else {
        return;
    };
    let catalog = Catalog::load(&repo_root().join("pallets")).unwrap();
    let pallets = pallet_names();
    assert!(
        pallets.len() >= 20,
        "expected the StageX pallets in pallets/, found {pallets:?}"
    );

    // Every image any pallet needs, and the packages whose files each must hold.
    let mut images = BTreeSet::new();
    let mut contents = Vec::new();
    for pallet in &pallets {
        let expr: Expr = pallet.parse().unwrap();
        let plan = catalog
            .expand(&expr)
            .unwrap_or_else(|e| panic!("pallet {pallet}: {e:#}"));
        let names: Vec<String> = plan.references().into_iter().map(|r| r.name).collect();
        assert!(!names.is_empty(), "pallet {pallet} names no package");
        images.extend(names.iter().cloned());
        contents.push((pallet.clone(), names));
    }

    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    for name in &images {
        let mut layer = package_layer(name);
        if name == "core-bash" {
            layer
                .insert(
                    "bin/bash",
                    TreeEntry::file(FileSource::Bytes(b"bash program".to_vec()), 0o755),
                )
                .unwrap();
        }
        write_package(
            &out,
            name,
            &[filesystem_layer(), layer],
            RunConfig::default(),
        );
    }

    let store = work.path().join("store");
    for (pallet, names) in &contents {
        let dest = work.path().join(format!("img-{pallet}"));
        let report = pallet_json(
            &store,
            &[
                "--source",
                out.to_str().unwrap(),
                "--output",
                &format!("oci:{}:latest", dest.display()),
                pallet,
            ],
        );
        assert_eq!(report["platforms"].as_array().unwrap().len(), 1, "{pallet}");
        let bundle = work.path().join(format!("bundle-{pallet}"));
        let rootfs = umoci_unpack(&format!("{}:latest", dest.display()), &bundle);
        for name in names {
            let marker = rootfs.join(format!("usr/share/doc/{name}/ID"));
            // Images used only as single-file copy sources contribute one file.
            let copy_only = name == "core-bash" && pallet == "gcc-gnu-gnu";
            if !copy_only {
                assert_eq!(
                    fs::read_to_string(&marker)
                        .unwrap_or_else(|e| panic!("{pallet}: {} missing: {e}", marker.display())),
                    format!("{name}\n")
                );
            }
        }
        if pallet == "gcc-gnu-gnu" {
            assert_eq!(fs::read(rootfs.join("bin/sh")).unwrap(), b"bash program");
        }
    }
}
