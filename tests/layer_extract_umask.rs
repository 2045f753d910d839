//! Extraction does not depend on the umask: parents a layer does not list
//! are created 0755. Its own test binary, because the umask is per process
//! and the other extraction tests must not see the changed one.
use std::fs;
use std::os::unix::fs::PermissionsExt;

use stagex::layer::{extract_layer, ExtractOptions};
use stagex::oci::media_type::LayerCompression;

#[test]
fn implicit_parents_are_0755_whatever_the_umask() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("usr/lib/libx.so").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(1);
    h.set_mtime(1);
    h.set_cksum();
    builder.append(&h, &b"x"[..]).unwrap();
    let tar = builder.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let old = unsafe { libc::umask(0o077) };
    let result = extract_layer(
        &tar[..],
        LayerCompression::None,
        &dir.path().join("root"),
        &ExtractOptions { chown: false },
    );
    unsafe { libc::umask(old) };
    result.unwrap();
    for parent in ["usr", "usr/lib"] {
        let mode = fs::metadata(dir.path().join("root").join(parent))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "{parent}");
    }
}
