//! The README's first command: `scripts/demo.sh` runs the whole mission on
//! this machine (own TLS registry and WebDAV mirror on 127.0.0.1, build,
//! two keys, sign, publish, pallet, skopeo signedBy pull) and stops what it
//! started. Run here with the test build of stagex.
use crate::peers;

use std::process::Command;
use std::time::Duration;

use peers::tools::{require, run_bounded};

#[test]
fn the_demo_script_runs_the_whole_mission_and_stops_its_servers() {
    let Some(_) = require(&[
        "docker-registry",
        "nginx",
        "openssl",
        "skopeo",
        "gpg",
        "python3",
        "curl",
        "jq",
        "htpasswd",
    ]) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");
    // The whole mission takes about a minute here; a hang must not stop
    // the suite.
    let out = run_bounded(
        Command::new("bash")
            .arg(script)
            .arg(work.path())
            .env("STAGEX", env!("CARGO_BIN_EXE_stagex"))
            .env_remove("STAGEX_DEMO_KEEP")
            .env_remove("STAGEX_ROOT"),
        Duration::from_secs(900),
    );
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    for name in ["core-filesystem", "core-profile", "pallet-demo"] {
        let pulled = format!("-> {}/pull/{name}", work.path().display());
        assert!(
            all.lines()
                .any(|l| l.starts_with("verified and pulled") && l.ends_with(&pulled)),
            "{name} not pulled back: {all}"
        );
        assert!(work
            .path()
            .join("pull")
            .join(name)
            .join("index.json")
            .is_file());
    }
    // The pallet's package layers were mounted, not uploaded again.
    assert!(
        all.contains("(2 journaled)") && all.contains("mounted 2"),
        "{all}"
    );
    // Signatures of all three images are on the mirror (2 maintainers each).
    let mirror = work.path().join("servers/mirror");
    let files = walkdir::WalkDir::new(&mirror)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .count();
    assert_eq!(files, 6, "{all}");
    // Everything it started is stopped: the ports no longer answer.
    for line in all.lines().filter(|l| l.contains("https://127.0.0.1:")) {
        if let Some(port) = line
            .split("https://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "port {port} still open after the demo"
            );
        }
    }
}

/// `run_bounded` on a hang stops the whole process group, letting the
/// script's EXIT trap run first: a demo that hangs leaves no server behind.
#[test]
fn a_hung_script_is_stopped_with_its_children_and_its_exit_trap_runs() {
    let work = tempfile::tempdir().unwrap();
    let (trapped, child_pid) = (work.path().join("trapped"), work.path().join("child.pid"));
    // A background child that ignores nothing, then a wait that never ends.
    let script = format!(
        "trap 'touch {trapped}' EXIT; sleep 1000 & echo $! > {pid}; wait",
        trapped = trapped.display(),
        pid = child_pid.display()
    );
    let hung = std::panic::catch_unwind(|| {
        run_bounded(
            Command::new("bash").arg("-c").arg(&script),
            Duration::from_secs(2),
        )
    });
    assert!(hung.is_err(), "run_bounded returned for a hung script");
    assert!(trapped.exists(), "the EXIT trap did not run");
    let pid: i32 = std::fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background sleep is gone (a zombie reaped by init counts as gone
    // once it is no longer ours to signal).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut alive = true;
    while alive && std::time::Instant::now() < deadline {
        alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z "));
        if alive {
            std::thread::yield_now();
        }
    }
    assert!(!alive, "the script's background child {pid} survived");
}
