//! Owns: the end-to-end tests of child programs that cannot hang stagex
//! (`src/child.rs`): a `diffoscope` that hangs is stopped at
//! `STAGEX_DIFFOSCOPE_TIMEOUT` with everything it started, the error names
//! it, the limit and the env var, what it printed came live and nothing is
//! left in the temp directory; diffoscope's output shows while it runs;
//! Ctrl-C stops diffoscope's group and leaves no log of it; a real
//! diffoscope run still shows its report and leaves nothing behind; a
//! `stagex reproduce` child build that hangs is stopped at
//! `STAGEX_BUILD_TIMEOUT`, fails (the other build still counts), and its
//! log, named before it started, keeps what it printed; bad limits are one
//! clear error. The hangs are injected with scripts on PATH named after a
//! program stagex runs (`diffoscope`, `faketime`): a real one cannot be
//! made to hang (the fault-injection mock the house rules allow).
use crate::build_support;
use crate::peers;

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use peers::tools::{self, text};
use serde_json::Value;
use stagex::layer::{write_layer_to_layout, FileSource, FileTree, LayerOptions, TreeEntry};
use stagex::oci::config::{History, RunConfig};
use stagex::oci::image::{build_image, ImageLayer, ImageSpec};
use stagex::oci::layout::Layout;
use stagex::oci::media_type;

/// How long a test's stagex may run before the test fails (it is stopped).
const CAP: Duration = Duration::from_secs(300);

/// An OCI layout at `dir` of one image holding /etc/motd = `motd`;
/// returns its `oci:DIR:v1` name.
fn motd_image(dir: &Path, motd: &[u8]) -> String {
    let mut tree = FileTree::new();
    tree.insert(
        "etc/motd",
        TreeEntry::file(FileSource::Bytes(motd.to_vec()), 0o644),
    )
    .unwrap();
    let options = LayerOptions {
        workers: 1,
        ..LayerOptions::default()
    };
    let layout = Layout::create(dir).unwrap();
    let written = write_layer_to_layout(&tree, &options, &layout).unwrap();
    let layer = ImageLayer {
        descriptor: written.descriptor(),
        diff_id: written.diff_id.clone(),
        history: History::default(),
    };
    let built = build_image(&ImageSpec {
        platform: "linux/amd64".parse().unwrap(),
        created: "1970-01-01T00:00:01Z".to_string(),
        run: RunConfig::default(),
        layers: vec![layer],
        empty_history: vec![],
        annotations: Default::default(),
    })
    .unwrap();
    layout
        .write_json(&built.config, media_type::OCI_CONFIG)
        .unwrap();
    layout
        .write_json(&built.manifest, media_type::OCI_MANIFEST)
        .unwrap();
    layout.set_ref(Some("v1"), built.descriptor).unwrap();
    format!("oci:{}:v1", dir.display())
}

/// A directory holding an executable script `name` that prints `line`
/// (to stderr: `reproduce` keeps a build's stdout as its report), starts
/// a helper in the background, writes both pids to `pids` (in one open:
/// `pids` may be a FIFO a test waits on), and then hangs.
fn hanging_program(dir: &Path, name: &str, line: &str, pids: &Path) -> PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho '{line}' >&2\nsleep 1000 &\n{{ echo $!; echo $$; }} > '{p}'\nexec sleep 1000\n",
            p = pids.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// PATH with `first` before the test's own.
fn path_with(first: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(first.to_path_buf()).chain(std::env::split_paths(&rest)))
        .unwrap()
}

/// Whether process `pid` has exited: waits on its pidfd (readable once it
/// has exited), up to a cap so that a survivor fails the test instead of
/// hanging it.
fn exits(pid: &str) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
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

/// Every pid in `pids` has exited (the script wrote two).
fn assert_all_exited(pids: &Path) {
    let text = std::fs::read_to_string(pids).unwrap();
    let all: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(all.len(), 2, "{text}");
    for pid in all {
        assert!(exits(pid), "process {pid} survived its stopped group");
    }
}

/// `stagex diff --diffoscope A B` in `root` with `env`, its temp dir `root/tmp`.
fn diffoscope_diff(root: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    tools::run_bounded(&mut diffoscope_command(root, env), CAP)
}

