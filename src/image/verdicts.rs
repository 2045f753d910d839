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
//! Must not decide whether a blob is good: `image::integrity` does.
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::oci::digest::Digest;
use crate::oci::layout::write_atomic;

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

    /// Writes the file when verdicts were added, dropping those whose file
    /// is gone or changed. Failing only costs hashing again next time.
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut state = self.state.lock().expect("verdicts lock");
        if !state.changed {
            return Ok(());
        }
        state.by_file.retain(|_, v| still_holds(v));
        let mut lines: Vec<String> = state
            .by_file
            .values()
            .filter(|v| v.persist)
            .filter_map(format_line)
            .collect();
        lines.sort();
        lines.truncate(MAX_ENTRIES);
        let mut text = format!("{HEADER}\n");
        for line in lines {
            text += &line;
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
        state.changed = false;
        Ok(())
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
}
