//! `stagex pallet --flatten` of a package whose layer was written by
//! another tar writer: a pax global header first (as `git archive` writes),
//! non-ASCII names (in the header and in pax records), a GNU long name, a
//! hard link, a symlink and unusual modes. The flattened image, unpacked by
//! umoci, must show exactly the files umoci shows for the layered
//! composition (names, types, modes, contents, link targets, hard links).
//!
//! umoci itself refuses a layer holding a pax global header ("unknown
//! typeflag 'g'", where docker and containerd skip it), so its reference
//! for the layered composition is the twin package: the same tar without
//! the global header. Flattening either twin gives the same layer bytes.
use crate::pallet_support;
use crate::peers;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use pallet_support::*;
use peers::tools;
use stagex::oci::config::{History, RunConfig};
use stagex::oci::descriptor::{Descriptor, Platform};
use stagex::oci::digest::Digest;
use stagex::oci::image::ImageLayer;
use stagex::oci::layout::Layout;
use stagex::oci::media_type;

const NON_ASCII: &str = "usr/share/doc/café/ü.txt";
const NON_ASCII_PAX: &str = "usr/share/doc/café/naïve-ﬁle.txt";

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(size);
    h
}

/// The foreign layer's tar (uncompressed), with or without a leading pax
/// global header.
fn foreign_tar(global_header: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    if global_header {
        let record = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
        let mut g = header(tar::EntryType::XGlobalHeader, 0o644, record.len() as u64);
        g.set_path("pax_global_header").unwrap();
        g.set_cksum();
        b.append(&g, &record[..]).unwrap();
    }
    for dir in [
        "./",
        "./usr/",
        "./usr/bin/",
        "./usr/share/",
        "./usr/share/doc/",
        "./usr/share/doc/café/",
    ] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, dir, &b""[..]).unwrap();
    }
    let mut h = header(tar::EntryType::Regular, 0o640, "grüße".len() as u64);
    b.append_data(&mut h, format!("./{NON_ASCII}"), "grüße".as_bytes())
        .unwrap();
    b.append_pax_extensions([("path", NON_ASCII_PAX.as_bytes())])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o600, 4);
    h.set_path("placeholder").unwrap();
    h.set_cksum();
    b.append(&h, &b"pax\n"[..]).unwrap();
    let long = format!("usr/share/doc/café/{}.txt", "long".repeat(40));
    let mut h = header(tar::EntryType::Regular, 0o644, 5);
    b.append_data(&mut h, &long, &b"long\n"[..]).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o4755, 7);
    b.append_data(&mut h, "./usr/bin/tool", &b"#!tool\n"[..])
        .unwrap();
    let mut h = header(tar::EntryType::Link, 0o4755, 0);
    b.append_link(&mut h, "usr/bin/tool-again", "./usr/bin/tool")
        .unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "usr/bin/tl", "tool").unwrap();
    b.into_inner().unwrap()
}

/// `out/core-foreign/`: the shared filesystem layer, then the foreign one;
/// plus `out/core-other/`, a package of our own writer.
fn world(out: &Path, global_header: bool) {
    write_package(
        out,
        "core-other",
        &[filesystem_layer(), package_layer("core-other")],
        RunConfig::default(),
    );
    let layout = Layout::create(out.join("core-foreign")).unwrap();
    let base = stagex::layer::writer::write_layer_to_layout(
        &filesystem_layer(),
        &Default::default(),
        &layout,
    )
    .unwrap();
    let tar = foreign_tar(global_header);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let digest = layout.write_blob(&gz).unwrap();
    let layers = vec![
        ImageLayer {
            descriptor: base.descriptor(),
            diff_id: base.diff_id.clone(),
            history: History::default(),
        },
        ImageLayer {
            descriptor: Descriptor::new(media_type::OCI_LAYER_GZIP, digest, gz.len() as u64),
            diff_id: Digest::of_bytes(&tar),
            history: History::default(),
        },
    ];
    let mut manifest = write_image(&layout, Platform::host(), RunConfig::default(), layers);
    manifest.platform = None;
    layout.set_ref(Some("latest"), manifest).unwrap();
}

/// What umoci unpacked, per path: type, mode, content or target, and the
/// number of links of a file.
fn listing(rootfs: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(rootfs).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path.strip_prefix(rootfs).unwrap().to_str().unwrap();
        if rel.is_empty() {
            continue;
        }
        let meta = std::fs::symlink_metadata(path).unwrap();
        let mode = meta.mode() & 0o7777;
        let what = if meta.file_type().is_symlink() {
            format!("symlink -> {}", std::fs::read_link(path).unwrap().display())
        } else if meta.is_dir() {
            format!("dir {mode:o}")
        } else {
            let content = Digest::of_bytes(&std::fs::read(path).unwrap());
            format!("file {mode:o} nlink {} {content}", meta.nlink())
        };
        out.insert(rel.to_string(), what);
    }
    out
}

/// Composes `core-foreign+core-other` from `out` into `<tmp>/<name>`
/// (flattened or not); returns umoci's listing and the report's layers.
fn compose(
    tmp: &Path,
    out: &Path,
    name: &str,
    flatten: bool,
) -> (BTreeMap<String, String>, Vec<serde_json::Value>) {
    let image = tmp.join(name);
    let dest = format!("oci:{}:x", image.display());
    let mut args = vec!["core-foreign+core-other", "--source", out.to_str().unwrap()];
    if flatten {
        args.push("--flatten");
    }
    args.extend(["--output", &dest]);
    let report = pallet_json(&tmp.join("store"), &args);
    let layers = report["platforms"][0]["layers"].as_array().unwrap().clone();
    let rootfs = umoci_unpack(
        &format!("{}:x", image.display()),
        &tmp.join(format!("{name}-bundle")),
    );
    (listing(&rootfs), layers)
}

#[test]
fn flatten_of_a_foreign_layer_matches_the_layered_image() {
    let Some(_) = tools::require(&["umoci"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (out, twin) = (tmp.path().join("out"), tmp.path().join("twin"));
    world(&out, true);
    world(&twin, false);
    let (flat, flat_layers) = compose(tmp.path(), &out, "flat", true);
    assert_eq!(flat_layers.len(), 1);
    let (layered, layers) = compose(tmp.path(), &twin, "layered", false);
    assert_eq!(
        layers.len(),
        3,
        "the shared base once, then each package layer"
    );
    assert_eq!(flat, layered);
    let (_, twin_flat_layers) = compose(tmp.path(), &twin, "twin-flat", true);
    assert_eq!(flat_layers[0]["digest"], twin_flat_layers[0]["digest"]);

    let content = Digest::of_bytes("grüße".as_bytes());
    assert_eq!(layered[NON_ASCII], format!("file 640 nlink 1 {content}"));
    assert!(layered[NON_ASCII_PAX].starts_with("file 600 nlink 1"));
    assert!(layered["usr/bin/tool"].starts_with("file 4755 nlink 2"));
    assert_eq!(layered["usr/bin/tl"], "symlink -> tool");
    assert!(layered.contains_key("usr/share/doc/core-other/ID"));
    assert!(!layered.contains_key("pax_global_header"));
}
