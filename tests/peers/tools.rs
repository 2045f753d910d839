//! Finding the real peer programs a test needs. Outside CI a missing peer
//! skips the test with a message, and the test binary ends with a count of
//! the skips (so a local green run says what did not run); under CI
//! (`CI=true`) or with `STAGEX_REQUIRE_PEERS=1` it fails the test, so a
//! green CI run always means the peer really ran.
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True when running under CI (or with `STAGEX_REQUIRE_PEERS=1`), where
/// missing peers are failures.
pub fn in_ci() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    set("CI") || set("STAGEX_REQUIRE_PEERS")
}

static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Announces a skipped test (outside CI only) and counts it; the count and
/// the reasons are printed when the test binary exits, after libtest's
/// own summary.
pub fn skip(reason: &str) {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    eprintln!("SKIP: {reason}");
    SKIPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(reason.to_string());
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain extern "C" fn that only reads a static.
        unsafe { libc::atexit(print_skipped) };
    });
}

extern "C" fn print_skipped() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    let mut reasons: Vec<&String> = skipped.iter().collect();
    reasons.sort();
    reasons.dedup();
    eprintln!(
        "\n{} test(s) SKIPPED for missing peers (STAGEX_REQUIRE_PEERS=1 or CI=true makes this a failure):",
        skipped.len()
    );
    for reason in reasons {
        eprintln!("  {reason}");
    }
}

/// StageX's real tree (`$STAGEX_REAL_TREE`, else `../shared/stagex-2026.03.0`
/// beside the repository); `None` (a counted skip) outside CI when missing.
pub fn real_stagex_tree() -> Option<PathBuf> {
    let tree = std::env::var_os("STAGEX_REAL_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/stagex-2026.03.0")
        });
    if tree.join("packages/pallet").is_dir() {
        return Some(tree);
    }
    let message = format!("StageX's tree is not at {}", tree.display());
    assert!(!in_ci(), "{message} (CI=true)");
    skip(&format!("{message}; set STAGEX_REAL_TREE"));
    None
}

/// Looks a program up in PATH (and the sbin directories Debian uses).
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Returns the path of every program, or `None` when one is missing and we
/// are not in CI (the caller returns early: a skip, announced on stderr).
/// Panics in CI.
pub fn require(programs: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::new();
    for program in programs {
        match find(program) {
            Some(path) => found.push(path),
            None if in_ci() => {
                panic!("required peer `{program}` is not installed (CI=true): see .ci/run")
            }
            None => {
                skip(&format!(
                    "peer `{program}` not installed; install it (see .ci/setup) to run this test"
                ));
                return None;
            }
        }
    }
    Some(found)
}

/// Runs a command and panics with its stderr if it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// The stagex binary built for these tests.
pub fn stagex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stagex"))
}

/// `stagex --root ROOT ARGS...` (more arguments may follow).
pub fn stagex_in(root: &Path, args: &[&str]) -> Command {
    let mut command = stagex();
    command.arg("--root").arg(root).args(args);
    command
}

/// `stagex --root ROOT ARGS...` run to its end (success or not).
pub fn stagex_output(root: &Path, args: &[&str]) -> Output {
    let mut command = stagex_in(root, args);
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"))
}

/// A command's stdout then stderr, for failure messages and text checks.
pub fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Parses `stagex --json` stdout; panics showing both streams if it is not JSON.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}

/// The number in the environment variable `name`, or `default` when it is
/// unset or not a number (benchmark sizes).
#[allow(dead_code)] // read by the benches only
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Copies a directory tree (files and directories; sorted walk).
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Runs `command` to its end with stdout and stderr captured (drained while
/// it runs, so a chatty child cannot block on a full pipe); panics if it is
/// still running after `cap` (it is stopped first, with everything it
/// started: see `stop_group`): a hang fails the test instead of stopping
/// the suite.
pub fn run_bounded(command: &mut Command, cap: Duration) -> Output {
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > cap {
            stop_group(&mut child);
            panic!("{command:?} still running after {cap:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Stops `child`, which leads its own process group, and every process in
/// that group (a script's servers too): SIGTERM first, so a script's EXIT
/// trap stops what it started, then, after at most 5 s, SIGKILL.
fn stop_group(child: &mut Child) {
    let group = -(child.id() as libc::pid_t);
    // SAFETY: kill(2) with a negative pid signals the group `run_bounded`
    // created for this child; it touches no memory of ours.
    unsafe { libc::kill(group, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above; the group may be gone already (ESRCH is harmless).
    unsafe { libc::kill(group, libc::SIGKILL) };
    let _ = child.wait();
}
