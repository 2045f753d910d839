//! The one tar entry iterator decides for every consumer: a layer with a
//! non-UTF-8 path (or link target) is refused by index, extract and squash
//! with the same typed error, naming the raw bytes escaped; a layer with a
//! pax global header and non-ASCII names is read the same by all three;
//! an unsafe entry (through a symlink, absolute, a bad hard link, under a
//! file) gets the same `Finding` from the index's verdict, extract and
//! squash (the one rule set, `layer::rules`).
use std::fs;

use stagex::layer::{
    extract_layer, index_layer, squash, EntryError, EntryType, ExtractOptions, Finding,
    LayerOptions, SquashInput,
};
use stagex::oci::layout::Layout;
use stagex::oci::media_type::LayerCompression;

/// A one-entry tar whose name (or symlink target) is copied verbatim.
fn tar_with(name: &[u8], link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name);
    old.linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(if link.is_empty() {
        tar::EntryType::Regular
    } else {
        tar::EntryType::Symlink
    });
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b""[..]).unwrap();
    b.into_inner().unwrap()
}

/// The error each consumer gives for `tar`, as (consumer, EntryError text).
fn errors_of(tar: &[u8]) -> Vec<(&'static str, String)> {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("rootfs");
    let layout = Layout::create(dir.path().join("layout")).unwrap();
    let index = index_layer(tar, LayerCompression::None).unwrap_err();
    let extract = extract_layer(
        tar,
        LayerCompression::None,
        &target,
        &ExtractOptions { chown: false },
    )
    .unwrap_err();
    let input = SquashInput {
        name: "layer".into(),
        blob: Box::new(tar),
        compression: LayerCompression::None,
        diff_id: None,
    };
    let squash = squash([input], &LayerOptions::default(), &layout).unwrap_err();
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "extract wrote something"
    );
    [("index", index), ("extract", extract), ("squash", squash)]
        .into_iter()
        .map(|(who, err)| {
            let typed = err
                .downcast_ref::<EntryError>()
                .unwrap_or_else(|| panic!("{who}: not an EntryError: {err:#}"));
            assert!(
                matches!(typed, EntryError::NonUtf8 { .. }),
                "{who}: {typed}"
            );
            (who, typed.to_string())
        })
        .collect()
}

#[test]
fn a_non_utf8_path_is_refused_by_index_extract_and_squash_alike() {
    for (tar, raw) in [
        (tar_with(b"usr/caf\xe9.txt", b""), "usr/caf\\xe9.txt"),
        (tar_with(b"usr/link", b"caf\xe9"), "caf\\xe9"),
    ] {
        let errors = errors_of(&tar);
        let first = &errors[0].1;
        assert!(first.contains(raw), "{first}");
        for (who, text) in &errors {
            assert_eq!(text, first, "{who} disagrees with index");
        }
    }
}

#[test]
fn a_pax_global_header_and_non_ascii_names_are_read_alike() {
    let mut b = tar::Builder::new(Vec::new());
    let record = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
    let mut g = tar::Header::new_ustar();
    g.set_path("pax_global_header").unwrap();
    g.set_entry_type(tar::EntryType::XGlobalHeader);
    g.set_size(record.len() as u64);
    g.set_cksum();
    b.append(&g, &record[..]).unwrap();
    b.append_pax_extensions([("path", "usr/share/doc/café/ü.txt".as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("placeholder").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o640);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(3);
    h.set_cksum();
    b.append(&h, &b"hi\n"[..]).unwrap();
    let tar = b.into_inner().unwrap();

    let index = index_layer(&tar[..], LayerCompression::None).unwrap();
    let listed: Vec<(&str, EntryType)> = index
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.kind))
        .collect();
    assert_eq!(listed, [("usr/share/doc/café/ü.txt", EntryType::File)]);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("rootfs");
    let options = ExtractOptions { chown: false };
    extract_layer(&tar[..], LayerCompression::None, &target, &options).unwrap();
    assert_eq!(
        fs::read(target.join("usr/share/doc/café/ü.txt")).unwrap(),
        b"hi\n"
    );
    assert!(!target.join("pax_global_header").exists());

    let layout = Layout::create(dir.path().join("layout")).unwrap();
    let input = SquashInput {
        name: "layer".into(),
        blob: Box::new(&tar[..]),
        compression: LayerCompression::None,
        diff_id: Some(index.diff_id.clone()),
    };
    let written = squash([input], &LayerOptions::default(), &layout).unwrap();
    let blob = layout.read_blob(&written.digest).unwrap();
    let squashed = index_layer(&blob[..], LayerCompression::Gzip).unwrap();
    let file = squashed
        .entries
        .iter()
        .find(|e| e.kind == EntryType::File)
        .unwrap();
    assert_eq!(file.path, "usr/share/doc/café/ü.txt");
    assert_eq!(file.mode, 0o640);
    assert_eq!(file.content_digest, index.entries[0].content_digest);
}

/// `entries` as an uncompressed tar: (name, type, link target), empty.
fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_ustar();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The same `Finding` from the index's verdict, extraction and squashing:
/// one rule set, whichever consumer reads the layer.
#[test]
fn the_entry_rules_judge_alike_in_index_extract_and_squash() {
    use tar::EntryType as T;
    for entries in [
        &[("evil", T::Symlink, "/tmp"), ("evil/x", T::Regular, "")][..],
        &[("/abs", T::Regular, "")][..],
        &[("hl", T::Link, "/etc/passwd")][..],
        &[("hl", T::Link, "missing")][..],
        &[("d/", T::Directory, ""), ("hl", T::Link, "d")][..],
        &[("f", T::Regular, ""), ("f/x", T::Regular, "")][..],
    ] {
        let tar = tar_of(entries);
        let index = index_layer(&tar[..], LayerCompression::None).unwrap();
        let verdict = index.verdict.unsafe_entries.first().expect("a finding");
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfs");
        let options = ExtractOptions { chown: false };
        let extract = extract_layer(&tar[..], LayerCompression::None, &target, &options)
            .expect_err("extract must refuse");
        let layout = Layout::create(dir.path().join("layout")).unwrap();
        let input = SquashInput {
            name: "layer".into(),
            blob: Box::new(&tar[..]),
            compression: LayerCompression::None,
            diff_id: None,
        };
        let squash =
            squash([input], &LayerOptions::default(), &layout).expect_err("squash must refuse");
        for (who, error) in [("extract", extract), ("squash", squash)] {
            let finding = error
                .chain()
                .find_map(|e| e.downcast_ref::<Finding>())
                .unwrap_or_else(|| panic!("{who}: no Finding in {error:#}"));
            assert_eq!(finding, verdict, "{who} disagrees with the index");
        }
    }
}
