//! Owns: running a child program that cannot hang stagex and whose output
//! survives a kill (`stagex diff --diffoscope`, `stagex reproduce`'s child
//! builds). Where the output goes is one `Output`: the log file itself
//! (opened for append before the child starts, so it exists from the start
//! and holds everything the child wrote, even if stagex is killed; nothing
//! is kept in memory and no pipe can fill), optionally with stdout in a
//! report file of its own, or live on stagex's own streams (no log).
//!
//! The child leads a process group of its own. Past its deadline the whole
//! group (everything it started) gets SIGTERM, a short grace, then SIGKILL,
//! and the error names the program, the deadline, the log and the env var
//! that raises it. When the child exits, whatever it left running in its
//! group is killed before the child is reaped (so the group id cannot name
//! another group). Because the group no longer hears the terminal's
//! Ctrl-C, SIGINT/SIGTERM/SIGHUP to stagex are passed on to every running
//! child group; after a grace what is left is killed and stagex dies of the
//! signal (a signal stagex was started with ignored, as under `nohup`,
//! stays ignored). Not covered: a SIGKILL of stagex itself, which no
//! handler sees; its children then run on to their end.
//!
//! No crate does all of this: std gives the process group
//! (`CommandExt::process_group`) and the deadline (one thread blocked in
//! `waitid`, the caller on `recv_timeout`); rustix (already a dependency) sends the group signals without
//! `unsafe`; signal-hook forwards the signals (wait-timeout would only
//! replace the thread; process-wrap would add a layer over `Command` and
//! still need the forwarding).
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rustix::process::{kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions};

/// How long a timed-out child group has between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error(
        "{var}={value:?} is not a time limit: give seconds (`90`), or a duration \
         (`30m`, `6h`, `1h 30m`), or `0`/`off` for no limit"
    )]
    BadLimit { var: &'static str, value: String },
    #[error("cannot open the log {path} for {program}: {source}")]
    Log {
        program: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error(
        "{program} was still running after {limit} and was stopped, with everything it \
         started; what it printed is in {log}. If it needs longer, raise {var} \
         (`{var}=2h`, or `{var}=off` for no limit)"
    )]
    TimedOut {
        program: String,
        limit: String,
        log: PathBuf,
        var: &'static str,
    },
    #[error(
        "{program} was still running after {limit} and was stopped, with everything it \
         started; what it printed is above. If it needs longer, raise {var} \
         (`{var}=2h`, or `{var}=off` for no limit)"
    )]
    TimedOutLive {
        program: String,
        limit: String,
        var: &'static str,
    },
    #[error("waiting for {program}: {source}")]
    Wait { program: String, source: io::Error },
}

/// A time limit read from an env var: `None` is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub limit: Option<Duration>,
    /// The env var that sets it (named by a timeout error).
    pub var: &'static str,
}

impl Deadline {
    /// `$var`, else `default`.
    pub fn from_env(var: &'static str, default: Duration) -> Result<Deadline, ChildError> {
        let limit = match std::env::var(var) {
            Ok(text) => Deadline::parse(var, &text)?,
            Err(_) => Some(default),
        };
        Ok(Deadline { limit, var })
    }

    /// `90`, `90s`, `30m`, `6h`, `1d`; `0` or `off` is no limit.
    pub fn parse(var: &'static str, text: &str) -> Result<Option<Duration>, ChildError> {
        let bad = || ChildError::BadLimit {
            var,
            value: text.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let limit = match trimmed.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => humantime::parse_duration(trimmed).map_err(|_| bad())?,
        };
        Ok((!limit.is_zero()).then_some(limit))
    }
}

/// `90s`, `30m`, `6h`, `1h 30m`.
pub fn describe(limit: Duration) -> String {
    humantime::format_duration(limit).to_string()
}

/// Where the child's output goes.
#[derive(Clone, Debug)]
pub enum Output<'a> {
    /// stdout and stderr, appended to the log.
    Log(&'a Path),
    /// stderr appended to the log; stdout to a file of its own, created
    /// anew (a report the caller parses).
    LogAndReport { log: &'a Path, report: &'a Path },
    /// Live: stdout to stagex's stdout, stderr to stagex's stderr. Nothing
    /// is kept.
    Inherit,
    /// Live: both to stagex's stderr (stagex's stdout carries its own
    /// output, such as JSON). Nothing is kept.
    Stderr,
}

impl Output<'_> {
    /// The log, when the output is kept in one.
    fn log(&self) -> Option<&Path> {
        match self {
            Output::Log(log) | Output::LogAndReport { log, .. } => Some(log),
            Output::Inherit | Output::Stderr => None,
        }
    }
}

