//! Extraction safety: hostile layers built with the raw tar crate are each
//! rejected with the offending path named, and nothing appears outside the
//! target. Plus a round trip: write_layer -> extract_layer -> from_dir.
//!
//! The escape targets are directories inside the test's own temp dir (never
//! the real /etc): were the checks broken, a test running as root must not
//! damage the machine. `evil -> <abs path of a temp dir>` is the same attack
//! as `evil -> /etc`.
use crate::layer_support;

use std::fs;
use std::path::PathBuf;

use stagex::layer::{
    extract_layer, write_layer, ExtractOptions, FileSource, FileTree, LayerOptions,
};
use stagex::oci::media_type::LayerCompression;

enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// A tar built byte by byte: names are copied verbatim (the tar crate's
/// `set_path` would refuse `..`, which is the point here).
fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let (name, link, kind, data): (&str, &str, tar::EntryType, &[u8]) = match e {
            Raw::File(n, d) => (n, "", tar::EntryType::Regular, d),
            Raw::Dir(n) => (n, "", tar::EntryType::Directory, b""),
            Raw::Symlink(n, t) => (n, t, tar::EntryType::Symlink, b""),
            Raw::HardLink(n, t) => (n, t, tar::EntryType::Link, b""),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_mtime(1);
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// outer/ holds `a/b/target` (the extraction root), plus `secret`, a file
/// the hostile layers try to reach or overwrite.
struct Sandbox {
    _dir: tempfile::TempDir,
    outer: PathBuf,
    target: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().canonicalize().unwrap();
        let target = outer.join("a/b/target");
        fs::create_dir_all(&target).unwrap();
        fs::write(outer.join("secret"), b"untouched").unwrap();
        Sandbox {
            _dir: dir,
            outer,
            target,
        }
    }

    /// Every path under outer except the target's contents.
    fn outside_listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(&self.outer).sort_by_file_name() {
            let e = e.unwrap();
            if e.path().starts_with(&self.target) && e.path() != self.target {
                continue;
            }
            out.push(
                e.path()
                    .strip_prefix(&self.outer)
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
        out
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            self.outside_listing(),
            ["", "a", "a/b", "a/b/target", "secret"]
        );
        assert_eq!(fs::read(self.outer.join("secret")).unwrap(), b"untouched");
    }

    fn extract(&self, tar: &[u8]) -> String {
        let err = extract_layer(
            tar,
            LayerCompression::None,
            &self.target,
            &ExtractOptions::default(),
        )
        .expect_err("a hostile layer must be rejected");
        format!("{err:#}")
    }
}

fn assert_rejected(entries: &[Raw], offending: &str) {
    let sandbox = Sandbox::new();
    let err = sandbox.extract(&raw_tar(entries));
    assert!(
        err.contains(offending),
        "error must name {offending:?}: {err}"
    );
    sandbox.assert_outside_untouched();
}

#[test]
fn path_traversal_is_rejected() {
    assert_rejected(&[Raw::File("../x", b"pwned")], "../x");
    assert_rejected(
        &[Raw::File("ok/../../../secret", b"pwned")],
        "ok/../../../secret",
    );
    assert_rejected(&[Raw::Dir("../../../escape/")], "../../../escape/");
}

#[test]
fn absolute_entry_paths_are_rejected() {
    let sandbox = Sandbox::new();
    let path = format!("{}/secret", sandbox.outer.display());
    let err = sandbox.extract(&raw_tar(&[Raw::File(&path, b"pwned")]));
    assert!(err.contains(&path), "{err}");
    sandbox.assert_outside_untouched();
}

