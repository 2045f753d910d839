//! Owns: the end-to-end proof that `stagex pallet` applies the entry rules
//! extraction and `--flatten` apply. Package images whose second layer is
//! crafted byte by byte with the tar crate (an entry kind per test: writing
//! through a symlink, an absolute path, `..`, hard links to a missing
//! target, to a directory and to `/etc/passwd`, device nodes and fifos),
//! composed from a directory of OCI layouts, are refused with one error
//! naming the package, the layer digest and the entry; special files pass
//! with `--allow-special-files`; a decompression bomb is refused under a
//! small `STAGEX_MAX_LAYER_BYTES` (also when its index was cached under a
//! larger one), and `--flatten` never stages more.
use crate::pallet_support;

use std::io::Write;
use std::path::Path;

use pallet_support::*;
use stagex::layer::tree::{FileTree, TreeEntry};
use stagex::oci::config::{History, RunConfig};
use stagex::oci::descriptor::{Descriptor, Platform};
use stagex::oci::digest::Digest;
use stagex::oci::image::ImageLayer;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;

/// One crafted tar entry: name and link target are copied verbatim into
/// the header (the tar crate's setters refuse `/x` and `..`, which is the
/// point here).
struct Raw<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
}

fn raw<'a>(name: &'a str, kind: tar::EntryType, link: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind,
        link,
        data: b"",
    }
}

fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let old = h.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        builder.append(&h, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Writes `out/<name>/`: the shared filesystem layer, then `tar` (gzip);
/// returns the digest of the crafted layer.
fn crafted_package(out: &Path, name: &str, tar: &[u8]) -> Digest {
    let layout = Layout::create(out.join(name)).unwrap();
    let base = stagex::layer::writer::write_layer_to_layout(
        &filesystem_layer(),
        &Default::default(),
        &layout,
    )
    .unwrap();
    let gz = gzip(tar);
    let digest = layout.write_blob(&gz).unwrap();
    let layers = vec![
        ImageLayer {
            descriptor: base.descriptor(),
            diff_id: base.diff_id.clone(),
            history: History::default(),
        },
        ImageLayer {
            descriptor: Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                digest.clone(),
                gz.len() as u64,
            ),
            diff_id: Digest::of_bytes(tar),
            history: History::default(),
        },
    ];
    let mut manifest = write_image(&layout, Platform::host(), RunConfig::default(), layers);
    manifest.platform = None;
    layout.set_ref(Some("latest"), manifest).unwrap();
    digest
}

/// A package of our own writer, composed below the crafted one.
fn plain_package(out: &Path) {
    write_package(
        out,
        "core-plain",
        &[filesystem_layer(), package_layer("core-plain")],
        RunConfig::default(),
    );
}

/// Composes `core-plain+core-evil` whose crafted layer is `entries`; the
/// pallet must be refused with an error naming the package, the crafted
/// layer and every one of `named`. Returns the error.
fn refused(entries: &[Raw], named: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    plain_package(&out);
    let layer = crafted_package(&out, "core-evil", &raw_tar(entries));
    let store = tmp.path().join("store");
    let stderr = pallet_fails(
        &store,
        &["core-plain+core-evil", "--source", out.to_str().unwrap()],
    );
    assert!(
        stderr.contains("core-evil") && stderr.contains(&layer.to_string()),
        "the error must name the package and layer {layer}: {stderr}"
    );
    for what in named {
        assert!(
            stderr.contains(what),
            "the error must name {what:?}: {stderr}"
        );
    }
    // The same layer is refused by --flatten, before anything is written.
    let flat = pallet_fails(
        &store,
        &[
            "core-plain+core-evil",
            "--source",
            out.to_str().unwrap(),
            "--flatten",
        ],
    );
    assert!(flat.contains(&layer.to_string()), "{flat}");
    assert_no_scratch(&store);
    stderr
}

/// No squash scratch directory is left in the store.
fn assert_no_scratch(store: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".squash-"))
        .collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
}

use tar::EntryType as T;

#[test]
fn writing_through_a_symlink_is_refused() {
    let stderr = refused(
        &[
            raw("evil", T::Symlink, "/tmp"),
            raw("evil/x", T::Regular, ""),
        ],
        &["/evil/x", "symlink (-> /tmp)"],
    );
    assert!(stderr.contains("cannot be composed"), "{stderr}");
}

#[test]
fn an_absolute_path_is_refused() {
    refused(
        &[raw("/etc/evil", T::Regular, "")],
        &["/etc/evil", "absolute path"],
    );
}

#[test]
fn a_dot_dot_path_is_refused() {
    refused(
        &[raw("usr/../../x", T::Regular, "")],
        &["usr/../../x", ".."],
    );
}

#[test]
fn a_hard_link_to_a_missing_target_is_refused() {
    refused(
        &[raw("usr/bin/hl", T::Link, "usr/bin/nothing")],
        &["/usr/bin/hl", "does not exist"],
    );
}

