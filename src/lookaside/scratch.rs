//! Owns: what a writer of a directory lookaside needs BESIDE the signature
//! files, kept where no reader looks: the scratch directory `.stagex-tmp/`
//! at the tree's root (temporary files are written there, then hard-linked
//! or renamed into `signature-N`: same file system, so atomic), the removal
//! of scratch files a killed writer left behind, and the per-image lock
//! that makes "read, decide, write" one step between processes.
//!
//! Scratch files are named `<host>~<pid>~<random>`: a later run removes
//! those of a process of this host that is gone, and any older than
//! `STALE_AFTER` (a signature is written in milliseconds). The lock is an
//! exclusive `flock` on the image's directory itself, so no lock file
//! exists for a reader, git or a mirror to see, and the kernel drops it
//! when its holder dies (kill -9 leaves no lock behind).
use std::fs;
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// The scratch directory at the root of a lookaside tree.
pub const SCRATCH_DIR: &str = ".stagex-tmp";

/// Age after which any scratch file is stale, whoever made it.
const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// The scratch directory of the tree at `root`.
pub fn scratch_dir(root: &Path) -> PathBuf {
    root.join(SCRATCH_DIR)
}

/// Writes `blob` to a new fsynced 0644 scratch file of the tree at `root`
/// (removed on drop unless it was linked or renamed away).
pub fn write_scratch(root: &Path, blob: &[u8]) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir(root);
    let mut attempts = 0;
    let temp = loop {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        match tempfile::Builder::new()
            .prefix(&owner_prefix())
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(&dir)
        {
            Ok(temp) => break temp,
            // Another writer removed the (then empty) directory: again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 8 => attempts += 1,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating a temporary file in {}", dir.display()))
            }
        }
    };
    fill(temp, blob, &dir)
}

/// A scratch file in `image_dir` itself, named `.tmpXXXXXX` (which
/// `sweep_legacy` removes once stale), for when the tree's scratch
/// directory cannot be linked from there (another mount: EXDEV). A rename
/// within one directory is then atomic, so a crash never leaves a short
/// `signature-N` where readers look.
pub fn write_beside(image_dir: &Path, blob: &[u8]) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::Builder::new()
        .prefix(".tmp")
        .rand_bytes(6)
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(image_dir)
        .with_context(|| format!("creating a temporary file in {}", image_dir.display()))?;
    fill(temp, blob, image_dir)
}

/// Writes and fsyncs `blob` into `temp`.
fn fill(
    mut temp: tempfile::NamedTempFile,
    blob: &[u8],
    dir: &Path,
) -> Result<tempfile::NamedTempFile> {
    temp.write_all(blob)
        .and_then(|_| temp.as_file().sync_all())
        .with_context(|| format!("writing a signature in {}", dir.display()))?;
    Ok(temp)
}

/// Removes the scratch directory of `root` if it is empty (another
/// writer's files keep it; that writer removes it later).
pub fn remove_scratch_dir_if_empty(root: &Path) {
    let _ = fs::remove_dir(scratch_dir(root));
}

/// Removes the stale scratch files of the tree at `root` (best effort:
/// a file another run removes first is fine), then the directory if empty.
pub fn sweep_stale(root: &Path) {
    let dir = scratch_dir(root);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    let host = host_name();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dead_owner = parse_owner(&name)
            .is_some_and(|(h, pid)| h == host && pid != std::process::id() && !alive(pid));
        if dead_owner || older_than(&entry.path(), STALE_AFTER) {
            let _ = fs::remove_file(entry.path());
        }
    }
    remove_scratch_dir_if_empty(root);
}

/// Removes temporary files an earlier stagex (which wrote them beside the
/// signatures, as `.tmpXXXXXX`) left in an image's directory, once stale.
pub fn sweep_legacy(image_dir: &Path) {
    let Ok(entries) = fs::read_dir(image_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let legacy = name.len() == ".tmp".len() + 6 && name.starts_with(".tmp");
        if legacy && older_than(&entry.path(), STALE_AFTER) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `<host>~<pid>~`: who made a scratch file.
fn owner_prefix() -> String {
    format!("{}~{}~", host_name(), std::process::id())
}

/// The host and pid of a scratch file's name.
fn parse_owner(name: &str) -> Option<(&str, u32)> {
    let mut parts = name.splitn(3, '~');
    let host = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((host, pid))
}

fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace('~', "-"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// True while a process with this pid exists on this host.
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// An exclusive lock on one image's directory, held until dropped (closing
/// the descriptor releases it; so does the holder's death).
#[derive(Debug)]
pub struct ImageLock {
    _held: Option<fs::File>,
}

impl ImageLock {
    /// Waits for the lock on `dir` (an existing directory). On a file
    /// system without `flock` (some network ones) this returns an unheld
    /// lock: numbering stays safe there (slots are claimed without
    /// replacing), only the "already signed by this key" check is then
    /// not atomic between processes.
    pub fn acquire(dir: &Path) -> Result<ImageLock> {
        let file = fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        loop {
            // SAFETY: a valid open descriptor; flock has no memory effects.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(ImageLock { _held: Some(file) });
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL | libc::EBADF) => {
                    return Ok(ImageLock { _held: None })
                }
                _ => return Err(error).with_context(|| format!("locking {}", dir.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_files_of_dead_processes_are_swept_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let mine = write_scratch(root.path(), b"sig").unwrap();
        assert!(mine.path().starts_with(scratch_dir(root.path())));
        let name = mine
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            parse_owner(&name).map(|(_, pid)| pid),
            Some(std::process::id())
        );
        // A pid far above pid_max: never a live process.
        let dead = scratch_dir(root.path()).join(format!("{}~999999999~abc", host_name()));
        fs::write(&dead, b"x").unwrap();
        let other_host = scratch_dir(root.path()).join("elsewhere~999999999~abc");
        fs::write(&other_host, b"x").unwrap();
        sweep_stale(root.path());
        assert!(!dead.exists(), "a dead writer's file must go");
        assert!(other_host.exists(), "another host's fresh file is kept");
        assert!(mine.path().exists(), "a live writer's file is kept");
        drop(mine);
        fs::remove_file(&other_host).unwrap();
        sweep_stale(root.path());
        assert!(
            !scratch_dir(root.path()).exists(),
            "an empty scratch dir goes"
        );
    }

    #[test]
    fn the_image_lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = ImageLock::acquire(dir.path()).unwrap();
        assert!(first._held.is_some(), "flock works on a local directory");
        let file = fs::File::open(dir.path()).unwrap();
        // SAFETY: a valid open descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(
            rc, -1,
            "a second open file description must not get the lock"
        );
        drop(first);
        // SAFETY: as above.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "released on drop");
    }
}
