//! Progress bars appear on a terminal and never when output is piped. The
//! terminal is a real pseudo-terminal made by util-linux `script`; the
//! pushes (`image --output`, `publish`) go to a real docker-registry.
use crate::peers;
use crate::publish_support::{keys_dir, make_release, publish};
use crate::sign_support::{key, write_keys, write_secret};

use std::process::Command;

use peers::registry::Registry;
use peers::tools::{self, run_ok, stagex, stagex_in, text};

fn push_args(host: &str, tag: &str) -> Vec<String> {
    vec![
        "image".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rootfs").into(),
        "--output".into(),
        format!("docker://{host}/x/progress-{tag}:{tag}"),
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

    // On a terminal: a progress bar per uploaded blob (a fresh store and a
    // repository of its own, so the blobs are uploaded again: a bar is drawn
    // only for a blob that is uploaded, not one the repository has).
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

/// `stagex --root ROOT ARGS...` on a pseudo-terminal: what the screen got.
fn on_terminal(script: &std::path::Path, root: &std::path::Path, args: &[&str]) -> String {
    let command_line = [env!("CARGO_BIN_EXE_stagex"), "--root"]
        .into_iter()
        .map(String::from)
        .chain([root.display().to_string()])
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = run_ok(
        Command::new(script)
            .args(["-qec", &command_line, "/dev/null"])
            .env("TERM", "xterm"),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sign_and_publish_draw_their_progress_events_on_a_terminal_only() {
    let Some(script) = tools::require(&["script"]) else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    make_release(root, "core", 3, 100_000, 5);
    let (alice, bob) = (key("alice"), key("bob"));
    write_keys(&keys_dir(root), &[&alice, &bob]);
    let ns = format!("{}/stagex", registry.host());

    // Piped sign: one result line per image on stdout, no bar on stderr.
    let alice_key = write_secret(root, "alice", &alice);
    let piped = run_ok(
        stagex_in(root, &["sign", "--unreleased", "--key"])
            .arg(&alice_key)
            .args(["--identity", &ns]),
    );
    let stdout = String::from_utf8_lossy(&piped.stdout);
    assert_eq!(stdout.matches("signed ").count(), 3, "{}", text(&piped));
    assert!(!stdout.contains("/3 images"), "{}", text(&piped));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("/3 images"), "a bar in a pipe: {stderr}");

    // Sign on a terminal: the count bar, and the result lines whole.
    let bob_key = write_secret(root, "bob", &bob).display().to_string();
    let args = ["sign", "--unreleased", "--key", &bob_key, "--identity", &ns];
    let screen = on_terminal(&script[0], root, &args);
    assert!(screen.contains("/3 images"), "no sign bar:\n{screen}");
    for image in ["core-p0", "core-p1", "core-p2"] {
        assert!(
            screen.contains(&format!("signed          {image} ")),
            "{image} not reported whole:\n{screen}"
        );
    }

    // Piped publish (--json): the report only, nothing on stderr.
    let piped = publish(root, &ns, &["--registry", &ns]).output().unwrap();
    assert!(piped.status.success(), "{}", text(&piped));
    assert!(piped.stderr.is_empty(), "{}", text(&piped));

    // Publish on a terminal (to a second namespace, so blobs move again):
    // the bytes bar over all registries and the registry's image count,
    // then the summary.
    let second = format!("{}/second", registry.host());
    let args = [
        "publish",
        "--release",
        "2026.03.0",
        "--identity",
        &ns,
        "--registry",
        &second,
    ];
    let screen = on_terminal(&script[0], root, &args);
    assert!(screen.contains("all registries"), "no bytes bar:\n{screen}");
    assert!(screen.contains("/3 images"), "no images bar:\n{screen}");
    assert!(screen.contains("total: images 3"), "no summary:\n{screen}");
}
