//! Owns: the blob verdict cache, remembering "this file hashed to this
//! digest" so a second command over `out/` does not hash the same bytes
//! again. A verdict is keyed by the file's identity (device, inode) and
//! reused only while the file's size, mtime and ctime are exactly those it
//! had when it was hashed; any write, truncation, `touch`, chmod, rename or
//! re-link changes the ctime (which no user can set back), so a changed
//! file is always hashed again.
//!
//! Racy files: file times tick coarsely (a kernel tick, or a whole second
//! on some file systems), so a file written again within the same tick
//! after it was hashed would keep its times. A verdict is therefore only
//! written to the file when the blob's mtime and ctime are older than the
//! hashing by more than `racy_window` (2 s by default); younger verdicts
//! live in this process only.
//!
//! Where: `$STAGEX_BLOB_VERDICTS` (a file path; `off` disables the file),
//! else `$XDG_CACHE_HOME/stagex/blob-verdicts`, else
//! `~/.cache/stagex/blob-verdicts`. Not under `out/`: whoever can write the
//! file can make a corrupt blob pass, so it lives with the user's other
//! caches (as the signature cache does), never beside the bytes it vouches
//! for (an `out/` unpacked from an artifact or shared with others would
//! carry its own verdicts). One file serves every checkout.
//!
//! The file: a header line, then one line per verdict,
//! `<hex> <size> <dev> <ino> <mtime ns> <ctime ns> <path>`. It is written
//! atomically (temp file, fsync, rename); an unreadable file or line is a
//! cold cache, never an error. Entries whose file is gone or changed are
//! dropped when the file is written.
//!
//! Several processes (two terminals, CI jobs sharing a cache) save into
//! one file: a save holds an exclusive `flock` on `<file>.lock` (beside
//! the file; it stays, empty, and the kernel releases the lock when its
//! holder dies, even by kill -9), reads the file again and writes what it
//! holds merged with this process's verdicts, so no run's verdicts are
//! lost. Readers take no lock (the rename is atomic). A save that waits
//! more than `LOCK_WAIT` for another's gives up (a stopped process may
//! hold the lock); where the file system has no `flock`, it merges without
//! the lock. Either way a save never fails a command: it only costs time.
//!
//! Must not decide whether a blob is good: `image::integrity` does.
use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::file_lock::{lock_exclusive, Lock};
use crate::oci::blob_writer::{new_temp_file, sync_and_rename};
use crate::oci::digest::Digest;

/// The first line of the file (a new format only costs a cold run).
const HEADER: &str = "stagex-blob-verdicts 1";
/// Verdicts kept at most (about 200 bytes each).
const MAX_ENTRIES: usize = 200_000;
/// How much older than the hashing a file must be for its verdict to be
/// written down (see the module header).
pub const DEFAULT_RACY_WINDOW: Duration = Duration::from_secs(2);

/// What identifies a file and its state: a verdict holds while this does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStamp {
    pub fn of(metadata: &Metadata) -> FileStamp {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        FileStamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// True when both file times are older than `time - window`.
    fn settled_before(&self, time: SystemTime, window: Duration) -> bool {
        let Ok(since_epoch) = time.duration_since(UNIX_EPOCH) else {
            return false;
        };
        let limit = since_epoch.as_nanos() as i128 - window.as_nanos() as i128;
        self.mtime_ns < limit && self.ctime_ns < limit
    }
}

#[derive(Clone, Debug)]
struct Verdict {
    stamp: FileStamp,
    digest: Digest,
    path: PathBuf,
    /// Written to the file (not racy).
    persist: bool,
}

#[derive(Default)]
struct State {
    by_file: HashMap<(u64, u64), Verdict>,
    /// Verdicts added since the file was read or written.
    changed: bool,
}

/// The verdicts of one cache file (or of this process only).
pub struct Verdicts {
    path: Option<PathBuf>,
    racy_window: Duration,
    state: Mutex<State>,
}

/// The cache file to use, or `None` when disabled.
pub fn default_path() -> Option<PathBuf> {
    crate::store::cache_file("STAGEX_BLOB_VERDICTS", "blob-verdicts")
}

