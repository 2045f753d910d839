//! Safe extraction of a layer onto a directory (applying it over what is
//! already there, whiteouts included).
//!
//! Owns: the rule that a layer can only ever write inside `target`. The
//! layer is untrusted. Before anything is written for an entry, the entry
//! rules (`rules::check_entry`, the same rule set the index, squash and the
//! pallet composer apply) are checked against the target as it is on disk
//! (`lstat`, never following a link): no absolute path, nothing written
//! through a symlink (`evil -> /etc` then `evil/passwd`, or
//! `evil -> ../../..` then `evil/x`, fail on the second entry), hard links
//! only to a relative path naming an existing regular file (from this or a
//! lower layer). Special files are allowed here (created as root; fifos
//! also rootless): the callers extract layers their user built. Then:
//! - missing parents are created (0755); a parent is re-checked with
//!   `lstat` as it is walked, so a symlink is never followed;
//! - the final component is never followed either: an existing file,
//!   symlink or directory at that path is removed first (a directory is
//!   kept when the entry is a directory), files are created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW`; `link(2)` does not follow a symlink;
//! - symlinks are created verbatim (absolute targets are legitimate inside
//!   an image, e.g. `bin -> /usr/bin`; they are only dangerous when written
//!   through, which the parent rule forbids).
//!
//! Entries (UTF-8 paths, normalization, whiteouts, link targets) come from
//! the one tar walk in `entries`; this module adds the write policy above.
//!
//! Metadata: modes incl. setuid/setgid/sticky, mtimes (also on symlinks and
//! directories, the latter set after all entries so children do not bump
//! them), owners only when `ExtractOptions::chown` (default: only when
//! running as root). Whiteouts delete lower entries; an opaque whiteout
//! deletes everything under its directory that this layer did not write.
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::entries::{Entry, EntryInfo, EntryType, LayerTar};
use super::rules::{check_entry, Node, SpecialFiles, TreeView};
use super::tree::normalize_path;
use crate::oci::media_type::LayerCompression;

/// How to extract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Apply the numeric uid/gid of entries (needs root). Default: true only
    /// when the effective uid is 0 (rootless extraction keeps the caller as
    /// owner).
    pub chown: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            chown: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// Extracts a layer blob onto `target` (created if missing), applying
/// whiteouts to what is already there.
pub fn extract_layer(
    reader: impl Read,
    compression: LayerCompression,
    target: &Path,
    options: &ExtractOptions,
) -> Result<()> {
    fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let mut layer = LayerTar::new(reader, compression)?;
    let mut written: BTreeSet<String> = BTreeSet::new();
    // Directory entries, whose metadata is applied after all entries.
    let mut dirs: Vec<EntryInfo> = Vec::new();
    let x = Extractor {
        root: target,
        options,
    };
    let reading = || format!("extracting a layer into {}", target.display());
    for entry in layer.entries().with_context(reading)? {
        let mut entry = entry.with_context(reading)?;
        check_entry(entry.info(), &OnDisk(target), SpecialFiles::Allow).with_context(|| {
            format!(
                "refusing a layer entry (nothing was written outside {})",
                target.display()
            )
        })?;
        match entry.kind {
            EntryType::Whiteout => {
                x.check_parents(&entry.path, false)?;
                x.remove(&entry.path)?;
            }
            EntryType::OpaqueWhiteout => {
                if !entry.path.is_empty() {
                    x.check_parents(&entry.path, false)?;
                }
                x.opaque(&entry.path, &written)?;
            }
            EntryType::Directory => {
                x.check_parents(&entry.path, true)?;
                x.clear(&entry.path, true)?;
                let dest = x.root.join(&entry.path);
                if fs::symlink_metadata(&dest).is_err() {
                    fs::create_dir(&dest).with_context(|| x.context(&entry))?;
                }
                written.insert(entry.path.clone());
                dirs.push(entry.into_info());
            }
            _ => {
                x.check_parents(&entry.path, true)?;
                x.clear(&entry.path, false)?;
                x.write_entry(&mut entry)?;
                written.insert(entry.path.clone());
            }
        }
    }
    // Deepest first, so a read-only parent is set after its children.
    dirs.sort_by(|a, b| b.path.cmp(&a.path));
    for dir in dirs {
        x.set_dir_metadata(&dir.path, dir.mode, dir.uid, dir.gid, dir.mtime)?;
    }
    Ok(())
}

/// The target directory as the entry rules see it (`lstat`, links never
/// followed).
struct OnDisk<'a>(&'a Path);

impl TreeView for OnDisk<'_> {
    fn node(&self, path: &str) -> Option<Node> {
        let full = self.0.join(path);
        let meta = fs::symlink_metadata(&full).ok()?;
        Some(if meta.is_dir() {
            Node::Directory
        } else if meta.is_file() {
            Node::File
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).unwrap_or_default();
            Node::Symlink {
                target: target.display().to_string(),
            }
        } else {
            Node::Other
        })
    }
}

struct Extractor<'a> {
    root: &'a Path,
    options: &'a ExtractOptions,
}

