//! `stagex release notes` between two trees made for the test (git refs
//! and directories) and on StageX's real tree against a changed copy of
//! itself; `stagex release status` over a release with a package under the
//! quorum, an invalid signature and a duplicate signer, its HTML page
//! rendered by a real headless chromium (the counts on the page equal the
//! JSON's), and a 600 x 8 page that stays usable.
use crate::peers;
use crate::sign_support::{aged_key, key, make_image, payload, sign_raw, write_keys, Shape};

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use peers::tools::{json, require, run_ok, stagex_output, text};
use stagex::lookaside::file::FileLookaside;
use stagex::oci::digest::Digest;
use stagex::sign::check::{ImageReport, SignerEntry};
use stagex::sign::status;

fn package(root: &Path, stage: &str, name: &str, version: &str, subpackages: &[&str]) {
    let dir = root.join("packages").join(stage).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let subs = if subpackages.is_empty() {
        String::new()
    } else {
        format!(
            "subpackages = [{}]\n",
            subpackages
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    std::fs::write(
        dir.join("package.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\n{subs}"),
    )
    .unwrap();
    let mut containerfile = "FROM scratch AS build\n".to_string();
    for sub in subpackages {
        containerfile += &format!("FROM scratch AS package-{sub}\n");
    }
    std::fs::write(dir.join("Containerfile"), containerfile).unwrap();
}

fn digests(root: &Path, lines: &[(&str, &str)]) {
    std::fs::create_dir_all(root.join("digests")).unwrap();
    let text: String = lines
        .iter()
        .map(|(name, salt)| format!("{} {name}\n", Digest::of_bytes(salt.as_bytes()).hex()))
        .collect();
    std::fs::write(root.join("digests/core.txt"), text).unwrap();
}

fn git(repo: &Path, args: &[&str]) {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args([
                "-c",
                "user.name=Ada Author",
                "-c",
                "user.email=ada@example.org",
            ])
            .args(args),
    );
}

/// Release A, then release B with every kind of change, as two tags.
fn two_releases(repo: &Path) {
    package(repo, "core", "kept", "1.0", &[]);
    package(repo, "core", "bumped", "1.0", &[]);
    package(repo, "core", "rebuilt", "2.0", &[]);
    package(repo, "core", "dropped", "0.1", &[]);
    package(repo, "core", "family", "5", &["family-a", "family-b"]);
    digests(
        repo,
        &[
            ("core-kept", "k"),
            ("core-bumped", "b1"),
            ("core-rebuilt", "r1"),
            ("core-dropped", "d"),
        ],
    );
    git(repo, &["init", "-q"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "release A"]);
    git(repo, &["tag", "a"]);
    package(repo, "core", "bumped", "1.1", &[]);
    std::fs::remove_dir_all(repo.join("packages/core/dropped")).unwrap();
    package(repo, "core", "fresh", "0.9", &[]);
    package(repo, "core", "family", "5", &["family-a", "family-c"]);
    digests(
        repo,
        &[
            ("core-kept", "k"),
            ("core-bumped", "b2"),
            ("core-rebuilt", "r2"),
            ("core-fresh", "f"),
        ],
    );
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "release B"]);
    git(repo, &["tag", "b"]);
}