impl Verdicts {
    /// The verdicts in `path` (`None`: kept in this process only).
    pub fn open(path: Option<PathBuf>) -> Verdicts {
        let by_file = path.as_deref().map(read_file).unwrap_or_default();
        Verdicts {
            path,
            racy_window: DEFAULT_RACY_WINDOW,
            state: Mutex::new(State {
                by_file,
                changed: false,
            }),
        }
    }

    /// The same, with another racy window (tests use zero).
    pub fn with_racy_window(mut self, window: Duration) -> Verdicts {
        self.racy_window = window;
        self
    }

    /// The digest a file in state `stamp` was found to hash to, if known.
    pub fn lookup(&self, stamp: &FileStamp) -> Option<Digest> {
        let state = self.state.lock().expect("verdicts lock");
        state
            .by_file
            .get(&(stamp.dev, stamp.ino))
            .filter(|v| v.stamp == *stamp)
            .map(|v| v.digest.clone())
    }

    /// Remembers that the file at `path`, in state `stamp` before hashing
    /// began at `started`, hashes to `digest`.
    pub fn record(&self, stamp: FileStamp, digest: Digest, path: &Path, started: SystemTime) {
        let persist = stamp.settled_before(started, self.racy_window);
        let verdict = Verdict {
            stamp,
            digest,
            path: path.to_path_buf(),
            persist,
        };
        let mut state = self.state.lock().expect("verdicts lock");
        state.by_file.insert((stamp.dev, stamp.ino), verdict);
        state.changed |= persist;
    }

    /// How many verdicts would be written down now.
    pub fn persistent_len(&self) -> usize {
        let state = self.state.lock().expect("verdicts lock");
        state.by_file.values().filter(|v| v.persist).count()
    }

    /// Writes the file when verdicts were added, merged with what other
    /// processes wrote since it was read, dropping verdicts whose file is
    /// gone or changed. Failing only costs hashing again next time.
    pub fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut state = self.state.lock().expect("verdicts lock");
        if !state.changed {
            return Ok(());
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let Some(_held) = SaveLock::acquire(path) else {
            // Another process held the lock far longer than a save takes
            // (stopped?): our verdicts stay in memory, unsaved.
            return Ok(());
        };
        let on_disk = read_file(path);
        let lines = merged_lines(&mut state.by_file, on_disk);
        let mut text = format!("{HEADER}\n");
        for line in lines {
            text += &line;
            text.push('\n');
        }
        let mut temp = new_temp_file(dir)?;
        temp.write_all(text.as_bytes())?;
        sync_and_rename(temp, path)?;
        state.changed = false;
        Ok(())
    }
}

/// The lines to write: the verdicts on disk (another process's included)
/// with this process's persistent ones over them, only those whose file is
/// unchanged. `ours` drops its changed verdicts and learns the others'.
fn merged_lines(
    ours: &mut HashMap<(u64, u64), Verdict>,
    mut on_disk: HashMap<(u64, u64), Verdict>,
) -> Vec<String> {
    ours.retain(|_, v| still_holds(v));
    for (key, verdict) in ours.iter() {
        if verdict.persist {
            on_disk.insert(*key, verdict.clone());
        }
    }
    on_disk.retain(|key, v| {
        // Ours were checked just above; the others' are checked now.
        let holds = ours.get(key).is_some_and(|o| o.persist) || still_holds(v);
        if holds && !ours.get(key).is_some_and(|o| o.stamp == v.stamp) {
            ours.insert(*key, v.clone());
        }
        holds
    });
    let mut lines: Vec<String> = on_disk.values().filter_map(format_line).collect();
    lines.sort();
    lines.truncate(MAX_ENTRIES);
    lines
}

/// The lock file of the cache file at `cache` (`<cache>.lock`): whoever
/// holds an exclusive `flock` on it may read-merge-write the cache.
pub fn lock_path(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    cache.with_file_name(name)
}

/// How long a save waits for another process's save before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// An exclusive `flock` on the cache's lock file, held until dropped (the
/// kernel releases it when the holder dies, even by kill -9).
struct SaveLock {
    _file: Option<File>,
}