impl Extractor<'_> {
    fn context(&self, entry: &EntryInfo) -> String {
        format!("extracting {} into {}", entry.path, self.root.display())
    }

    /// Creates a non-directory entry at its (cleared) path.
    fn write_entry(&self, entry: &mut Entry<'_, '_>) -> Result<()> {
        let text = self.context(entry);
        let ctx = || text.clone();
        let dest = self.root.join(&entry.path);
        let (mode, uid, gid, mtime) = (entry.mode, entry.uid, entry.gid, entry.mtime);
        match entry.kind {
            EntryType::File => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .with_context(ctx)?;
                io::copy(entry, &mut file).with_context(ctx)?;
                if self.options.chown {
                    std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).with_context(ctx)?;
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .with_context(ctx)?;
                drop(file);
                set_mtime(&dest, mtime).with_context(ctx)?;
            }
            EntryType::Symlink => {
                let link = entry.link_target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(link, &dest).with_context(ctx)?;
                self.lchown(&dest, uid, gid).with_context(ctx)?;
                set_mtime(&dest, mtime).with_context(ctx)?;
            }
            EntryType::HardLink => {
                let raw = entry.raw_link_target.as_deref().unwrap_or_default();
                let source = self.hard_link_source(&entry.path, raw)?;
                fs::hard_link(&source, &dest).with_context(ctx)?;
            }
            EntryType::Fifo | EntryType::CharDevice | EntryType::BlockDevice => {
                self.make_node(entry)?;
                self.lchown(&dest, uid, gid).with_context(ctx)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).with_context(ctx)?;
                set_mtime(&dest, mtime).with_context(ctx)?;
            }
            EntryType::Directory | EntryType::Whiteout | EntryType::OpaqueWhiteout => {
                unreachable!("handled by extract_layer")
            }
        }
        Ok(())
    }

    /// Every proper parent of `path` must be a real directory (never a
    /// symlink) inside the root; missing ones are created when `create`.
    fn check_parents(&self, path: &str, create: bool) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            let full = self.root.join(parent);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    let to = fs::read_link(&full)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    bail!(
                        "refusing layer entry {path}: its parent {parent} is a symlink (-> {to}); \
                         writing through symlinks could escape {} (nothing was written there)",
                        self.root.display()
                    );
                }
                Ok(_) => {
                    bail!("refusing layer entry {path}: its parent {parent} is not a directory")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    // A parent the layer does not list: 0755 (as docker and
                    // containerd make them), not whatever the umask leaves,
                    // so a tree read back from the target is the same
                    // everywhere.
                    fs::create_dir(&full)
                        .and_then(|()| {
                            fs::set_permissions(&full, fs::Permissions::from_mode(0o755))
                        })
                        .with_context(|| format!("creating {}", full.display()))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(e).with_context(|| format!("checking {}", full.display()));
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    /// Removes whatever is at `path` (without following it), keeping a
    /// directory when the new entry is a directory.
    fn clear(&self, path: &str, keep_dir: bool) -> Result<()> {
        let full = self.root.join(path);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() && keep_dir => Ok(()),
            Ok(_) => self.remove(path),
            Err(_) => Ok(()),
        }
    }

    fn remove(&self, path: &str) -> Result<()> {
        remove_path(&self.root.join(path))
    }

    /// An opaque whiteout hides every lower entry under `dir`, at any
    /// depth: what this layer wrote (before or after the marker) stays,
    /// directories holding something it wrote are descended into, the rest
    /// is removed.
    fn opaque(&self, dir: &str, written: &BTreeSet<String>) -> Result<()> {
        let full = if dir.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(dir)
        };
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("refusing opaque whiteout of {dir}: it is not a directory"),
            Err(_) => return Ok(()),
        }
        let mut children = Vec::new();
        for child in fs::read_dir(&full).with_context(|| format!("listing {}", full.display()))? {
            let child = child.with_context(|| format!("listing {}", full.display()))?;
            let name = child.file_name();
            let Some(name) = name.to_str() else {
                // Not UTF-8: no layer entry can have written it.
                let path = child.path();
                remove_path(&path)?;
                continue;
            };
            children.push(if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            });
        }
        children.sort();
        for rel in children {
            let holds_written = written
                .range(format!("{rel}/")..)
                .next()
                .is_some_and(|w| w.starts_with(&format!("{rel}/")));
            let is_dir = fs::symlink_metadata(self.root.join(&rel)).is_ok_and(|m| m.is_dir());
            if is_dir && (holds_written || written.contains(&rel)) {
                self.opaque(&rel, written)?;
            } else if !written.contains(&rel) {
                self.remove(&rel)?;
            }
        }
        Ok(())
    }

    /// Applies a directory entry's owner, mode and mtime through a
    /// descriptor opened with `O_NOFOLLOW`, after re-checking its parents:
    /// a later entry of the same layer may have replaced the directory (or
    /// a parent) by a symlink, and chmod through that would reach outside.
    /// A directory that is no longer there was replaced: nothing to do.
    fn set_dir_metadata(
        &self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
    ) -> Result<()> {
        let ctx = || format!("setting metadata of {path} in {}", self.root.display());
        self.check_parents(path, false).with_context(ctx)?;
        let dir = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(self.root.join(path))
        {
            Ok(dir) => dir,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ELOOP)
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(());
            }
            // Unreadable (e.g. a lower layer made it 0o300, rootless): fall
            // back to path-based calls on what lstat says is a directory.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let full = self.root.join(path);
                if !fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                    return Ok(());
                }
                self.lchown(&full, uid, gid).with_context(ctx)?;
                fs::set_permissions(&full, fs::Permissions::from_mode(mode)).with_context(ctx)?;
                return set_mtime(&full, mtime).with_context(ctx);
            }
            Err(e) => return Err(e).with_context(ctx),
        };
        if self.options.chown {
            std::os::unix::fs::fchown(&dir, Some(uid), Some(gid)).with_context(ctx)?;
        }
        dir.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(ctx)?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        dir.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .with_context(ctx)
    }

    fn hard_link_source(&self, path: &str, link: &str) -> Result<PathBuf> {
        if link.starts_with('/') {
            bail!(
                "refusing hard link {path} -> {link}: absolute hard-link targets are not \
                 allowed in a layer (nothing was written outside {})",
                self.root.display()
            );
        }
        let target =
            normalize_path(link).with_context(|| format!("refusing hard link {path} -> {link}"))?;
        self.check_parents(&target, false)
            .with_context(|| format!("refusing hard link {path} -> {link}"))?;
        let source = self.root.join(&target);
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_dir() => {
                bail!("refusing hard link {path} -> {link}: the target is a directory")
            }
            Ok(_) => Ok(source),
            Err(_) => bail!(
                "refusing hard link {path} -> {link}: the target does not exist in {}",
                self.root.display()
            ),
        }
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        if self.options.chown {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    fn make_node(&self, entry: &EntryInfo) -> Result<()> {
        let path = &entry.path;
        let full = self.root.join(path);
        let c = CString::new(full.as_os_str().as_bytes())?;
        let (kind, dev) = match (entry.kind, entry.device) {
            (EntryType::Fifo, _) => (libc::S_IFIFO, 0),
            (other, device) => {
                if unsafe { libc::geteuid() } != 0 {
                    bail!(
                        "cannot create device node {path} ({other:?}) without root; \
                         extract as root or drop it from the image"
                    );
                }
                let (major, minor) = device.unwrap_or_default();
                let kind = if other == EntryType::CharDevice {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                (kind, libc::makedev(major, minor))
            }
        };
        let rc = unsafe { libc::mknod(c.as_ptr(), kind | (entry.mode & 0o7777), dev) };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("creating {}", full.display()));
        }
        Ok(())
    }
}

