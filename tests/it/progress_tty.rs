//! Progress bars appear on a terminal and never when output is piped. The
//! terminal is a real pseudo-terminal made by util-linux `script`; the push
//! goes to a real docker-registry.
use crate::peers;

use std::process::Command;

use peers::registry::Registry;
use peers::tools::{self, run_ok, stagex};

fn push_args(host: &str, tag: &str) -> Vec<String> {
    vec![
        "image".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rootfs").into(),
        "--output".into(),
        format!("docker://{host}/x/progress:{tag}"),
    ]
}

#[test]
fn push_progress_shows_on_a_terminal_and_not_in_a_pipe() {
    let Some(script) = tools::require(&["script"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();

    // Piped: stdout holds the result line only, stderr nothing.
    let piped = run_ok(
        stagex()
            .args(push_args(&registry.host(), "piped"))
            .env("STAGEX_STORE", work.path().join("a")),
    );
    let stdout = String::from_utf8_lossy(&piped.stdout);
    assert_eq!(stdout.lines().count(), 1, "piped stdout: {stdout}");
    assert!(stdout.starts_with("sha256:"), "{stdout}");
    assert!(
        piped.stderr.is_empty(),
        "piped stderr: {}",
        String::from_utf8_lossy(&piped.stderr)
    );

    // On a terminal: a progress bar per uploaded blob (a fresh store and tag,
    // so blobs are uploaded again under a new repository).
    let command_line = std::iter::once(env!("CARGO_BIN_EXE_stagex").to_string())
        .chain(push_args(&registry.host(), "tty"))
        .collect::<Vec<_>>()
        .join(" ");
    let on_tty = run_ok(
        Command::new(&script[0])
            .args(["-qec", &command_line, "/dev/null"])
            .env("STAGEX_STORE", work.path().join("b"))
            .env("TERM", "xterm"),
    );
    let screen = String::from_utf8_lossy(&on_tty.stdout);
    assert!(
        screen.contains("push "),
        "no progress bar on the terminal:\n{screen}"
    );
    assert!(screen.contains("sha256:"), "{screen}");
}