/// One supervised run.
#[derive(Clone, Debug)]
pub struct Supervised<'a> {
    /// The program for humans (`diffoscope`, `stagex build (native control)`).
    pub program: &'a str,
    pub output: Output<'a>,
    pub deadline: Deadline,
}

impl Supervised<'_> {
    fn open(&self, path: &Path, append: bool) -> Result<File, ChildError> {
        let mut options = OpenOptions::new();
        options.create(true);
        if append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        options.open(path).map_err(|source| ChildError::Log {
            program: self.program.to_string(),
            path: path.to_path_buf(),
            source,
        })
    }

    /// Runs `command` to its end or its deadline; its exit status.
    pub fn run(&self, command: &mut Command) -> Result<ExitStatus, ChildError> {
        let (stdout, stderr) = self.streams()?;
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let (child, group) = spawn_grouped(command).map_err(|source| ChildError::Spawn {
            program: self.program.to_string(),
            source,
        })?;
        let waited = self.wait(child, group.pid);
        drop(group);
        // A child ended by a signal passed on from stagex: stagex is dying
        // of it too, so the caller must not go on as if the child failed.
        if live_groups().stopping {
            loop {
                std::thread::park();
            }
        }
        waited
    }

    /// The child's stdout and stderr: stagex's own (live), or the log
    /// (opened for append) and maybe a report file of its own.
    fn streams(&self) -> Result<(Stdio, Stdio), ChildError> {
        let (log, report) = match &self.output {
            Output::Inherit => return Ok((Stdio::inherit(), Stdio::inherit())),
            Output::Stderr => return Ok((Stdio::from(io::stderr()), Stdio::inherit())),
            Output::Log(log) => (*log, None),
            Output::LogAndReport { log, report } => (*log, Some(*report)),
        };
        let log_file = self.open(log, true)?;
        let stdout = match report {
            Some(report) => self.open(report, false)?,
            None => log_file.try_clone().map_err(|source| ChildError::Log {
                program: self.program.to_string(),
                path: log.to_path_buf(),
                source,
            })?,
        };
        Ok((stdout.into(), log_file.into()))
    }

    /// Waits for `child` (leader of `group`); past the deadline, stops
    /// the group. Whatever the leader leaves running in its group is
    /// killed before the leader is reaped: until then the group id is the
    /// leader's pid, which no other process can take.
    fn wait(&self, mut child: Child, group: Pid) -> Result<ExitStatus, ChildError> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(exited(group));
        });
        let waited = match self.deadline.limit {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(limit) => rx.recv_timeout(limit),
        };
        let wait_error = |source| ChildError::Wait {
            program: self.program.to_string(),
            source,
        };
        let timed_out = match waited {
            Ok(Ok(())) => false,
            Ok(Err(source)) => return Err(wait_error(source)),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(wait_error(io::Error::other("the waiting thread died")))
            }
            Err(RecvTimeoutError::Timeout) => true,
        };
        // A leader stuck in the kernel even after SIGKILL is left behind
        // (not reaped) rather than hang stagex.
        let leader_exited = !timed_out || stop_group(group, &rx);
        let status = match leader_exited {
            true => {
                let _ = kill_process_group(group, Signal::KILL);
                Some(child.wait().map_err(wait_error)?)
            }
            false => None,
        };
        match (timed_out, status) {
            (false, Some(status)) => Ok(status),
            _ => Err(self.timed_out()),
        }
    }

    /// The error of a run stopped at its deadline: it names the log, or
    /// says the output is above when it went live.
    fn timed_out(&self) -> ChildError {
        let (program, var) = (self.program.to_string(), self.deadline.var);
        let limit = describe(self.deadline.limit.unwrap_or_default());
        match self.output.log() {
            Some(log) => ChildError::TimedOut {
                program,
                limit,
                log: log.to_path_buf(),
                var,
            },
            None => ChildError::TimedOutLive {
                program,
                limit,
                var,
            },
        }
    }
}

/// Blocks until process `pid` (a child) has exited, leaving it to be
/// reaped (`WNOWAIT`), so that its pid stays its own meanwhile.
fn exited(pid: Pid) -> io::Result<()> {
    loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            done => return done.map(drop).map_err(io::Error::from),
        }
    }
}