#[test]
fn absolute_symlink_escape_is_rejected() {
    let sandbox = Sandbox::new();
    let outer = sandbox.outer.display().to_string();
    let err = sandbox.extract(&raw_tar(&[
        Raw::Symlink("evil", &outer),
        Raw::File("evil/secret", b"pwned"),
    ]));
    assert!(err.contains("evil/secret"), "{err}");
    sandbox.assert_outside_untouched();
    // The same with a nested write and a directory entry.
    let sandbox = Sandbox::new();
    let err = sandbox.extract(&raw_tar(&[
        Raw::Symlink("etc", &outer),
        Raw::Dir("etc/newdir/"),
    ]));
    assert!(err.contains("etc/newdir"), "{err}");
    sandbox.assert_outside_untouched();
}

#[test]
fn relative_symlink_escape_is_rejected() {
    assert_rejected(
        &[
            Raw::Symlink("evil", "../../.."),
            Raw::File("evil/pwned", b"pwned"),
        ],
        "evil/pwned",
    );
    // A whiteout through the symlink must not delete outside either.
    assert_rejected(
        &[
            Raw::Symlink("evil", "../../.."),
            Raw::File("evil/.wh.secret", b""),
        ],
        "evil/secret",
    );
}

#[test]
fn hard_links_outside_are_rejected() {
    assert_rejected(&[Raw::HardLink("hl", "/etc/passwd")], "/etc/passwd");
    assert_rejected(&[Raw::HardLink("hl", "../../../secret")], "../../../secret");
    let sandbox = Sandbox::new();
    let outer = sandbox.outer.display().to_string();
    let err = sandbox.extract(&raw_tar(&[
        Raw::Symlink("evil", &outer),
        Raw::HardLink("hl", "evil/secret"),
    ]));
    assert!(err.contains("evil/secret"), "{err}");
    sandbox.assert_outside_untouched();
}

#[test]
fn a_normal_layer_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (_, blob) = layer_support::golden_layer(dir.path(), false, &LayerOptions::default());
    let target = dir.path().join("extracted");
    extract_layer(
        &blob[..],
        LayerCompression::Gzip,
        &target,
        &ExtractOptions { chown: false },
    )
    .unwrap();
    let mut ours = FileTree::from_dir(&dir.path().join("tree")).unwrap();
    let mut back = FileTree::from_dir(&target).unwrap();
    ours.set_owner_all(0, 0);
    back.set_owner_all(0, 0);
    assert_eq!(layer_support::summary(&back), layer_support::summary(&ours));
    assert!(layer_support::summary(&back)
        .iter()
        .any(|(p, k, m, _)| p == "usr/bin/su" && k == "file" && *m == 0o4755));
    // Writing the extracted tree again gives the same layer.
    let mut again = Vec::new();
    write_layer(&back, &LayerOptions::default(), &mut again).unwrap();
    assert_eq!(again, blob);
    // mtimes come from the layer (1), also on symlinks and directories.
    for p in ["usr/bin/su", "bin", "var/empty", "usr"] {
        let m = fs::symlink_metadata(target.join(p)).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&m), 1, "{p}");
    }
}

