//! Owns: what a writer of a directory lookaside needs BESIDE the signature
//! files, kept where no reader looks: the scratch directory `.stagex-tmp/`
//! at the tree's root (temporary files are written there, then hard-linked
//! or renamed into `signature-N`: same file system, so atomic), the removal
//! of scratch files a killed writer left behind, and the per-image lock
//! that makes "read, decide, write" one step between processes.
//!
//! Whether a scratch file's writer is alive is told by a lock, not by a
//! pid: the writer holds an exclusive `flock` on its scratch file from
//! just after creating it until the file is linked or renamed away (the
//! descriptor closes; the kernel also drops the lock when the writer dies,
//! even by kill -9). A sweeper removes a file only after it took that lock
//! without blocking, and removes it while holding it. A pid in a name says
//! nothing across pid namespaces (containers sharing a host name and a
//! bind-mounted mirror; `podman run --uts=host`), a lock does: every
//! process of one kernel sees it, whatever its namespaces.
//!
//! The window between creating the file and locking it: a sweeper can take
//! the lock first and remove the file. So the writer, once it holds the
//! lock, checks that its name still leads to its file (same device and
//! inode); if not it was swept, and the writer makes another. A sweeper
//! removes only while holding the lock, so a writer that got the lock
//! after that sees the name gone, and one that got it first is never swept.
//!
//! Names: `lk~<host>~<pid>~<random>` (the writer locks it). An unlocked
//! one is removed when `<host>` is this host; another host's only after
//! `STALE_AFTER` (a signature is written in milliseconds), because `flock`
//! is not shared between hosts on every file system: it is on local file
//! systems (all processes of the kernel) and on NFS (Linux emulates it
//! with NFS byte-range locks), but not on NFS mounted `nolock` or
//! `local_lock=flock|all`, CIFS mounted `nobrl`, nor FUSE file systems that
//! do not forward locks (sshfs); there another host's live writer looks
//! unlocked, and `STALE_AFTER` is the only rule. Older stagex versions
//! named files `<host>~<pid>~<random>` and did not lock them: such a file
//! goes when its pid is gone from this host (the old rule) or it is stale,
//! unless someone holds its lock. Where the file system has no `flock` at
//! all (ENOLCK, EOPNOTSUPP), the old pid rule and `STALE_AFTER` decide for
//! both names. Older sweepers cannot parse the new names, so they leave
//! them to `STALE_AFTER` too.
//!
//! The image lock is an exclusive `flock` on the image's directory itself,
//! so no lock file exists for a reader, git or a mirror to see, and the
//! kernel drops it when its holder dies (kill -9 leaves no lock behind).
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::file_lock::{self, lock_exclusive, Lock};
use anyhow::{Context, Result};
use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

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
        let created = tempfile::Builder::new()
            .prefix(&owner_prefix())
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(&dir)
            .and_then(|temp| Ok((lock_as_writer(&temp)?, temp)));
        match created {
            Ok((Locked::Kept, temp)) => break temp,
            // A sweeper removed it before we held its lock: again.
            Ok((Locked::Swept, _)) if attempts < 8 => attempts += 1,
            // Another writer removed the (then empty) directory: again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 8 => attempts += 1,
            Ok((Locked::Swept, _)) => anyhow::bail!(
                "{}: every new temporary file was removed before it could be locked \
                 (another process keeps emptying this directory); run again",
                dir.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating a temporary file in {}", dir.display()))
            }
        }
    };
    fill(temp, blob, &dir)
}

/// Whether a new scratch file is still ours once locked.
#[derive(Debug, PartialEq, Eq)]
enum Locked {
    /// Locked (or the file system has no `flock`) and still named.
    Kept,
    /// A sweeper removed its name before we held the lock, or holds the
    /// lock itself.
    Swept,
}

/// Takes the writer's lock on a new scratch file (held until the file is
/// closed), then checks that its name still leads to it. Never waits: a
/// lock already held on a file this writer just made is a sweeper's (it
/// is removing the file), or anyone's who can open it; either way the
/// writer makes another file rather than wait on them.
fn lock_as_writer(temp: &tempfile::NamedTempFile) -> io::Result<Locked> {
    loop {
        match flock(temp.as_file(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(Errno::INTR) => continue,
            Err(Errno::WOULDBLOCK) => return Ok(Locked::Swept),
            Err(e) if file_lock::unsupported(e) => return Ok(Locked::Kept),
            Err(e) => return Err(e.into()),
        }
    }
    let ours = temp.as_file().metadata()?;
    match fs::symlink_metadata(temp.path()) {
        Ok(named) if (named.dev(), named.ino()) == (ours.dev(), ours.ino()) => Ok(Locked::Kept),
        Ok(_) => Ok(Locked::Swept),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Locked::Swept),
        Err(e) => Err(e),
    }
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

/// Removes the scratch files of the tree at `root` whose writer is gone
/// (best effort: a file another run removes first is fine), then the
/// directory if empty.
pub fn sweep_stale(root: &Path) {
    let dir = scratch_dir(root);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    let host = host_name();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        sweep_one(&entry.path(), parse_owner(&name), &host);
    }
    remove_scratch_dir_if_empty(root);
}