/// Removes a file, symlink or directory tree (never following symlinks).
fn remove_path(full: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(full) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(full),
        Ok(_) => fs::remove_file(full),
        Err(_) => return Ok(()),
    };
    result.with_context(|| format!("removing {}", full.display()))
}

/// Sets atime and mtime of `path` without following a final symlink.
fn set_mtime(path: &Path, secs: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tree::{FileSource, FileTree, TreeEntry};
    use crate::layer::writer::{write_layer, LayerOptions};
    use std::os::unix::fs::MetadataExt;

    fn layer(tree: &FileTree) -> Vec<u8> {
        let mut blob = Vec::new();
        write_layer(tree, &LayerOptions::default(), &mut blob).unwrap();
        blob
    }

    fn file(b: &[u8], mode: u32) -> TreeEntry {
        TreeEntry::file(FileSource::Bytes(b.to_vec()), mode)
    }

    #[test]
    fn whiteouts_delete_lower_entries_and_opaque_keeps_own() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let opts = ExtractOptions { chown: false };
        let mut lower = FileTree::new();
        lower.insert("etc/passwd", file(b"root", 0o644)).unwrap();
        lower.insert("etc/group", file(b"root", 0o644)).unwrap();
        lower.insert("opt/old/a", file(b"a", 0o644)).unwrap();
        lower.insert("opt/keep", file(b"k", 0o644)).unwrap();
        extract_layer(&layer(&lower)[..], LayerCompression::Gzip, &root, &opts).unwrap();
        assert!(root.join("opt/old/a").exists());

        let mut upper = FileTree::new();
        upper.insert("etc/.wh.passwd", file(b"", 0)).unwrap();
        upper.insert("opt/.wh..wh..opq", file(b"", 0)).unwrap();
        upper.insert("opt/keep", file(b"new", 0o600)).unwrap();
        extract_layer(&layer(&upper)[..], LayerCompression::Gzip, &root, &opts).unwrap();
        assert!(!root.join("etc/passwd").exists());
        assert!(root.join("etc/group").exists());
        assert!(!root.join("opt/old").exists());
        assert_eq!(fs::read(root.join("opt/keep")).unwrap(), b"new");
        let meta = fs::metadata(root.join("opt/keep")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.mtime(), 1);
    }
}