/// The command of `diffoscope_diff`, not started.
fn diffoscope_command(root: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Command {
    let a = motd_image(&root.join("a"), b"hello\n");
    let b = motd_image(&root.join("b"), b"bye\n");
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut command = tools::stagex_in(root, &["diff", "--diffoscope", &a, &b]);
    command
        .env("STAGEX_STORE", root.join("store"))
        .env("TMPDIR", &tmp);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// What stagex left in its temp directory `root/tmp`.
fn temp_left(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn a_hanging_diffoscope_is_stopped_at_its_deadline_with_its_group() {
    let root = tempfile::tempdir().unwrap();
    let pids = root.path().join("pids");
    let bin = hanging_program(root.path(), "diffoscope", "diffoscope: comparing", &pids);
    let path = path_with(&bin);
    let output = diffoscope_diff(
        root.path(),
        &[
            ("PATH", path.as_os_str()),
            ("STAGEX_DIFFOSCOPE_TIMEOUT", "2".as_ref()),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = String::from_utf8_lossy(&output.stderr);
    let program = bin.join("diffoscope").display().to_string();
    assert!(
        message.contains(&format!("{program} was still running after 2s")),
        "{message}"
    );
    assert!(
        message.contains("raise STAGEX_DIFFOSCOPE_TIMEOUT"),
        "{message}"
    );
    // What it printed (on its stderr) came to stagex's stderr, as it ran.
    assert!(message.contains("diffoscope: comparing\n"), "{message}");
    assert!(message.contains("what it printed is above"), "{message}");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!out.contains("diffoscope: comparing"), "{out}");
    assert_eq!(temp_left(root.path()), Vec::<PathBuf>::new());
    assert_all_exited(&pids);
}

/// Lines from `reader` up to and including the first that is `line`, or
/// to its end (the text read either way).
fn read_through(reader: &mut impl BufRead, line: &str) -> String {
    let mut read = String::new();
    loop {
        let start = read.len();
        if reader.read_line(&mut read).unwrap() == 0 || read[start..].trim_end() == line {
            return read;
        }
    }
}

#[test]
fn diffoscope_output_shows_while_it_runs() {
    use std::io::{BufReader, Read, Write};
    use std::os::unix::process::CommandExt;
    let root = tempfile::tempdir().unwrap();
    let go = root.path().join("go");
    tools::run_ok(Command::new("mkfifo").arg(&go));
    // A diffoscope that reports, warns, then waits for the test's word.
    let bin = root.path().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("diffoscope");
    let body = format!(
        "#!/bin/sh\necho REPORT\necho WARNING >&2\nread word < '{}'\nexit 1\n",
        go.display()
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = path_with(&bin);
    // Were the output held back until diffoscope ends, the reads below
    // would only end at this deadline, with neither line.
    let mut command = diffoscope_command(
        root.path(),
        &[
            ("PATH", path.as_os_str()),
            ("STAGEX_DIFFOSCOPE_TIMEOUT", "120".as_ref()),
        ],
    );
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let out_so_far = read_through(&mut out, "REPORT");
    assert!(out_so_far.ends_with("REPORT\n"), "{out_so_far}");
    let err_so_far = read_through(&mut err, "WARNING");
    assert!(err_so_far.ends_with("WARNING\n"), "{err_so_far}");
    // diffoscope is still running (it waits on `go`): let it end.
    writeln!(std::fs::File::create(&go).unwrap(), "go").unwrap();
    let status = wait_bounded(child);
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    err.read_to_string(&mut rest).unwrap();
    assert!(
        !rest.contains("REPORT") && !rest.contains("WARNING"),
        "{rest}"
    );
    assert!(!out_so_far.contains("WARNING"), "{out_so_far}");
    assert_eq!(temp_left(root.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_bad_diffoscope_limit_is_one_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let output = diffoscope_diff(
        root.path(),
        &[("STAGEX_DIFFOSCOPE_TIMEOUT", "soon".as_ref())],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("STAGEX_DIFFOSCOPE_TIMEOUT=\"soon\" is not a time limit"),
        "{message}"
    );
    // Refused before any work: nothing was compared.
    assert!(output.stdout.is_empty(), "{}", text(&output));
}

#[test]
fn a_real_diffoscope_shows_its_report_and_leaves_nothing_behind() {
    if tools::require(&["diffoscope"]).is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let output = diffoscope_diff(root.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("layer_0/etc/motd"), "{out}");
    assert!(out.contains("-hello") && out.contains("+bye"), "{out}");
    assert_eq!(temp_left(root.path()), Vec::<PathBuf>::new());
}

/// `stagex --json reproduce core-a --builders native` in `root`, with `env`.
fn reproduce_native(root: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    build_support::native_package(root, "a", None, "a");
    let work = root.join("work");
    let mut command = tools::stagex_in(
        root,
        &["--json", "reproduce", "core-a", "--builders", "native"],
    );
    command
        .arg("--work")
        .arg(&work)
        .env_remove("SOURCE_DATE_EPOCH");
    for (name, value) in env {
        command.env(name, value);
    }
    tools::run_bounded(&mut command, CAP)
}

#[test]
fn a_hanging_reproduce_build_is_stopped_and_its_log_kept() {
    let root = tempfile::tempdir().unwrap();
    let pids = root.path().join("pids");
    // The varied build runs under faketime (the time variation): the fake
    // one hangs it; the control build does not use it (and has the same
    // limit: 10 s, so that a loaded machine cannot make it fail too).
    let bin = hanging_program(
        root.path(),
        "faketime",
        "faketime: starting the build",
        &pids,
    );
    let path = path_with(&bin);
    let output = reproduce_native(
        root.path(),
        &[
            ("PATH", path.as_os_str()),
            ("STAGEX_BUILD_TIMEOUT", "10s".as_ref()),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let package = &report["packages"][0];
    assert_eq!(package["verdict"], "failed", "{report}");
    let builds = package["builds"].as_array().unwrap();
    let (control, varied) = (&builds[0], &builds[1]);
    assert!(control["digest"].is_string(), "{report}");
    assert_eq!(varied["run"], "varied", "{report}");
    let log = PathBuf::from(varied["log"].as_str().unwrap());
    let error = varied["error"].as_str().unwrap();
    assert!(
        error.contains("stagex build (native varied) was still running after 10s"),
        "{error}"
    );
    assert!(error.contains("STAGEX_BUILD_TIMEOUT"), "{error}");
    assert!(error.contains(&log.display().to_string()), "{error}");
    // The log was named before the build started, and kept what it printed.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("native varied build logs to {}", log.display())),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "faketime: starting the build\n"
    );
    assert_all_exited(&pids);
}

#[test]
fn a_bad_build_limit_is_one_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let output = reproduce_native(
        root.path(),
        &[("STAGEX_BUILD_TIMEOUT", "six hours".as_ref())],
    );
    assert!(!output.status.success(), "{}", text(&output));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("STAGEX_BUILD_TIMEOUT=\"six hours\" is not a time limit"),
        "{message}"
    );
    assert!(!root.path().join("work/native").exists());
}

/// `pids` read to its end on a thread (a FIFO: it blocks until the script
/// has written them); panics after `CAP` (the script never ran).
fn read_pids_when_written(pids: &Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = pids.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(path).unwrap());
    });
    rx.recv_timeout(CAP)
        .expect("the hanging build never started")
}

/// `child`'s exit status; panics after `CAP` (it was stopped first).
fn wait_bounded(mut child: std::process::Child) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().unwrap());
    });
    rx.recv_timeout(CAP).unwrap_or_else(|_| {
        let group = rustix::process::Pid::from_raw(pid as i32).unwrap();
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        panic!("stagex did not die of SIGINT: killed")
    })
}

