//! `FileTree`: the in-memory, validated, sorted description of what a layer
//! contains (paths, kinds, modes, owners; file contents by reference).
//!
//! Owns: path normalization (the one rule every layer module shares), the
//! tree's invariants, and reading a real directory into a tree
//! (`from_dir`). It never writes tar bytes (see `writer`).
//!
//! Invariants:
//! - keys are normalized relative paths (`usr/bin/sh`): no leading `/` or
//!   `./`, no trailing `/`, no empty, `.` or `..` components, no NUL, UTF-8;
//! - keys are kept in a `BTreeMap`, i.e. sorted bytewise on the full path.
//!   That is the tar entry order: a parent (`a`) is a prefix of its children
//!   (`a/x`) so it always comes first, even though siblings such as `a-b` may
//!   sort between them;
//! - every parent of an entry is a directory entry of the tree (missing
//!   parents are added by `insert` as `0755` root-owned directories);
//! - modes carry permission bits plus setuid/setgid/sticky (`mode & 0o7777`),
//!   never file-type bits.
//!
//! `from_dir` does not depend on directory listing order: entries are keyed
//! by path, and a set of hard links (same device and inode, nlink > 1) is
//! resolved after the walk so the bytewise-first path is the file and every
//! later one is a `HardLink` to it.
use std::collections::btree_map::{self, BTreeMap};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where a regular file's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    /// A file on disk, read when the layer is written.
    Path(PathBuf),
    /// Content held in memory.
    Bytes(Vec<u8>),
}

/// What kind of entry a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File(FileSource),
    /// A symbolic link; the target is kept verbatim (relative or absolute).
    Symlink {
        target: String,
    },
    /// A hard link to another regular file of the same tree (normalized path,
    /// sorting before this entry).
    HardLink {
        target: String,
    },
}

/// One entry of a tree: kind, mode (`perm | setuid | setgid | sticky`) and
/// numeric owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl TreeEntry {
    /// A root-owned directory.
    pub fn dir(mode: u32) -> TreeEntry {
        TreeEntry::owned(EntryKind::Directory, mode)
    }

    /// A root-owned regular file.
    pub fn file(source: FileSource, mode: u32) -> TreeEntry {
        TreeEntry::owned(EntryKind::File(source), mode)
    }

    /// A root-owned symlink with mode 0777 (what Linux reports for symlinks).
    pub fn symlink(target: impl Into<String>) -> TreeEntry {
        TreeEntry::owned(
            EntryKind::Symlink {
                target: target.into(),
            },
            0o777,
        )
    }

    /// A root-owned hard link to `target` (a path of the same tree).
    pub fn hard_link(target: impl Into<String>, mode: u32) -> TreeEntry {
        TreeEntry::owned(
            EntryKind::HardLink {
                target: target.into(),
            },
            mode,
        )
    }

    fn owned(kind: EntryKind, mode: u32) -> TreeEntry {
        TreeEntry {
            kind,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Directory)
    }
}

/// Normalizes a path inside a layer: strips leading `/` and `./` and one
/// trailing `/`; rejects `..`, `.` and empty components, NUL and the empty
/// path. The error names the path.
pub fn normalize_path(path: &str) -> Result<String> {
    let mut rest = path;
    loop {
        if let Some(r) = rest.strip_prefix('/') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else {
            break;
        }
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest == "." {
        bail!("invalid layer path {path:?}: it names the root, not an entry");
    }
    if rest.contains('\0') {
        bail!("invalid layer path {path:?}: contains a NUL byte");
    }
    for component in rest.split('/') {
        match component {
            ".." => bail!("invalid layer path {path:?}: \"..\" components are not allowed"),
            "." => bail!("invalid layer path {path:?}: \".\" components are not allowed"),
            "" => bail!("invalid layer path {path:?}: empty path component (\"//\")"),
            _ => {}
        }
    }
    Ok(rest.to_string())
}

/// The parent of a normalized path, or `None` at the top level.
pub fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// A validated, bytewise-sorted file tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileTree {
    entries: BTreeMap<String, TreeEntry>,
}

impl FileTree {
    pub fn new() -> FileTree {
        FileTree::default()
    }