/// SIGTERM to `group`, up to `GRACE` for its leader to exit, then SIGKILL
/// and up to `GRACE` again; whether the leader exited (unreaped).
fn stop_group(group: Pid, leader: &mpsc::Receiver<io::Result<()>>) -> bool {
    // ESRCH (all gone already) is the only error kill can give here.
    let _ = kill_process_group(group, Signal::TERM);
    if leader.recv_timeout(GRACE).is_ok() {
        return true;
    }
    let _ = kill_process_group(group, Signal::KILL);
    leader.recv_timeout(GRACE).is_ok()
}

/// A child's process group while it may run: listed for the signal
/// forwarding until dropped.
struct Group {
    pid: Pid,
}

impl Drop for Group {
    fn drop(&mut self) {
        let mut live = live_groups();
        live.groups.retain(|g| *g != self.pid);
        GROUPS_CHANGED.notify_all();
    }
}

/// Starts `command` as the leader of a process group of its own, so that
/// everything it starts can be stopped with it, and passes SIGINT, SIGTERM
/// and SIGHUP sent to stagex on to that group while the `Group` lives.
fn spawn_grouped(command: &mut Command) -> io::Result<(Child, Group)> {
    command.process_group(0);
    forward_signals();
    // Spawned under the lock: a signal forwarded meanwhile waits for the
    // new group to be listed, so it reaches it too; once stagex is
    // stopping on a signal, nothing new starts.
    let mut live = live_groups();
    if live.stopping {
        return Err(io::Error::from(io::ErrorKind::Interrupted));
    }
    let child = command.spawn()?;
    let pid = Pid::from_child(&child);
    live.groups.push(pid);
    Ok((child, Group { pid }))
}

/// The process groups of the children running now, and whether stagex is
/// stopping on a signal.
struct LiveGroups {
    groups: Vec<Pid>,
    stopping: bool,
}

static LIVE: Mutex<LiveGroups> = Mutex::new(LiveGroups {
    groups: Vec::new(),
    stopping: false,
});
static GROUPS_CHANGED: Condvar = Condvar::new();

fn live_groups() -> MutexGuard<'static, LiveGroups> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// From the first supervised child on: SIGINT, SIGTERM or SIGHUP to stagex
/// is passed on to every running child group (the children no longer
/// share stagex's process group, so the terminal's Ctrl-C would not reach
/// them); after up to `GRACE` for them to end, what is left is killed and
/// stagex dies of the signal as it would have. A signal stagex was started
/// with ignored (`nohup`, a background job) stays ignored.
fn forward_signals() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let heard: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
            .into_iter()
            .filter(|s| !is_ignored(*s))
            .collect();
        let Ok(mut signals) = signal_hook::iterator::Signals::new(&heard) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                stop_all_and_die(signal);
            }
        });
    });
}

/// Passes `signal` to every live group, waits up to `GRACE` for them to
/// be reaped, kills what is left, then dies of `signal` (under the lock:
/// no group can start in between).
fn stop_all_and_die(signal: i32) {
    let mut live = live_groups();
    live.stopping = true;
    let passed_on = Signal::from_named_raw(signal).unwrap_or(Signal::TERM);
    for group in &live.groups {
        let _ = kill_process_group(*group, passed_on);
    }
    let (mut live, _) = GROUPS_CHANGED
        .wait_timeout_while(live, GRACE, |live| !live.groups.is_empty())
        .unwrap_or_else(|e| e.into_inner());
    for group in &live.groups {
        let _ = kill_process_group(*group, Signal::KILL);
    }
    live.groups.clear();
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    // Only if re-raising failed: exit as a shell reports a signal death,
    // rather than leave a caller parked in `run`.
    std::process::exit(128 + signal);
}