#[test]
fn an_interrupted_reproduce_stops_its_build_and_keeps_the_log() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let root = tempfile::tempdir().unwrap();
    let pids = root.path().join("pids");
    tools::run_ok(Command::new("mkfifo").arg(&pids));
    let bin = hanging_program(
        root.path(),
        "faketime",
        "faketime: starting the build",
        &pids,
    );
    build_support::native_package(root.path(), "a", None, "a");
    let stderr = root.path().join("stderr");
    let mut command = tools::stagex_in(
        root.path(),
        &["--json", "reproduce", "core-a", "--builders", "native"],
    );
    command
        .arg("--work")
        .arg(root.path().join("work"))
        .env("PATH", path_with(&bin))
        .env_remove("STAGEX_BUILD_TIMEOUT")
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0);
    let child = command.spawn().unwrap();
    let stagex = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    // The varied build is running (and hangs) once its script wrote this.
    let written = read_pids_when_written(&pids);
    // What the terminal's Ctrl-C sends to stagex (its build is in a group
    // of its own, which the terminal's signal would not reach).
    rustix::process::kill_process(stagex, rustix::process::Signal::INT).unwrap();
    let status = wait_bounded(child);
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    for pid in written.split_whitespace() {
        assert!(
            exits(pid),
            "process {pid} of the interrupted build survived"
        );
    }
    let said = std::fs::read_to_string(&stderr).unwrap();
    let log = said
        .lines()
        .find_map(|l| l.split_once("native varied build logs to "))
        .map(|(_, path)| PathBuf::from(path))
        .unwrap_or_else(|| panic!("no log named: {said}"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "faketime: starting the build\n"
    );
}

#[test]
fn an_interrupted_diffoscope_is_stopped_with_its_group() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let root = tempfile::tempdir().unwrap();
    let pids = root.path().join("pids");
    tools::run_ok(Command::new("mkfifo").arg(&pids));
    let bin = hanging_program(root.path(), "diffoscope", "diffoscope: comparing", &pids);
    let path = path_with(&bin);
    let mut command = diffoscope_command(
        root.path(),
        &[
            ("PATH", path.as_os_str()),
            ("STAGEX_DIFFOSCOPE_TIMEOUT", "off".as_ref()),
        ],
    );
    let child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stagex = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    // diffoscope is running (and hangs) once its script wrote this.
    let written = read_pids_when_written(&pids);
    // What the terminal's Ctrl-C sends to stagex.
    rustix::process::kill_process(stagex, rustix::process::Signal::INT).unwrap();
    let status = wait_bounded(child);
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    for pid in written.split_whitespace() {
        assert!(exits(pid), "process {pid} of diffoscope survived");
    }
    // No log of diffoscope's output is left behind. (The directory of the
    // extracted files, src/cli/diff.rs's, is: a signal skips its removal.)
    let logs: Vec<PathBuf> = temp_left(root.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("stagex-diffoscope-"))
        .collect();
    assert_eq!(logs, Vec::<PathBuf>::new());
}
