//! Golden digests of the layer writer, and GNU tar/gzip reading our layers.
use crate::layer_support;

use std::fs;
use std::process::Command;

use layer_support::{golden_layer, GOLDEN_DIFF_ID, GOLDEN_DIGEST};
use stagex::layer::{index_layer, EntryType, FileTree, LayerOptions};
use stagex::oci::digest::Digest;
use stagex::oci::media_type::LayerCompression;

#[test]
fn golden_tree_has_pinned_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (written, blob) = golden_layer(dir.path(), false, &LayerOptions::default());
    assert_eq!(written.diff_id.to_string(), GOLDEN_DIFF_ID);
    assert_eq!(written.digest.to_string(), GOLDEN_DIGEST);
    assert_eq!(written.size, blob.len() as u64);

    // The uncompressed variant is the same tar: its digest is the diff_id.
    let dir2 = tempfile::tempdir().unwrap();
    let plain = LayerOptions {
        compression: LayerCompression::None,
        ..LayerOptions::default()
    };
    let (tar_written, _) = golden_layer(dir2.path(), false, &plain);
    assert_eq!(tar_written.digest.to_string(), GOLDEN_DIFF_ID);
    assert_eq!(tar_written.diff_id.to_string(), GOLDEN_DIFF_ID);
}

#[test]
fn golden_layer_indexes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (written, blob) = golden_layer(dir.path(), false, &LayerOptions::default());
    let index = index_layer(&blob[..], LayerCompression::Gzip).unwrap();
    assert_eq!(index.diff_id, written.diff_id);
    let find = |p: &str| index.entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(find("usr/bin/su").mode, 0o4755);
    assert_eq!(find("usr/bin/sudo").kind, EntryType::HardLink);
    assert_eq!(
        find("usr/bin/sudo").link_target.as_deref(),
        Some("usr/bin/su")
    );
    assert_eq!(find("tmp").mode, 0o1777);
    assert_eq!(find("var/mail").mode, 0o2775);
    assert_eq!(find("var/empty").kind, EntryType::Directory);
    let long = index.entries.iter().find(|e| e.path.len() == 300).unwrap();
    assert_eq!(long.kind, EntryType::File);
    assert_eq!(
        long.content_digest,
        Some(Digest::of_bytes(b"a file whose path is 300 bytes long\n"))
    );
    let link = find("opt/long-link");
    assert_eq!(
        link.link_target.as_deref(),
        Some(&*format!("/{}", long.path))
    );
    // Tar order is bytewise path order.
    let paths: Vec<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
}

#[test]
fn gnu_tar_and_gzip_read_the_golden_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (written, blob) = golden_layer(dir.path(), false, &LayerOptions::default());
    let file = dir.path().join("layer.tar.gz");
    fs::write(&file, &blob).unwrap();

    // gzip decodes it to exactly the tar the diff_id names.
    let out = Command::new("gzip").arg("-dc").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(Digest::of_bytes(&out.stdout), written.diff_id);

    let out = Command::new("tar")
        .env("TZ", "UTC")
        .args(["--numeric-owner", "-tvzf"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing.contains("-rwsr-xr-x 0/0") && listing.contains("usr/bin/su\n"),
        "{listing}"
    );
    assert!(
        listing.contains("usr/bin/sudo link to usr/bin/su"),
        "{listing}"
    );
    assert!(listing.contains("drwxrwxrwt 0/0"), "{listing}");
    assert!(listing.contains("bin -> usr/bin"), "{listing}");
    assert!(listing.contains("1970-01-01 00:00"), "{listing}");
    let long = format!("opt/{}/{}", "a".repeat(150), "b".repeat(145));
    assert!(listing.contains(&format!("{long}\n")), "{listing}");
    assert!(
        listing.contains(&format!("opt/long-link -> /{long}\n")),
        "{listing}"
    );

    // GNU tar extracts it to the same tree (modes, links, targets, content).
    let out_dir = dir.path().join("extracted");
    fs::create_dir(&out_dir).unwrap();
    let status = Command::new("tar")
        .args(["-xpzf"])
        .arg(&file)
        .arg("-C")
        .arg(&out_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let mut theirs = FileTree::from_dir(&out_dir).unwrap();
    theirs.set_owner_all(0, 0);
    let mut ours = FileTree::from_dir(&dir.path().join("tree")).unwrap();
    ours.set_owner_all(0, 0);
    assert_eq!(
        layer_support::summary(&theirs),
        layer_support::summary(&ours)
    );
}