#[test]
fn extracting_over_a_symlink_replaces_it_and_never_follows() {
    let sandbox = Sandbox::new();
    let outer = sandbox.outer.display().to_string();
    // A lower layer left `lib -> <outside>`; the next layer's file `lib`
    // replaces the link itself instead of writing through it.
    fs::create_dir_all(&sandbox.target).unwrap();
    std::os::unix::fs::symlink(format!("{outer}/secret"), sandbox.target.join("lib")).unwrap();
    let mut tree = FileTree::new();
    tree.insert(
        "lib",
        stagex::layer::TreeEntry::file(FileSource::Bytes(b"new".to_vec()), 0o644),
    )
    .unwrap();
    let mut blob = Vec::new();
    write_layer(&tree, &LayerOptions::default(), &mut blob).unwrap();
    extract_layer(
        &blob[..],
        LayerCompression::Gzip,
        &sandbox.target,
        &ExtractOptions { chown: false },
    )
    .unwrap();
    assert_eq!(fs::read(sandbox.target.join("lib")).unwrap(), b"new");
    assert!(!fs::symlink_metadata(sandbox.target.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
    sandbox.assert_outside_untouched();
}

fn extract_ok(tar: &[u8], target: &std::path::Path) {
    extract_layer(
        tar,
        LayerCompression::None,
        target,
        &ExtractOptions { chown: false },
    )
    .unwrap();
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_chmodded_through() {
    // Directory metadata is applied after all entries; by then `d` is a
    // symlink to the outside file, and a path-based chmod would follow it.
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    let secret = sandbox.outer.join("secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let target = secret.display().to_string();
    extract_ok(
        &raw_tar(&[Raw::Dir("d/"), Raw::Symlink("d", &target)]),
        &sandbox.target,
    );
    let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the outside file's mode was changed");
    sandbox.assert_outside_untouched();
    // Same through a parent replaced by a symlink: refused.
    let sandbox = Sandbox::new();
    let outer = sandbox.outer.display().to_string();
    fs::create_dir(sandbox.outer.join("x")).unwrap();
    let tar = raw_tar(&[Raw::Dir("p/"), Raw::Dir("p/x/"), Raw::Symlink("p", &outer)]);
    let err = extract_layer(
        &tar[..],
        LayerCompression::None,
        &sandbox.target,
        &ExtractOptions { chown: false },
    )
    .expect_err("a parent replaced by a symlink must be refused");
    assert!(format!("{err:#}").contains("p/x"), "{err:#}");
    let mode = fs::metadata(sandbox.outer.join("x"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_ne!(mode, 0o644, "chmod went through the symlink");
}

#[test]
fn opaque_whiteouts_hide_lower_entries_at_any_depth_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    extract_ok(
        &raw_tar(&[
            Raw::Dir("opt/"),
            Raw::Dir("opt/sub/"),
            Raw::File("opt/sub/old", b"lower"),
            Raw::File("opt/keep", b"lower"),
            Raw::Dir("opt/deep/"),
            Raw::File("opt/deep/old", b"lower"),
        ]),
        &root,
    );
    // The marker comes AFTER this layer's own entries (allowed by the
    // spec); `opt/deep` is only an implicit parent of what it writes.
    extract_ok(
        &raw_tar(&[
            Raw::Dir("opt/sub/"),
            Raw::File("opt/deep/new", b"upper"),
            Raw::File("opt/.wh..wh..opq", b""),
        ]),
        &root,
    );
    let listing: Vec<String> = walkdir::WalkDir::new(root.join("opt"))
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(&root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(listing, ["opt", "opt/deep", "opt/deep/new", "opt/sub"]);
}

#[test]
fn a_root_entry_and_a_pax_global_header_are_skipped() {
    // `tar -C rootfs -c .` writes `./` first; it names the target itself.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut tar = Vec::new();
    {
        // git archive's `pax_global_header` first: metadata, skipped.
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_ustar();
        h.set_path("pax_global_header").unwrap();
        h.set_entry_type(tar::EntryType::XGlobalHeader);
        let record = b"52 comment=0123456789abcdef0123456789abcdef01234567\n";
        h.set_size(record.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_cksum();
        b.append(&h, &record[..]).unwrap();
        b.finish().unwrap();
    }
    tar.truncate(tar.len() - 1024); // drop the end-of-archive blocks
    tar.extend(raw_tar(&[
        Raw::Dir("./"),
        Raw::Dir("./etc/"),
        Raw::File("./etc/a", b"x"),
    ]));
    // An existing file of that name is not touched.
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("pax_global_header"), b"mine").unwrap();
    extract_ok(&tar, &root);
    assert_eq!(fs::read(root.join("pax_global_header")).unwrap(), b"mine");
    assert_eq!(fs::read(root.join("etc/a")).unwrap(), b"x");
    let index = stagex::layer::index_layer(&tar[..], LayerCompression::None).unwrap();
    let paths: Vec<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["etc", "etc/a"]);
}