/// True when `signal`'s disposition is "ignore" (inherited from the
/// parent: `nohup` ignores SIGHUP, a non-interactive shell's background
/// job SIGINT).
fn is_ignored(signal: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current
    // disposition into `old`, a zeroed struct we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Bytes read from the end of a log for its tail.
const TAIL_BYTES: u64 = 64 << 10;

/// The last `lines` lines of the file at `path`, from its last 64 KiB
/// (empty when unreadable): a log of gigabytes is not read whole.
pub fn tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let size = file.metadata().map_or(0, |m| m.len());
    let start = size.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // cut in the middle
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether process `pid` has exited (or is gone), for tests: waits on its
/// pidfd, which becomes readable when it exits (zombie or reaped), up to a
/// cap so that a survivor fails the test instead of hanging it.
#[cfg(test)]
pub(crate) fn has_exited(pid: &str) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::process::{pidfd_open, PidfdFlags};
    let pid = Pid::from_raw(pid.trim().parse().unwrap()).unwrap();
    let fd = match pidfd_open(pid, PidfdFlags::empty()) {
        Err(rustix::io::Errno::SRCH) => return true,
        other => other.unwrap(),
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let cap = Timespec {
        tv_sec: 60,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&cap)).unwrap() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAR: &str = "STAGEX_TEST_TIMEOUT";

    #[test]
    fn limits_parse_with_units_and_off() {
        let parse = |text| Deadline::parse(VAR, text).unwrap();
        assert_eq!(parse("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse(" 6h "), Some(Duration::from_secs(6 * 3600)));
        assert_eq!(parse("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("0"), None);
        assert_eq!(parse("OFF"), None);
        for bad in ["", "ten", "-1", "6 fortnights", "99999999999999999999d"] {
            let message = Deadline::parse(VAR, bad).unwrap_err().to_string();
            assert!(
                message.contains(VAR) && message.contains("`30m`"),
                "{message}"
            );
        }
        assert_eq!(describe(Duration::from_secs(6 * 3600)), "6h");
        assert_eq!(describe(Duration::from_secs(1800)), "30m");
        assert_eq!(describe(Duration::from_secs(1)), "1s");
    }

    fn run_sh(
        script: &str,
        output: Output<'_>,
        limit: Option<Duration>,
    ) -> Result<ExitStatus, ChildError> {
        let supervised = Supervised {
            program: "test-child",
            output,
            deadline: Deadline { limit, var: VAR },
        };
        supervised.run(Command::new("sh").arg("-c").arg(script))
    }

    #[test]
    fn output_goes_to_the_log_and_stdout_to_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let (log, report) = (dir.path().join("run.log"), dir.path().join("report.json"));
        std::fs::write(&log, "before\n").unwrap();
        let status = run_sh(
            "echo '{}'; echo said >&2; exit 3",
            Output::LogAndReport {
                log: &log,
                report: &report,
            },
            None,
        )
        .unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "before\nsaid\n");
        assert_eq!(std::fs::read_to_string(&report).unwrap(), "{}\n");
        run_sh("echo out; echo err >&2", Output::Log(&log), None).unwrap();
        assert_eq!(tail(&log, 2), "out\nerr");
    }

    #[test]
    fn a_live_child_past_its_deadline_names_no_log() {
        let supervised = Supervised {
            program: "test-child",
            output: Output::Stderr,
            deadline: Deadline {
                limit: Some(Duration::from_secs(1)),
                var: VAR,
            },
        };
        let error = supervised
            .run(Command::new("sh").arg("-c").arg("exec sleep 1000"))
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("test-child was still running after 1s")
                && message.contains("what it printed is above")
                && message.contains(&format!("raise {VAR}")),
            "{message}"
        );
    }

    #[test]
    fn a_child_killed_midway_leaves_what_it_printed_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let pids = dir.path().join("pids");
        // A build that prints progress, starts a helper, then hangs.
        let script = format!(
            "echo step 1 of 3; echo step 2 of 3 >&2; sleep 1000 & echo $! > {p}; echo $$ >> {p}; exec sleep 1000",
            p = pids.display()
        );
        let error = run_sh(&script, Output::Log(&log), Some(Duration::from_secs(2))).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("test-child was still running after 2s"),
            "{message}"
        );
        assert!(
            message.contains(&log.display().to_string()) && message.contains(VAR),
            "{message}"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "step 1 of 3\nstep 2 of 3\n"
        );
        for pid in std::fs::read_to_string(&pids).unwrap().split_whitespace() {
            assert!(
                has_exited(pid),
                "process {pid} of the killed group is still running"
            );
        }
    }

    #[test]
    fn what_a_child_leaves_running_is_stopped_when_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let (log, pid_file) = (dir.path().join("log"), dir.path().join("pid"));
        let script = format!("sleep 1000 &\necho $! > {}\nexit 0\n", pid_file.display());
        let status = run_sh(&script, Output::Log(&log), None).unwrap();
        assert!(status.success(), "{status}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(has_exited(&pid), "the background {pid} outlived its leader");
    }

    #[test]
    fn an_ignored_signal_is_seen_as_ignored() {
        // SIGUSR2: nothing in the test binary uses it.
        // SAFETY: setting and restoring the disposition of a signal no
        // code here handles.
        let previous = unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
        assert!(is_ignored(libc::SIGUSR2));
        unsafe { libc::signal(libc::SIGUSR2, previous) };
        assert!(!is_ignored(libc::SIGUSR2));
    }
}