fn names(value: &serde_json::Value, field: &str) -> Vec<String> {
    value[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["package"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn notes_between_two_git_refs_name_every_change_and_the_authors() {
    if require(&["git"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    two_releases(repo);
    let output = stagex_output(
        repo,
        &["--json", "release", "notes", "--from", "a", "--to", "b"],
    );
    assert!(output.status.success(), "{}", text(&output));
    let notes = json(&output);
    assert_eq!(names(&notes, "added"), ["core-family-c", "core-fresh"]);
    assert_eq!(names(&notes, "removed"), ["core-dropped", "core-family-b"]);
    assert_eq!(names(&notes, "version_changes"), ["core-bumped"]);
    assert_eq!(notes["version_changes"][0]["old"], "1.0");
    assert_eq!(notes["version_changes"][0]["new"], "1.1");
    assert_eq!(names(&notes, "rebuilds"), ["core-rebuilt"]);
    assert_eq!(notes["subpackage_changes"][0]["definition"], "core-family");
    assert_eq!(notes["subpackage_changes"][0]["added"][0], "core-family-c");
    assert_eq!(
        notes["subpackage_changes"][0]["removed"][0],
        "core-family-b"
    );
    assert_eq!(notes["authors"][0]["name"], "Ada Author <ada@example.org>");
    assert_eq!(notes["authors"][0]["count"], 1);

    let markdown = text(&stagex_output(
        repo,
        &["release", "notes", "--from", "a", "--to", "b"],
    ));
    assert!(markdown.contains("## Updated (1)"), "{markdown}");
    assert!(markdown.contains("`core-bumped` 1.0 → 1.1"), "{markdown}");
    assert!(
        markdown.contains("## Rebuilt (same version, new digest) (1)"),
        "{markdown}"
    );
}

#[test]
fn notes_on_the_real_tree_against_a_changed_copy() {
    let Some(tree) = peers::tools::real_stagex_tree() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    peers::tools::copy_dir(&tree.join("packages"), &old.join("packages"));
    peers::tools::copy_dir(&tree.join("packages"), &new.join("packages"));
    let toml = new.join("packages/core/busybox/package.toml");
    let text_before = std::fs::read_to_string(&toml).unwrap();
    let version_line = text_before
        .lines()
        .find(|l| l.starts_with("version"))
        .unwrap()
        .to_string();
    std::fs::write(
        &toml,
        text_before.replace(&version_line, "version = \"99.0\""),
    )
    .unwrap();
    std::fs::remove_dir_all(new.join("packages/core/bc")).unwrap();
    let (from, to) = (old.to_str().unwrap(), new.to_str().unwrap());
    let output = stagex_output(
        dir.path(),
        &["--json", "release", "notes", "--from", from, "--to", to],
    );
    assert!(output.status.success(), "{}", text(&output));
    let notes = json(&output);
    assert_eq!(names(&notes, "version_changes"), ["core-busybox"]);
    assert_eq!(notes["version_changes"][0]["new"], "99.0");
    assert_eq!(names(&notes, "removed"), ["core-bc"]);
    assert!(names(&notes, "added").is_empty());
}

/// A release of three images: core-a signed by two maintainers; core-b by
/// one, plus a signature made after carol's key expired and one of bob's
/// over another digest; core-c twice by one.
fn signed_release(root: &Path) {
    let alice = key("alice");
    let bob = key("bob");
    let day = Duration::from_secs(86_400);
    let carol = aged_key("carol", 10 * day, 2 * day);
    write_keys(&root.join("keys"), &[&alice, &bob, &carol]);
    let out = root.join("out");
    let digests: Vec<Digest> = ["core-a", "core-b", "core-c"]
        .iter()
        .map(|name| make_image(&out, name, "1", Shape::Manifest, name))
        .collect();
    let lines: String = ["core-a", "core-b", "core-c"]
        .iter()
        .zip(&digests)
        .map(|(n, d)| format!("{} {n}\n", d.hex()))
        .collect();
    std::fs::create_dir_all(root.join("digests")).unwrap();
    std::fs::write(root.join("digests/core.txt"), lines).unwrap();
    let store = FileLookaside::new(root.join("signatures"));
    let sign = |cert, name: &str, digest: &Digest| {
        let blob = sign_raw(
            cert,
            &payload(&format!("stagex/{name}:1"), digest),
            None,
            false,
            false,
        );
        store.add(&format!("stagex/{name}"), digest, &blob).unwrap();
    };
    sign(&alice, "core-a", &digests[0]);
    sign(&bob, "core-a", &digests[0]);
    sign(&alice, "core-b", &digests[1]);
    sign(&carol, "core-b", &digests[1]);
    let wrong = sign_raw(
        &bob,
        &payload("stagex/core-b:1", &Digest::of_bytes(b"other")),
        None,
        false,
        false,
    );
    store.add("stagex/core-b", &digests[1], &wrong).unwrap();
    sign(&alice, "core-c", &digests[2]);
    sign(&alice, "core-c", &digests[2]);
}

#[test]
fn status_lists_short_packages_first_and_the_page_renders_the_same_counts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    signed_release(root);
    let page = root.join("status.html");
    let output = stagex_output(
        root,
        &[
            "--json",
            "release",
            "status",
            "--threshold",
            "2",
            "--html",
            page.to_str().unwrap(),
        ],
    );
    assert!(
        !output.status.success(),
        "two packages are short of the quorum"
    );
    let report = json(&output);
    assert_eq!(report["packages"], 3);
    assert_eq!(report["quorum_met"], 1);
    assert_eq!(report["quorum_short"], 2);
    let images: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["core-b", "core-c", "core-a"]);
    let core_b = &report["rows"][0];
    assert!(
        core_b["other_problems"][0]
            .as_str()
            .unwrap()
            .contains("not this image"),
        "{core_b}"
    );
    let carol_column = report["maintainers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m["name"].as_str().unwrap().starts_with("carol"))
        .unwrap();
    assert_eq!(
        core_b["cells"][carol_column]["state"], "invalid",
        "{core_b}"
    );
    assert!(core_b["cells"][carol_column]["reason"]
        .as_str()
        .unwrap()
        .contains("expired"));
    assert_eq!(report["maintainers"][carol_column]["invalid"], 1);
    assert_eq!(
        report["rows"][1]["valid"], 1,
        "two files by one key count once"
    );

    let terminal = text(&stagex_output(
        root,
        &["release", "status", "--threshold", "2"],
    ));
    assert!(
        terminal.contains("3 package(s): 1 meet the quorum of 2, 2 short"),
        "{terminal}"
    );

    let Some(dom) = chromium_dom(&page) else {
        return;
    };
    for (id, value) in [("packages", 3), ("met", 1), ("short", 2), ("threshold", 2)] {
        assert!(
            dom.contains(&format!("<span id=\"{id}\">{value}</span>")),
            "{id} = {value} in the rendered page"
        );
    }
    assert_eq!(dom.matches("<tr class=\"short\">").count(), 2);
    assert_eq!(dom.matches("class=\"invalid\"").count(), 1);
}

/// The DOM chromium renders for `page` (headless, no network).
fn chromium_dom(page: &Path) -> Option<String> {
    let chromium = require(&["chromium"])?.remove(0);
    let profile = tempfile::tempdir().unwrap();
    let output = peers::tools::run_bounded(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn a_page_of_600_packages_by_8_maintainers_renders_whole() {
    let maintainers: Vec<(String, String)> = (0..8)
        .map(|i| (format!("{i:040X}"), format!("Maintainer {i}")))
        .collect();
    let reports: Vec<ImageReport> = (0..600)
        .map(|i| {
            let signers: Vec<SignerEntry> = maintainers
                .iter()
                .take(i % 9)
                .map(|(f, _)| SignerEntry {
                    fingerprint: f.clone(),
                    name: None,
                    files: vec!["signature-1".into()],
                })
                .collect();
            ImageReport {
                image: format!("core-p{i:03}"),
                platform: None,
                digest: format!("sha256:{i:064x}"),
                reference: String::new(),
                valid_signers: signers.len(),
                quorum: signers.len() >= 3,
                signers,
                invalid: Vec::new(),
                hidden: Vec::new(),
                capped: false,
                error: None,
                threshold: 3,
                accepted: Vec::new(),
            }
        })
        .collect();
    let status = status::status(&reports, &maintainers, 3);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("big.html");
    let html = status::html(&status, "600 x 8");
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
    std::fs::write(&page, html).unwrap();
    let Some(dom) = chromium_dom(&page) else {
        return;
    };
    assert_eq!(dom.matches("<tr class=").count(), 600);
    assert!(dom.contains(&format!(
        "<span id=\"short\">{}</span>",
        status.quorum_short
    )));
}