    /// Adds (or replaces) an entry. The path is normalized; missing parents
    /// are created as `0755` root-owned directories; a parent that exists but
    /// is not a directory is an error; replacing a directory that has
    /// children by a non-directory is an error; a symlink target must be
    /// non-empty and NUL-free; a hard-link target is normalized.
    pub fn insert(&mut self, path: &str, mut entry: TreeEntry) -> Result<()> {
        let path = normalize_path(path)?;
        entry.mode &= 0o7777;
        match &mut entry.kind {
            EntryKind::Symlink { target } => {
                if target.is_empty() || target.contains('\0') {
                    bail!("symlink {path}: invalid target {target:?}");
                }
            }
            EntryKind::HardLink { target } => {
                *target = normalize_path(target)
                    .with_context(|| format!("hard link {path}: invalid target"))?;
                if *target == path {
                    bail!("hard link {path} points to itself");
                }
            }
            EntryKind::Directory | EntryKind::File(_) => {}
        }
        // Parents: must be directories; create the missing ones.
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            match self.entries.get(parent) {
                Some(e) if e.is_dir() => {}
                Some(_) => bail!("cannot add {path}: its parent {parent} is not a directory"),
                None => {
                    self.entries
                        .insert(parent.to_string(), TreeEntry::dir(0o755));
                }
            }
            end += i + 1;
        }
        if !entry.is_dir() && self.has_children(&path) {
            bail!("cannot replace directory {path} (which has entries) by a non-directory");
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    pub fn get(&self, path: &str) -> Option<&TreeEntry> {
        self.entries.get(path)
    }

    /// Entries in tar order (bytewise by path).
    pub fn entries(&self) -> btree_map::Iter<'_, String, TreeEntry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets every entry's owner (e.g. 0:0 for a tree a rootless build wrote).
    pub fn set_owner_all(&mut self, uid: u32, gid: u32) {
        for entry in self.entries.values_mut() {
            entry.uid = uid;
            entry.gid = gid;
        }
    }

    /// Checks the cross-entry invariants a tar writer needs: every hard link
    /// points to a regular file of the tree that sorts before it.
    pub fn validate(&self) -> Result<()> {
        for (path, entry) in &self.entries {
            if let EntryKind::HardLink { target } = &entry.kind {
                match self.entries.get(target) {
                    Some(TreeEntry {
                        kind: EntryKind::File(_),
                        ..
                    }) => {}
                    Some(_) => bail!("hard link {path}: target {target} is not a regular file"),
                    None => bail!("hard link {path}: target {target} is not in the tree"),
                }
                if target.as_str() >= path.as_str() {
                    bail!(
                        "hard link {path}: target {target} sorts after it, so a tar reader \
                         would meet the link first; make {target} the link and {path} the file"
                    );
                }
            }
        }
        Ok(())
    }

    /// Reads a directory (not following symlinks) into a tree. The root
    /// itself is not an entry. Keeps mode bits incl. setuid/setgid/sticky,
    /// numeric uid/gid, symlink targets verbatim, empty directories and hard
    /// links. Sockets, fifos and device nodes are errors naming the path.
    pub fn from_dir(root: &Path) -> Result<FileTree> {
        let meta = fs::symlink_metadata(root)
            .with_context(|| format!("reading directory {}", root.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory", root.display());
        }
        let mut tree = FileTree::new();
        // (dev, ino) -> paths, for regular files with nlink > 1.
        let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
        for item in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
            let item = item.with_context(|| format!("walking {}", root.display()))?;
            let full = item.path();
            let rel = full
                .strip_prefix(root)
                .expect("walkdir stays under its root");
            let Some(rel) = rel.to_str() else {
                bail!(
                    "{}: file name is not UTF-8; layer paths must be UTF-8",
                    full.display()
                );
            };
            let meta = fs::symlink_metadata(full)
                .with_context(|| format!("reading metadata of {}", full.display()))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                EntryKind::Directory
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    inodes
                        .entry((meta.dev(), meta.ino()))
                        .or_default()
                        .push(rel.to_string());
                }
                EntryKind::File(FileSource::Path(full.to_path_buf()))
            } else if ft.is_symlink() {
                let target = fs::read_link(full)
                    .with_context(|| format!("reading symlink {}", full.display()))?;
                let Some(target) = target.to_str() else {
                    bail!("{}: symlink target is not UTF-8", full.display());
                };
                EntryKind::Symlink {
                    target: target.to_string(),
                }
            } else {
                let what = if ft.is_socket() {
                    "a socket"
                } else if ft.is_fifo() {
                    "a fifo"
                } else if ft.is_block_device() {
                    "a block device"
                } else if ft.is_char_device() {
                    "a character device"
                } else {
                    "an unknown file type"
                };
                bail!(
                    "{} is {what}: layers hold only directories, regular files, \
                     symlinks and hard links; remove it from the tree",
                    full.display()
                );
            };
            tree.insert(
                rel,
                TreeEntry {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
            )?;
        }
        for mut paths in inodes.into_values() {
            if paths.len() < 2 {
                continue;
            }
            paths.sort();
            let first = paths[0].clone();
            for later in &paths[1..] {
                let entry = tree.entries.get_mut(later).expect("walked path is in tree");
                entry.kind = EntryKind::HardLink {
                    target: first.clone(),
                };
            }
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn normalize_strips_prefixes_and_rejects_escapes() {
        assert_eq!(normalize_path("./usr/bin/").unwrap(), "usr/bin");
        assert_eq!(normalize_path("/./usr").unwrap(), "usr");
        assert_eq!(normalize_path("usr/bin/sh").unwrap(), "usr/bin/sh");
        for bad in [
            "", "/", "./", "..", "a/../b", "a//b", "a/./b", "a\0b", "../x",
        ] {
            let err = normalize_path(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn insert_creates_parents_and_sorts_bytewise() {
        let mut t = FileTree::new();
        t.insert(
            "a/x",
            TreeEntry::file(FileSource::Bytes(b"x".to_vec()), 0o644),
        )
        .unwrap();
        t.insert("a-b", TreeEntry::dir(0o700)).unwrap();
        let order: Vec<&str> = t.entries().map(|(k, _)| k.as_str()).collect();
        assert_eq!(order, ["a", "a-b", "a/x"]);
        assert!(t.get("a").unwrap().is_dir());
        let err = t
            .insert("a/x/y", TreeEntry::dir(0o755))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a/x is not a directory"), "{err}");
        let err = t
            .insert("a", TreeEntry::symlink("b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot replace directory a"), "{err}");
    }

    #[test]
    fn validate_rejects_dangling_and_forward_hard_links() {
        let mut t = FileTree::new();
        t.insert("b", TreeEntry::file(FileSource::Bytes(vec![]), 0o644))
            .unwrap();
        t.insert("a", TreeEntry::hard_link("b", 0o644)).unwrap();
        assert!(t
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sorts after"));
        let mut t = FileTree::new();
        t.insert("a", TreeEntry::hard_link("zz", 0o644)).unwrap();
        assert!(t
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not in the tree"));
    }

    #[test]
    fn from_dir_keeps_modes_links_and_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/z"), b"tool").unwrap();
        fs::set_permissions(root.join("bin/z"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(root.join("bin/z"), root.join("bin/a")).unwrap();
        symlink("/bin/z", root.join("link")).unwrap();
        let t = FileTree::from_dir(root).unwrap();
        t.validate().unwrap();
        assert!(t.get("empty").unwrap().is_dir());
        assert_eq!(t.get("bin/a").unwrap().mode, 0o4755);
        assert!(matches!(t.get("bin/a").unwrap().kind, EntryKind::File(_)));
        assert_eq!(
            t.get("bin/z").unwrap().kind,
            EntryKind::HardLink {
                target: "bin/a".into()
            }
        );
        assert_eq!(
            t.get("link").unwrap().kind,
            EntryKind::Symlink {
                target: "/bin/z".into()
            }
        );
    }

    #[test]
    fn from_dir_rejects_fifos_and_sockets_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = FileTree::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("pipe") && err.contains("fifo"), "{err}");
        fs::remove_file(&fifo).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let err = FileTree::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("sock") && err.contains("socket"), "{err}");
    }
}
