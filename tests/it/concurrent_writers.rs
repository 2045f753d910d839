//! Owns: the tests of concurrent writers through the real `stagex` binary:
//! two commands sharing one blob verdict cache both keep their verdicts
//! (each read the cache before either saved), and a `stagex sign` sweeping
//! the signature tree's scratch directory keeps a live writer's file whose
//! name claims a pid that is dead here (a writer in another pid namespace)
//! and removes an unlocked one.
use crate::publish_support;
use crate::sign_support;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use publish_support::{keys_dir, make_release};
use rustix::fs::{flock, FlockOperation};
use stagex::image::integrity::check_images;
use stagex::image::verdicts::{lock_path, Verdicts, DEFAULT_RACY_WINDOW};
use stagex::image::OutDir;

use crate::peers::tools::{stagex_in, text};

/// How many lock requests wait for the `flock` of inode `ino` (the kernel
/// lists them in /proc/locks with `->`).
fn waiters_on(ino: u64) -> usize {
    let suffix = format!(":{ino}");
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|line| line.contains("->"))
        .filter(|line| line.split_whitespace().any(|f| f.ends_with(&suffix)))
        .count()
}

/// The newest ctime of the files under `dir`, in file-clock nanoseconds.
fn newest_ctime(dir: &Path) -> i128 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().metadata().unwrap())
        .map(|m| i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()))
        .max()
        .unwrap()
}

/// Waits until the file clock is `window` past `ctime_ns` (probing with a
/// file in `dir`): a verdict on files that old is written down, not kept
/// in the hashing process only (see `image::verdicts`, racy files).
fn wait_until_settled(dir: &Path, ctime_ns: i128, window: Duration) {
    let probe = dir.join("clock-probe");
    let limit = ctime_ns + window.as_nanos() as i128;
    let deadline = Instant::now() + window + Duration::from_secs(30);
    while probe_ctime(&probe) <= limit {
        assert!(Instant::now() < deadline, "the file clock did not move");
        // Only to poll less often: the loop's condition is what decides.
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(probe).unwrap();
}

/// Writes `probe` and returns its ctime.
fn probe_ctime(probe: &Path) -> i128 {
    std::fs::write(probe, b"tick").unwrap();
    newest_ctime(probe)
}

/// `stagex digests --check` of `root`, with the verdict cache `cache`.
fn digests_check(root: &Path, cache: &Path) -> Child {
    stagex_in(root, &["digests", "--check"])
        .env("STAGEX_BLOB_VERDICTS", cache)
        .env("STAGEX_SIGNATURE_CACHE", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn succeeded(child: Child) -> Output {
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "stagex: {}", text(&output));
    output
}

#[test]
fn two_commands_sharing_the_verdict_cache_keep_both_runs_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let roots: Vec<PathBuf> = ["one", "two"].iter().map(|n| dir.path().join(n)).collect();
    for (seed, root) in roots.iter().enumerate() {
        make_release(root, "core", 2, 4096, 40 + seed as u64);
    }
    let cache = dir.path().join("cache/blob-verdicts");
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    let newest = roots.iter().map(|r| newest_ctime(r)).max().unwrap();
    wait_until_settled(dir.path(), newest, DEFAULT_RACY_WINDOW);

    // We hold the cache's lock, so each run reads the cache (empty), hashes,
    // then waits to save: both read before either writes.
    let holder = File::create(lock_path(&cache)).unwrap();
    flock(&holder, FlockOperation::LockExclusive).unwrap();
    let lock_ino = holder.metadata().unwrap().ino();
    let mut runs: Vec<Child> = roots.iter().map(|r| digests_check(r, &cache)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while waiters_on(lock_ino) < 2 {
        let ended = runs.iter_mut().any(|c| c.try_wait().unwrap().is_some());
        assert!(!ended, "a run ended without waiting for the cache's lock");
        assert!(
            Instant::now() < deadline,
            "the runs never asked for the lock"
        );
        // Only to leave the cores to the runs: the condition decides.
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(holder);
    for run in runs {
        succeeded(run);
    }

    // A third command (a fresh open of the cache) hashes nothing in either.
    let verdicts = Verdicts::open(Some(cache.clone()));
    for root in &roots {
        let out = OutDir::open(root.join("out"));
        let ids = ["core-p0".to_string(), "core-p1".to_string()];
        let report = check_images(&out, &ids, &verdicts).unwrap();
        assert_eq!(
            (report.hashed, report.reused),
            (0, 4),
            "{}: a run's verdicts were lost",
            root.display()
        );
    }
}

/// A scratch file of the signature tree under `root`.
fn scratch_file(root: &Path, name: &str) -> PathBuf {
    let dir = root.join("signatures/.stagex-tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, b"half a signature").unwrap();
    path
}

/// This host's name as stagex writes it in scratch names.
fn host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    host.trim().replace('~', "-")
}

fn sign(root: &Path, secret: &Path) -> Output {
    let output = stagex_in(root, &["sign", "--identity", "stagex", "--key"])
        .arg(secret)
        .env("STAGEX_BLOB_VERDICTS", "off")
        .output()
        .unwrap();
    assert!(output.status.success(), "stagex sign: {}", text(&output));
    output
}

#[test]
fn sign_keeps_a_live_writers_scratch_file_whatever_pid_its_name_claims() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_release(root, "core", 2, 64, 9);
    let alice = sign_support::key("alice");
    sign_support::write_keys(&keys_dir(root), &[&alice]);
    let secret = sign_support::write_secret(root, "alice", &alice);
    // A pid far above pid_max: dead here, as a writer's pid in another pid
    // namespace may be. The writer (a child process) holds the files' locks:
    // one named as this version names them, one with an older version's name.
    let host = host_name();
    let live = scratch_file(root, &format!("lk~{host}~999999999~live"));
    let live_old_name = scratch_file(root, &format!("{host}~999999999~live"));
    let dead = scratch_file(root, &format!("lk~{host}~999999999~dead"));
    let locked = |path: &Path| {
        let holder = File::open(path).unwrap();
        flock(&holder, FlockOperation::NonBlockingLockExclusive).unwrap();
        holder
    };
    let mut writer = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(locked(&live))
        .stderr(locked(&live_old_name))
        .spawn()
        .expect("cat (coreutils) runs");

    sign(root, &secret);
    assert!(live.exists(), "a live writer's scratch file was removed");
    assert!(
        live_old_name.exists(),
        "a live writer's file (old name) was removed"
    );
    assert!(
        !dead.exists(),
        "an unlocked scratch file of this host stayed"
    );
    let signatures = walkdir::WalkDir::new(root.join("signatures"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "signature-1")
        .count();
    assert_eq!(signatures, 2, "both images signed");

    // The writer ends: the next run's sweep removes its file and the
    // then empty scratch directory.
    drop(writer.stdin.take());
    assert!(writer.wait().unwrap().success());
    sign(root, &secret);
    assert!(
        !root.join("signatures/.stagex-tmp").exists(),
        "a dead writer's scratch file stayed"
    );
}