/// Removes one scratch file if its writer is gone (see the module header).
fn sweep_one(path: &Path, owner: Option<Owner<'_>>, host: &str) {
    let stale = || older_than(path, STALE_AFTER);
    let pid_gone = |o: &Owner<'_>| o.host == host && o.pid != std::process::id() && !alive(o.pid);
    match probe_lock(path) {
        Probe::Held => {}
        Probe::Free(_held_while_removing) => {
            let gone = owner.is_some_and(|o| {
                if o.locks {
                    o.host == host
                } else {
                    pid_gone(&o)
                }
            });
            if gone || stale() {
                let _ = fs::remove_file(path);
            }
        }
        Probe::Unknown => {
            if owner.is_some_and(|o| pid_gone(&o)) || stale() {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// What trying a scratch file's lock without blocking found.
enum Probe {
    /// Someone holds it: a live writer.
    Held,
    /// We hold it now (until the file is dropped): no writer has it.
    Free(fs::File),
    /// No answer: not a regular file we can open, or no `flock` here.
    Unknown,
}

fn probe_lock(path: &Path) -> Probe {
    use std::os::unix::fs::OpenOptionsExt;
    // Open for writing too: where flock is emulated with byte-range locks
    // (NFS), an exclusive lock needs a writable descriptor (flock(2)).
    let Ok(file) = fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return Probe::Unknown;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Probe::Unknown;
    }
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Probe::Free(file),
        Err(Errno::WOULDBLOCK) => Probe::Held,
        Err(_) => Probe::Unknown,
    }
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

/// The mark of a name whose writer holds the file's lock.
const LOCKED_MARK: &str = "lk~";

/// `lk~<host>~<pid>~`: who made a scratch file, and that it is locked.
fn owner_prefix() -> String {
    format!("{LOCKED_MARK}{}~{}~", host_name(), std::process::id())
}

/// Who made a scratch file, as its name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner<'a> {
    host: &'a str,
    pid: u32,
    /// A name of this version (`lk~...`): the writer holds the lock.
    locks: bool,
}

/// The owner of a scratch file's name: `lk~<host>~<pid>~<random>`, or an
/// older version's `<host>~<pid>~<random>`.
fn parse_owner(name: &str) -> Option<Owner<'_>> {
    if let Some((host, pid)) = name.strip_prefix(LOCKED_MARK).and_then(host_pid) {
        return Some(Owner {
            host,
            pid,
            locks: true,
        });
    }
    host_pid(name).map(|(host, pid)| Owner {
        host,
        pid,
        locks: false,
    })
}

/// `<host>~<pid>~<something>`.
fn host_pid(rest: &str) -> Option<(&str, u32)> {
    let mut parts = rest.splitn(3, '~');
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
    /// Waits for the lock on `dir` (an existing directory), at most
    /// `IMAGE_LOCK_WAIT`: it is held for milliseconds, so a longer wait is
    /// a holder that is stopped or stuck, and this signer says so instead
    /// of hanging behind it. On a file system without `flock` (some
    /// network ones) this returns an unheld lock: numbering stays safe
    /// there (slots are claimed without replacing), only the "already
    /// signed by this key" check is then not atomic between processes.
    pub fn acquire(dir: &Path) -> Result<ImageLock> {
        ImageLock::acquire_within(dir, IMAGE_LOCK_WAIT)
    }

    fn acquire_within(dir: &Path, wait: Duration) -> Result<ImageLock> {
        let file = fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        match lock_exclusive(file, wait).with_context(|| format!("locking {}", dir.display()))? {
            Lock::Held(file) => Ok(ImageLock { _held: Some(file) }),
            Lock::Unsupported => Ok(ImageLock { _held: None }),
            Lock::Busy => anyhow::bail!(
                "{}: another process has held this image's lock for {} s (a stagex stopped \
                 with Ctrl-Z, or stuck on a slow disk?); let it finish or stop it, then run again",
                dir.display(),
                wait.as_secs()
            ),
        }
    }
}

/// Longest a writer waits for another's lock on an image's directory.
const IMAGE_LOCK_WAIT: Duration = Duration::from_secs(60);

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
            parse_owner(&name).map(|o| (o.pid, o.locks)),
            Some((std::process::id(), true))
        );
        assert!(
            matches!(probe_lock(mine.path()), Probe::Held),
            "the writer holds its lock"
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
    fn the_image_lock_excludes_a_second_holder_and_says_who_waited() {
        let dir = tempfile::tempdir().unwrap();
        let first = ImageLock::acquire(dir.path()).unwrap();
        assert!(first._held.is_some(), "flock works on a local directory");
        let second = ImageLock::acquire_within(dir.path(), Duration::from_millis(50));
        let message = format!("{:#}", second.unwrap_err());
        assert!(
            message.contains("another process has held this image's lock"),
            "{message}"
        );
        drop(first);
        let again = ImageLock::acquire_within(dir.path(), Duration::from_secs(60)).unwrap();
        assert!(again._held.is_some(), "released on drop");
    }

    /// A new file (one byte) in the scratch directory of `root`.
    fn scratch_file(root: &Path, name: &str) -> PathBuf {
        let path = scratch_dir(root).join(name);
        fs::create_dir_all(scratch_dir(root)).unwrap();
        fs::write(&path, b"x").unwrap();
        path
    }

    /// An exclusive `flock` on `path` through a new open file description,
    /// as another process's writer would hold it.
    fn hold_lock(path: &Path) -> fs::File {
        let file = fs::File::open(path).unwrap();
        flock(&file, FlockOperation::NonBlockingLockExclusive).unwrap();
        file
    }

    #[test]
    fn a_locked_file_is_kept_whatever_its_name_says_and_unlocked_ones_go() {
        let root = tempfile::tempdir().unwrap();
        let (root, host) = (root.path(), host_name());
        // Names claiming a pid that is dead here (far above pid_max), as a
        // writer in another pid namespace would have: one of this version,
        // one of an older one.
        let live = scratch_file(root, &format!("lk~{host}~999999999~live"));
        let live_old = scratch_file(root, &format!("{host}~999999999~old"));
        let (holder, holder_old) = (hold_lock(&live), hold_lock(&live_old));
        // Unlocked, of this host, with a pid alive here (ours): the lock
        // tells, not the pid.
        let unlocked = scratch_file(root, &format!("lk~{host}~{}~gone", std::process::id()));
        // Unlocked, of another host: its lock may not reach us; kept until
        // stale. And a name no stagex writes: only age tells.
        let other_host = scratch_file(root, "lk~elsewhere~1~fresh");
        let stranger = scratch_file(root, "stranger");
        let old_stranger = scratch_file(root, "old-stranger");
        let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(86400);
        fs::File::options()
            .write(true)
            .open(&old_stranger)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        sweep_stale(root);
        assert!(live.exists(), "a locked file of a \"dead\" pid must stay");
        assert!(
            live_old.exists(),
            "a locked file with an old name must stay"
        );
        assert!(!unlocked.exists(), "an unlocked file of this host must go");
        assert!(other_host.exists() && stranger.exists());
        assert!(
            !old_stranger.exists(),
            "a stale file goes, whatever its name"
        );
        drop((holder, holder_old));
        sweep_stale(root);
        assert!(!live.exists() && !live_old.exists(), "unlocked now: gone");
    }

    #[test]
    fn a_file_locked_by_a_child_process_is_kept_until_the_child_ends() {
        use std::process::{Command, Stdio};
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let live = scratch_file(root, &format!("lk~{}~999999999~child", host_name()));
        // The child's stdout is the locked open file description: once our
        // descriptor is closed, the child alone holds the lock.
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(hold_lock(&live))
            .spawn()
            .expect("cat (coreutils) runs");
        sweep_stale(root);
        assert!(live.exists(), "the child's file was removed while it ran");
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        sweep_stale(root);
        assert!(!live.exists(), "the file outlived its writer");
        assert!(!scratch_dir(root).exists(), "an empty scratch dir goes");
    }

    /// A writer never waits on a lock someone else holds on its new file
    /// (a sweeper, or any local user who can open it): it makes another.
    #[test]
    fn a_writer_does_not_wait_on_a_lock_held_on_its_new_file() {
        let root = tempfile::tempdir().unwrap();
        let (temp, _holder) = new_file_locked_by_another(root.path());
        assert_eq!(lock_as_writer(&temp).unwrap(), Locked::Swept);
    }

    /// A writer's new scratch file in the tree at `root`, not yet locked
    /// by it, and the lock on it another open file (a sweeper) took.
    fn new_file_locked_by_another(root: &Path) -> (tempfile::NamedTempFile, fs::File) {
        let dir = scratch_dir(root);
        fs::create_dir_all(&dir).unwrap();
        let temp = tempfile::Builder::new()
            .prefix(&owner_prefix())
            .tempfile_in(&dir)
            .unwrap();
        let Probe::Free(holder) = probe_lock(temp.path()) else {
            panic!("a new unlocked file must be free")
        };
        (temp, holder)
    }

    #[test]
    fn a_writer_whose_new_file_was_swept_before_it_locked_it_notices() {
        let root = tempfile::tempdir().unwrap();
        // Just created, not yet locked: a sweeper takes the lock first and
        // removes the file while holding it; whenever the writer then asks
        // for its lock, it finds it held or its name gone: swept either way.
        let (temp, sweeper) = new_file_locked_by_another(root.path());
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| lock_as_writer(&temp).unwrap());
            fs::remove_file(temp.path()).unwrap();
            drop(sweeper);
            assert_eq!(writer.join().unwrap(), Locked::Swept);
        });
        // A kept file is the writer's, locked.
        let kept = write_scratch(root.path(), b"sig").unwrap();
        assert_eq!(fs::read(kept.path()).unwrap(), b"sig");
        assert!(matches!(probe_lock(kept.path()), Probe::Held));
    }
}