impl SaveLock {
    /// The lock, waiting at most `LOCK_WAIT`; `None` when another process
    /// held it all that time. Where the lock file cannot be made or the
    /// file system has no `flock`, an unheld lock: the save then still
    /// merges, only not atomically.
    fn acquire(cache: &Path) -> Option<SaveLock> {
        let unheld = Some(SaveLock { _file: None });
        let Ok(file) = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(lock_path(cache))
        else {
            return unheld;
        };
        match lock_exclusive(file, LOCK_WAIT) {
            Ok(Lock::Held(file)) => Some(SaveLock { _file: Some(file) }),
            Ok(Lock::Busy) => None,
            Ok(Lock::Unsupported) | Err(_) => unheld,
        }
    }
}

/// True when the verdict's file is still there, unchanged.
fn still_holds(verdict: &Verdict) -> bool {
    std::fs::metadata(&verdict.path).is_ok_and(|m| FileStamp::of(&m) == verdict.stamp)
}

fn format_line(v: &Verdict) -> Option<String> {
    let path = v.path.to_str().filter(|p| !p.contains('\n'))?;
    let s = &v.stamp;
    Some(format!(
        "{} {} {} {} {} {} {path}",
        v.digest.hex(),
        s.size,
        s.dev,
        s.ino,
        s.mtime_ns,
        s.ctime_ns
    ))
}

fn parse_line(line: &str) -> Option<Verdict> {
    let mut fields = line.splitn(7, ' ');
    let digest = Digest::from_hex(fields.next()?).ok()?;
    let mut number = || fields.next()?.parse::<i128>().ok();
    let (size, dev, ino) = (number()?, number()?, number()?);
    let (mtime_ns, ctime_ns) = (number()?, number()?);
    let path = PathBuf::from(fields.next()?);
    let stamp = FileStamp {
        dev: u64::try_from(dev).ok()?,
        ino: u64::try_from(ino).ok()?,
        size: u64::try_from(size).ok()?,
        mtime_ns,
        ctime_ns,
    };
    Some(Verdict {
        stamp,
        digest,
        path,
        persist: true,
    })
}