#[test]
fn a_hard_link_to_a_directory_is_refused() {
    refused(
        &[raw("usr/", T::Directory, ""), raw("hl", T::Link, "usr")],
        &["/hl", "is a directory"],
    );
}

#[test]
fn a_hard_link_to_etc_passwd_is_refused() {
    refused(
        &[raw("hl", T::Link, "/etc/passwd")],
        &["/hl", "\"/etc/passwd\""],
    );
}

#[test]
fn writing_through_another_packages_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut linked = FileTree::new();
    linked.insert("evil", TreeEntry::symlink("/tmp")).unwrap();
    write_package(
        &out,
        "core-linked",
        &[filesystem_layer(), linked],
        RunConfig::default(),
    );
    // Valid alone (no parent entry for evil/), not over core-linked.
    let layer = crafted_package(
        &out,
        "core-evil",
        &raw_tar(&[raw("evil/x", T::Regular, "")]),
    );
    let src = out.to_str().unwrap();
    let store = tmp.path().join("store");
    pallet_json(&store, &["core-evil", "--source", src]);
    let stderr = pallet_fails(&store, &["core-linked+core-evil", "--source", src]);
    for what in [
        "core-evil@sha256:",
        &layer.to_string(),
        "/evil/x",
        "symlink (-> /tmp)",
    ] {
        assert!(stderr.contains(what), "{what:?}: {stderr}");
    }
}

#[test]
fn device_nodes_and_fifos_need_allow_special_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    plain_package(&out);
    let tar = raw_tar(&[
        raw("dev/", T::Directory, ""),
        raw("dev/null", T::Char, ""),
        raw("dev/sda", T::Block, ""),
        raw("run/fifo", T::Fifo, ""),
    ]);
    let layer = crafted_package(&out, "core-dev", &tar);
    let src = out.to_str().unwrap();
    let store = tmp.path().join("store");
    let args = ["core-plain+core-dev", "--source", src];
    let stderr = pallet_fails(&store, &args);
    for what in [
        "core-dev@sha256:",
        &layer.to_string(),
        "/dev/null",
        "character device",
        "and 2 more",
        "--allow-special-files",
    ] {
        assert!(stderr.contains(what), "{what:?}: {stderr}");
    }
    let report = pallet_json(&store, &[&args[..], &["--allow-special-files"]].concat());
    let reused: Vec<&str> = layers_of(&report, "reused")
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert!(reused.contains(&layer.to_string().as_str()), "{report}");
    // The verdict is cached with the index: a warm run refuses again.
    assert!(pallet_fails(&store, &args).contains("/dev/null"));
}

#[test]
fn a_decompression_bomb_is_refused_and_flatten_stages_no_more_than_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    plain_package(&out);
    // 8 MiB of zeros: about 8 KiB of gzip.
    let zeros = vec![0u8; 8 << 20];
    let bomb = raw_tar(&[Raw {
        name: "zeros",
        kind: T::Regular,
        link: "",
        data: &zeros,
    }]);
    let layer = crafted_package(&out, "core-bomb", &bomb);
    let src = out.to_str().unwrap();
    let store = tmp.path().join("store");
    let limit = (1u64 << 20).to_string();
    // Indexed (and cached) under the default limit first: the smaller limit
    // set afterwards still applies to the cached index.
    pallet_json(&store, &["core-bomb", "--source", src]);
    let output = pallet_command(
        &store,
        &["core-plain+core-bomb", "--source", src, "--flatten"],
    )
    .env("STAGEX_MAX_LAYER_BYTES", &limit)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the bomb was composed: {stderr}");
    for what in [
        "core-bomb",
        &layer.to_string(),
        "STAGEX_MAX_LAYER_BYTES",
        &limit,
    ] {
        assert!(stderr.contains(what), "{what:?}: {stderr}");
    }
    assert_no_scratch(&store);

    // Two layers under the limit whose merged files are over it: composed
    // as layers, refused flattened once the scratch would pass the limit.
    let half = vec![0u8; 700 << 10];
    for name in ["core-half-a", "core-half-b"] {
        let tar = raw_tar(&[Raw {
            name,
            kind: T::Regular,
            link: "",
            data: &half,
        }]);
        crafted_package(&out, name, &tar);
    }
    let halves = ["core-half-a+core-half-b", "--source", src];
    let layered = pallet_command(&store, &halves)
        .env("STAGEX_MAX_LAYER_BYTES", &limit)
        .output()
        .unwrap();
    assert!(
        layered.status.success(),
        "{}",
        String::from_utf8_lossy(&layered.stderr)
    );
    let flat = pallet_command(&store, &[&halves[..], &["--flatten"]].concat())
        .env("STAGEX_MAX_LAYER_BYTES", &limit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&flat.stderr);
    assert!(!flat.status.success(), "{stderr}");
    assert!(
        stderr.contains("would hold more than") && stderr.contains(&limit),
        "{stderr}"
    );
    assert_no_scratch(&store);
}