/// The verdicts in the file; anything unreadable is left out.
fn read_file(path: &Path) -> HashMap<(u64, u64), Verdict> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return HashMap::new();
    }
    lines
        .filter_map(parse_line)
        .map(|v| ((v.stamp.dev, v.stamp.ino), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{flock, FlockOperation};

    fn stamp_of(path: &Path) -> FileStamp {
        FileStamp::of(&std::fs::metadata(path).unwrap())
    }

    #[test]
    fn verdicts_round_trip_and_hold_only_for_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob with space");
        std::fs::write(&blob, b"bytes").unwrap();
        let digest = Digest::of_bytes(b"bytes");
        let file = dir.path().join("cache/verdicts");
        let verdicts = Verdicts::open(Some(file.clone())).with_racy_window(Duration::ZERO);
        let stamp = stamp_of(&blob);
        let later = SystemTime::now() + Duration::from_secs(1);
        verdicts.record(stamp, digest.clone(), &blob, later);
        verdicts.save().unwrap();
        let again = Verdicts::open(Some(file.clone()));
        assert_eq!(again.lookup(&stamp), Some(digest.clone()));
        // Another size, mtime or ctime is another state.
        for changed in [
            FileStamp { size: 6, ..stamp },
            FileStamp {
                mtime_ns: stamp.mtime_ns + 1,
                ..stamp
            },
            FileStamp {
                ctime_ns: stamp.ctime_ns + 1,
                ..stamp
            },
        ] {
            assert_eq!(again.lookup(&changed), None);
        }
        // A damaged file is a cold cache.
        std::fs::write(&file, "not a verdicts file\n").unwrap();
        assert_eq!(Verdicts::open(Some(file)).lookup(&stamp), None);
    }

    #[test]
    fn racy_verdicts_stay_in_the_process_and_gone_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (young, gone) = (dir.path().join("young"), dir.path().join("gone"));
        std::fs::write(&young, b"y").unwrap();
        std::fs::write(&gone, b"g").unwrap();
        let file = dir.path().join("verdicts");
        let verdicts =
            Verdicts::open(Some(file.clone())).with_racy_window(Duration::from_secs(3600));
        let stamp = stamp_of(&young);
        verdicts.record(stamp, Digest::of_bytes(b"y"), &young, SystemTime::now());
        assert_eq!(verdicts.lookup(&stamp), Some(Digest::of_bytes(b"y")));
        assert_eq!(verdicts.persistent_len(), 0);
        let verdicts = verdicts.with_racy_window(Duration::ZERO);
        let later = SystemTime::now() + Duration::from_secs(1);
        verdicts.record(stamp_of(&gone), Digest::of_bytes(b"g"), &gone, later);
        std::fs::remove_file(&gone).unwrap();
        verdicts.save().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    /// Two processes' caches over the same file: each opened it before the
    /// other saved, as two commands started together do.
    #[test]
    fn two_savers_of_one_file_keep_both_verdicts_and_drop_gone_files() {
        let dir = tempfile::tempdir().unwrap();
        let blob = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, name).unwrap();
            (
                path.clone(),
                stamp_of(&path),
                Digest::of_bytes(name.as_bytes()),
            )
        };
        let (a, b, gone) = (blob("a"), blob("b"), blob("gone"));
        let file = dir.path().join("cache/verdicts");
        let open = || Verdicts::open(Some(file.clone())).with_racy_window(Duration::ZERO);
        let (first, second) = (open(), open());
        let later = SystemTime::now() + Duration::from_secs(1);
        first.record(a.1, a.2.clone(), &a.0, later);
        second.record(b.1, b.2.clone(), &b.0, later);
        second.record(gone.1, gone.2.clone(), &gone.0, later);
        second.save().unwrap();
        std::fs::remove_file(&gone.0).unwrap();
        first.save().unwrap();
        let fresh = Verdicts::open(Some(file.clone()));
        assert_eq!(fresh.lookup(&a.1), Some(a.2), "the first saver's verdict");
        assert_eq!(fresh.lookup(&b.1), Some(b.2.clone()), "the second's");
        assert_eq!(fresh.lookup(&gone.1), None, "a gone file's verdict");
        // The first saver learnt the second's verdict while merging.
        assert_eq!(first.lookup(&b.1), Some(b.2));
        assert!(lock_path(&file).exists(), "the lock file stays, empty");
    }

    #[test]
    fn a_save_waits_for_the_lock_another_holder_has() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"x").unwrap();
        let file = dir.path().join("verdicts");
        let verdicts = Verdicts::open(Some(file.clone())).with_racy_window(Duration::ZERO);
        let later = SystemTime::now() + Duration::from_secs(1);
        verdicts.record(stamp_of(&blob), Digest::of_bytes(b"x"), &blob, later);
        // Another open file description is another holder, as another
        // process's would be.
        let holder = File::create(lock_path(&file)).unwrap();
        flock(&holder, FlockOperation::LockExclusive).unwrap();
        let lock_ino = holder.metadata().unwrap().ino();
        std::thread::scope(|scope| {
            let saving = scope.spawn(|| verdicts.save());
            while waiters_on(lock_ino) == 0 && !saving.is_finished() {
                std::thread::yield_now();
            }
            assert!(!saving.is_finished(), "saved without waiting for the lock");
            assert!(!file.exists(), "wrote while another held the lock");
            drop(holder);
            saving.join().unwrap().unwrap();
        });
        assert_eq!(verdicts.persistent_len(), 1);
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains(Digest::of_bytes(b"x").hex()));
    }

    /// How many lock requests wait for the `flock` of inode `ino` (the
    /// kernel lists them in /proc/locks with `->`).
    fn waiters_on(ino: u64) -> usize {
        let suffix = format!(":{ino}");
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .filter(|line| line.contains("->"))
            .filter(|line| line.split_whitespace().any(|f| f.ends_with(&suffix)))
            .count()
    }
}
