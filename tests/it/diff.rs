//! Owns: the end-to-end tests of `stagex diff`: pairs of real images built
//! for the purpose (the crate's own layer writer and image builder, or
//! hand-made tar + gzip where the writer cannot vary: entry order, gzip
//! level), compared through the binary; each names exactly its cause, in
//! human text and JSON, with exit 0 identical / 1 different / 2 error.
//! Sides are given in several forms (oci:DIR:TAG, oci-archive:,
//! docker-archive:, a layout directory, NAME@sha256: from the store, a
//! registry namespace on a real docker-registry).
use crate::peers;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use peers::tools::{self, json, text};
use serde_json::Value;
use stagex::layer::{write_layer_to_layout, FileSource, FileTree, LayerOptions, TreeEntry};
use stagex::oci::config::{History, RunConfig};
use stagex::oci::descriptor::Descriptor;
use stagex::oci::digest::Digest;
use stagex::oci::image::{build_image, build_index, ImageLayer, ImageSpec};
use stagex::oci::layout::Layout;
use stagex::oci::media_type::{self, LayerCompression};

/// A temp project root with its own store.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `stagex [--json] diff ARGS...` with this project's store.
    fn diff(&self, json_out: bool, args: &[&str]) -> Output {
        self.diff_env(json_out, &[], args)
    }

    /// `diff` with `env` set too.
    fn diff_env(&self, json_out: bool, env: &[(&str, &OsStr)], args: &[&str]) -> Output {
        let mut all = Vec::new();
        if json_out {
            all.push("--json");
        }
        all.push("diff");
        all.extend_from_slice(args);
        let mut command = tools::stagex_in(self.dir.path(), &all);
        command.env("STAGEX_STORE", self.path("store"));
        command.envs(env.iter().copied());
        command.output().expect("run stagex")
    }
}

/// A regular file holding `bytes`.
fn file(bytes: &[u8], mode: u32) -> TreeEntry {
    TreeEntry::file(FileSource::Bytes(bytes.to_vec()), mode)
}

/// The base tree every variation starts from.
fn base_tree() -> FileTree {
    let mut tree = FileTree::new();
    tree.insert("etc/motd", file(b"hello\n", 0o644)).unwrap();
    tree.insert("etc/os-release", file(b"ID=stagex\n", 0o644))
        .unwrap();
    tree.insert("bin/tool", file(b"#!/bin/sh\necho tool\n", 0o755))
        .unwrap();
    tree.insert("usr/lib/libx.so", file(b"\x7fELF", 0o644))
        .unwrap();
    tree.insert("lib", TreeEntry::symlink("usr/lib")).unwrap();
    tree
}

fn image_spec(layers: Vec<ImageLayer>, created: &str, platform: &str) -> ImageSpec {
    ImageSpec {
        platform: platform.parse().unwrap(),
        created: created.to_string(),
        run: RunConfig::default(),
        layers,
        empty_history: vec![],
        annotations: BTreeMap::new(),
    }
}

/// Writes config + manifest for `layers` into `layout`; returns the
/// manifest descriptor (platform set).
fn write_manifest(
    layout: &Layout,
    layers: Vec<ImageLayer>,
    created: &str,
    platform: &str,
) -> Descriptor {
    let built = build_image(&image_spec(layers, created, platform)).unwrap();
    layout
        .write_json(&built.config, media_type::OCI_CONFIG)
        .unwrap();
    layout
        .write_json(&built.manifest, media_type::OCI_MANIFEST)
        .unwrap();
    built.descriptor
}

fn layer_of(written: stagex::layer::WrittenLayer) -> ImageLayer {
    ImageLayer {
        descriptor: written.descriptor(),
        diff_id: written.diff_id.clone(),
        history: History::default(),
    }
}

/// An OCI layout at `dir` holding one image of `tree`, tagged `v1`.
fn tree_image(dir: &Path, tree: &FileTree, options: &LayerOptions, created: &str) -> String {
    let layout = Layout::create(dir).unwrap();
    let layer = layer_of(write_layer_to_layout(tree, options, &layout).unwrap());
    tag_v1(dir, &layout, vec![layer], created)
}

/// An OCI layout at `dir` holding one image of the given gzip layer blob.
fn gzip_image(dir: &Path, blob: &[u8], diff_id: &Digest) -> String {
    let layout = Layout::create(dir).unwrap();
    let digest = layout.write_blob(blob).unwrap();
    let layer = ImageLayer {
        descriptor: Descriptor::new(media_type::OCI_LAYER_GZIP, digest, blob.len() as u64),
        diff_id: diff_id.clone(),
        history: History::default(),
    };
    tag_v1(dir, &layout, vec![layer], CREATED)
}

/// Writes an amd64 image of `layers` into `layout` at `dir`, tagged `v1`;
/// returns its `oci:DIR:v1` name.
fn tag_v1(dir: &Path, layout: &Layout, layers: Vec<ImageLayer>, created: &str) -> String {
    let manifest = write_manifest(layout, layers, created, "linux/amd64");
    layout.set_ref(Some("v1"), manifest).unwrap();
    format!("oci:{}:v1", dir.display())
}

/// The base tree with `/etc/motd` saying "bye": the one-file change
/// several tests compare.
fn bye_tree() -> FileTree {
    let mut changed = base_tree();
    changed.insert("etc/motd", file(b"bye\n", 0o644)).unwrap();
    changed
}

/// Images of the base tree (A, in `a/`) and of `bye_tree` (B, in `b/`).
fn base_and_bye(project: &Project) -> (String, String) {
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    let b = tree_image(&project.path("b"), &bye_tree(), &opts(), CREATED);
    (a, b)
}

const CREATED: &str = "1970-01-01T00:00:01Z";

fn opts() -> LayerOptions {
    LayerOptions {
        workers: 1,
        ..LayerOptions::default()
    }
}

/// Compares the base tree with a variation; returns (human, JSON) output.
fn compare_trees(change: impl FnOnce(&mut FileTree)) -> (Output, Value) {
    let project = Project::new();
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    let mut changed = base_tree();
    change(&mut changed);
    let b = tree_image(&project.path("b"), &changed, &opts(), CREATED);
    compare(&project, &a, &b)
}

fn compare(project: &Project, a: &str, b: &str) -> (Output, Value) {
    let human = project.diff(false, &[a, b]);
    let machine = project.diff(true, &[a, b]);
    assert_eq!(
        human.status.code(),
        machine.status.code(),
        "{}",
        text(&human)
    );
    (human, json(&machine))
}

/// The causes (not consequences) of a JSON report as (level, kind, path).
fn causes(report: &Value) -> Vec<(String, String, String)> {
    report["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c.get("consequence").is_none())
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (s("level"), s("kind"), s("path"))
        })
        .collect()
}

fn cause(level: &str, kind: &str, path: &str) -> (String, String, String) {
    (level.to_string(), kind.to_string(), path.to_string())
}

/// Asserts exit 1, exactly `expected` causes, and the human verdict.
fn assert_differs(
    human: &Output,
    report: &Value,
    expected: &[(String, String, String)],
    words: &str,
) {
    let out = text(human);
    assert_eq!(human.status.code(), Some(1), "{out}");
    assert_eq!(causes(report), expected, "{report:#}");
    let first = out.lines().next().unwrap_or_default();
    let verdict = format!(
        "differ: {} cause{}",
        expected.len(),
        if expected.len() == 1 { "" } else { "s" }
    );
    assert!(first.starts_with(&verdict), "{out}");
    assert!(out.contains(words), "expected {words:?} in:\n{out}");
}

#[test]
fn identical_images_exit_zero() {
    let project = Project::new();
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    let b = tree_image(&project.path("b"), &base_tree(), &opts(), CREATED);
    let (human, report) = compare(&project, &a, &b);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    assert!(text(&human).starts_with("identical"), "{}", text(&human));
    assert_eq!(report["identical"], true);
    assert_eq!(report["cause_count"], 0);
}

#[test]
fn one_file_content_changed() {
    let (human, report) = compare_trees(|t| {
        t.insert("etc/motd", file(b"hello, world\n", 0o644))
            .unwrap()
    });
    assert_differs(
        &human,
        &report,
        &[cause("file", "content", "/etc/motd")],
        "/etc/motd: content differs (6 bytes",
    );
    let c = &report["causes"][0];
    assert_eq!(c["a"]["size"], 6);
    assert_eq!(c["b"]["size"], 13);
    assert_eq!(
        c["b"]["sha256"],
        Digest::of_bytes(b"hello, world\n").to_string()
    );
}

#[test]
fn mtime_only_is_one_summarized_cause() {
    let project = Project::new();
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    let later = LayerOptions {
        mtime: 1_700_000_000,
        ..opts()
    };
    let b = tree_image(&project.path("b"), &base_tree(), &later, CREATED);
    let (human, report) = compare(&project, &a, &b);
    // 5 entries + 3 parent directories (bin, etc, usr, usr/lib) = 9.
    assert_differs(
        &human,
        &report,
        &[cause("file", "mtime_only", "")],
        "9 entries differ only in mtime",
    );
    assert!(text(&human).contains("SOURCE_DATE_EPOCH"));
    assert_eq!(report["causes"][0]["count"], 9);
    assert!(
        report["causes"][0].get("paths").is_none(),
        "listed without --all"
    );
    let all = project.diff(true, &["--all", &a, &b]);
    let paths = json(&all)["causes"][0]["paths"].as_array().unwrap().len();
    assert_eq!(paths, 9);
}

#[test]
fn mode_only() {
    let (human, report) = compare_trees(|t| {
        t.insert("bin/tool", file(b"#!/bin/sh\necho tool\n", 0o700))
            .unwrap()
    });
    assert_differs(
        &human,
        &report,
        &[cause("file", "mode", "/bin/tool")],
        "/bin/tool: mode differs (0755 -> 0700)",
    );
}

#[test]
fn owner_only() {
    let (human, report) = compare_trees(|t| {
        let mut entry = file(b"ID=stagex\n", 0o644);
        entry.uid = 1000;
        entry.gid = 100;
        t.insert("etc/os-release", entry).unwrap()
    });
    assert_differs(
        &human,
        &report,
        &[cause("file", "owner", "/etc/os-release")],
        "owner differs (0:0 -> 1000:100)",
    );
}

#[test]
fn added_and_removed_files() {
    let (human, report) = compare_trees(|t| {
        let mut rebuilt = FileTree::new();
        for (path, entry) in t.entries() {
            if path != "etc/os-release" {
                rebuilt.insert(path, entry.clone()).unwrap();
            }
        }
        rebuilt.insert("etc/issue", file(b"x", 0o644)).unwrap();
        *t = rebuilt;
    });
    let expected = [
        cause("file", "removed", "/etc/os-release"),
        cause("file", "added", "/etc/issue"),
    ];
    assert_differs(&human, &report, &expected, "/etc/issue: added (only in B");
}

#[test]
fn symlink_target_changed() {
    let (human, report) =
        compare_trees(|t| t.insert("lib", TreeEntry::symlink("usr/lib64")).unwrap());
    assert_differs(
        &human,
        &report,
        &[cause("file", "link_target", "/lib")],
        "/lib: link_target differs (usr/lib -> usr/lib64)",
    );
}

/// The base tree as a plain tar (the writer's exact bytes).
fn plain_tar() -> (Vec<u8>, Digest) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path()).unwrap();
    let plain = LayerOptions {
        compression: LayerCompression::None,
        ..opts()
    };
    let written = write_layer_to_layout(&base_tree(), &plain, &layout).unwrap();
    (layout.read_blob(&written.digest).unwrap(), written.diff_id)
}

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn same_tar_different_gzip_level_is_compression_only() {
    let project = Project::new();
    let (tar, diff_id) = plain_tar();
    let (fast, best) = (gzip(&tar, 1), gzip(&tar, 9));
    assert_ne!(fast, best);
    let a = gzip_image(&project.path("a"), &fast, &diff_id);
    let b = gzip_image(&project.path("b"), &best, &diff_id);
    let (human, report) = compare(&project, &a, &b);
    assert_differs(
        &human,
        &report,
        &[cause("compression", "compression", "")],
        "same uncompressed tar, different compression",
    );
    // flate2 writes XFL 4 for the fastest level, 2 for the best.
    assert!(text(&human).contains("gzip XFL 4 -> 2"), "{}", text(&human));
    let c = &report["causes"][0];
    assert_eq!(c["a"]["size"], fast.len());
    assert_eq!(c["b"]["XFL"], 2);
}

/// A tar of (name, content) regular files, in the given order.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

#[test]
fn entry_order_only_is_tar_encoding() {
    let project = Project::new();
    let one = tar_of(&[("a.txt", b"a"), ("b.txt", b"b")]);
    let two = tar_of(&[("b.txt", b"b"), ("a.txt", b"a")]);
    let a = gzip_image(&project.path("a"), &gzip(&one, 6), &Digest::of_bytes(&one));
    let b = gzip_image(&project.path("b"), &gzip(&two, 6), &Digest::of_bytes(&two));
    let (human, report) = compare(&project, &a, &b);
    assert_differs(
        &human,
        &report,
        &[cause("encoding", "entry_order", "")],
        "entry order differs (first at entry 0: A has /a.txt, B has /b.txt)",
    );
}

#[test]
fn config_created_only() {
    let project = Project::new();
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    let b = tree_image(
        &project.path("b"),
        &base_tree(),
        &opts(),
        "2026-03-01T00:00:00Z",
    );
    let (human, report) = compare(&project, &a, &b);
    // `created` and the history entry that copies it.
    let expected = [
        cause("config", "field", "created"),
        cause("config", "field", "history[0].created"),
    ];
    assert_differs(
        &human,
        &report,
        &expected,
        "config created: \"1970-01-01T00:00:01Z\" -> \"2026-03-01T00:00:00Z\"",
    );
}

/// A layout with an index over an amd64 and an arm64 image of `trees`.
fn index_image(dir: &Path, amd64: &FileTree, arm64: &FileTree) -> String {
    let layout = Layout::create(dir).unwrap();
    let mut arms = Vec::new();
    for (tree, platform) in [(amd64, "linux/amd64"), (arm64, "linux/arm64")] {
        let layer = layer_of(write_layer_to_layout(tree, &opts(), &layout).unwrap());
        arms.push(write_manifest(&layout, vec![layer], CREATED, platform));
    }
    let index = build_index(&arms, BTreeMap::new()).unwrap();
    let descriptor = layout.write_json(&index, media_type::OCI_INDEX).unwrap();
    layout.set_ref(None, descriptor).unwrap();
    dir.display().to_string()
}

#[test]
fn index_compared_platform_by_platform() {
    let project = Project::new();
    let a = index_image(&project.path("a"), &base_tree(), &base_tree());
    let mut arm = base_tree();
    arm.insert("usr/lib/libx.so", file(b"\x7fELF-arm", 0o644))
        .unwrap();
    let b = index_image(&project.path("b"), &base_tree(), &arm);
    let (human, report) = compare(&project, &a, &b);
    assert_differs(
        &human,
        &report,
        &[cause("file", "content", "/usr/lib/libx.so")],
        "[linux/arm64 layer 0] /usr/lib/libx.so: content differs",
    );
    let scope = report["causes"][0]["scope"].as_str().unwrap();
    assert_eq!(scope, "linux/arm64 layer 0");
    let amd = report["causes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["scope"].as_str().unwrap_or("").contains("amd64"));
    assert!(!amd, "amd64 is identical: {report:#}");
}

#[test]
fn archives_and_the_store_are_sides_too() {
    let project = Project::new();
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    let layout = Layout::open(project.path("a")).unwrap();
    let top = layout.resolve(Some("v1")).unwrap();
    let oci_archive = project.path("a.tar");
    stagex::image::output::write_oci_archive(&layout, &top, &oci_archive, Some("v1")).unwrap();
    let docker_archive = project.path("a-docker.tar");
    stagex::image::output::write_docker_archive(&layout, &top, None, &docker_archive, None)
        .unwrap();
    let from_archive = format!("oci-archive:{}:v1", oci_archive.display());
    let (human, _) = compare(&project, &a, &from_archive);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    // The store now holds it: NAME@sha256 names it there.
    let stored = format!("anything@{}", top.digest);
    let (human, _) = compare(&project, &stored, &a);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    // docker-archive keeps layers uncompressed: the same tar, other bytes.
    let docker = format!("docker-archive:{}", docker_archive.display());
    let (human, report) = compare(&project, &a, &docker);
    assert_differs(&human, &report, &[cause("compression", "compression", "")], "media type application/vnd.oci.image.layer.v1.tar+gzip -> application/vnd.oci.image.layer.v1.tar");
}

#[test]
fn a_registry_namespace_is_a_side() {
    let Some(registry) = peers::registry::Registry::start() else {
        return;
    };
    let project = Project::new();
    let (a, b) = base_and_bye(&project);
    let pushed = format!("docker://{}/stagex/core-demo:1", registry.host());
    push(&project.path("a"), &pushed);
    let by_namespace = format!("{}/stagex/core-demo:1", registry.host());
    let (human, _) = compare(&project, &by_namespace, &a);
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    let (human, report) = compare(&project, &pushed, &b);
    assert_differs(
        &human,
        &report,
        &[cause("file", "content", "/etc/motd")],
        "/etc/motd",
    );
}

#[test]
fn files_extracts_both_versions_side_by_side() {
    let project = Project::new();
    let (a, b) = base_and_bye(&project);
    let files = project.path("files");
    let output = project.diff(false, &["--files", files.to_str().unwrap(), &a, &b]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(
        std::fs::read(files.join("A/layer_0/etc/motd")).unwrap(),
        b"hello\n"
    );
    assert_eq!(
        std::fs::read(files.join("B/layer_0/etc/motd")).unwrap(),
        b"bye\n"
    );
    // Nothing but the changed file was extracted.
    assert!(!files.join("A/layer_0/bin").exists());
    // A second run must not write into what is there.
    let again = project.diff(false, &["--files", files.to_str().unwrap(), &a, &b]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains("give a new or empty directory"),
        "{}",
        text(&again)
    );
}

#[test]
fn diffoscope_missing_is_a_clear_error() {
    let project = Project::new();
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    let mut command = tools::stagex_in(project.dir.path(), &["diff", "--diffoscope", &a, &a]);
    let empty = project.path("no-tools");
    std::fs::create_dir_all(&empty).unwrap();
    command
        .env("STAGEX_STORE", project.path("store"))
        .env("PATH", &empty);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains("diffoscope is not installed (Debian package `diffoscope`)"),
        "{message}"
    );
}

#[test]
fn diffoscope_runs_on_the_changed_file() {
    if tools::require(&["diffoscope"]).is_none() {
        return;
    }
    let project = Project::new();
    let (a, b) = base_and_bye(&project);
    let output = project.diff(false, &["--diffoscope", &a, &b]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    // diffoscope's own report of the two versions of /etc/motd.
    assert!(out.contains("layer_0/etc/motd"), "{out}");
    assert!(out.contains("-hello") && out.contains("+bye"), "{out}");
    // With --json, stdout is the JSON report and diffoscope's is on stderr.
    let output = project.diff(true, &["--diffoscope", &a, &b]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(json(&output)["identical"], Value::Bool(false));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("-hello") && err.contains("+bye"), "{err}");
}

/// A directory holding a fake `diffoscope` that prints REPORT on stdout
/// and WARNING on stderr, then exits 1 (the files differ), as a real one
/// does with a missing tool; a real one's warnings depend on the tools
/// installed (the fault-injection mock the house rules allow).
fn fake_diffoscope(project: &Project) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = project.path("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("diffoscope");
    std::fs::write(
        &script,
        "#!/bin/sh\necho REPORT\necho WARNING >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// PATH with `first` before the test's own.
fn path_with(first: &Path) -> OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(first.to_path_buf()).chain(std::env::split_paths(&rest)))
        .unwrap()
}

#[test]
fn diffoscope_report_and_warnings_stay_on_their_own_streams() {
    let project = Project::new();
    let (a, b) = base_and_bye(&project);
    let path = path_with(&fake_diffoscope(&project));
    let tmp = project.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let env = [("PATH", path.as_os_str()), ("TMPDIR", tmp.as_os_str())];
    // `stagex diff --diffoscope A B > report.txt`: the report, no warning.
    let output = project.diff_env(false, &env, &["--diffoscope", &a, &b]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        out.contains("REPORT\n") && !out.contains("WARNING"),
        "{out}"
    );
    assert!(
        err.contains("WARNING\n") && !err.contains("REPORT"),
        "{err}"
    );
    // With --json: stdout is JSON only, diffoscope's report on stderr.
    let output = project.diff_env(true, &env, &["--diffoscope", &a, &b]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(json(&output)["identical"], Value::Bool(false));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("REPORT\n") && err.contains("WARNING\n"),
        "{err}"
    );
    // Nothing left in the temp directory (no log, no extracted files).
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_input_exits_two_with_one_clear_error() {
    let project = Project::new();
    let a = tree_image(&project.path("a"), &base_tree(), &opts(), CREATED);
    // A side that cannot be read.
    let missing = format!("oci:{}", project.path("nowhere").display());
    let output = project.diff(false, &[&a, &missing]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("B (oci:"), "{}", text(&output));
    assert!(
        text(&output).contains("is not an OCI image layout"),
        "{}",
        text(&output)
    );
    // Not an image reference at all.
    let output = project.diff(false, &[&a, "not/a/thing"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("B: \"not/a/thing\" is not an image reference"),
        "{}",
        text(&output)
    );
    // A layer whose bytes do not match its digest.
    let b = tree_image(&project.path("b"), &bye_tree(), &opts(), CREATED);
    let layout = Layout::open(project.path("b")).unwrap();
    let (_, manifest, _) = layout
        .image_for_platform(&layout.resolve(Some("v1")).unwrap(), None)
        .unwrap();
    let blob = layout.blob_path(&manifest.layers[0].digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let output = project.diff(false, &[&a, &b]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains(&manifest.layers[0].digest.to_string()),
        "{message}"
    );
    assert_eq!(message.matches("error").count(), 1, "one error: {message}");
}

/// An `out/`-shaped image of `tree` for the host platform at `dir`;
/// returns its manifest digest.
fn out_image(dir: &Path, tree: &FileTree) -> Digest {
    let layout = Layout::create(dir).unwrap();
    let layer = layer_of(write_layer_to_layout(tree, &opts(), &layout).unwrap());
    let host = stagex::oci::Platform::host();
    let platform = format!("{}/{}", host.os, host.architecture);
    let manifest = write_manifest(&layout, vec![layer], CREATED, &platform);
    let digest = manifest.digest.clone();
    let index = build_index(&[manifest], BTreeMap::new()).unwrap();
    let descriptor = layout.write_json(&index, media_type::OCI_INDEX).unwrap();
    layout.set_ref(None, descriptor).unwrap();
    digest
}

#[test]
fn digests_check_points_at_the_diff_and_runs_it_against_the_release() {
    let project = Project::new();
    let release = out_image(&project.path("release/core-demo"), &base_tree());
    let mut changed = base_tree();
    changed
        .insert("bin/tool", file(b"#!/bin/sh\necho other\n", 0o755))
        .unwrap();
    let built = out_image(&project.path("out/core-demo"), &changed);
    std::fs::create_dir_all(project.path("digests")).unwrap();
    std::fs::write(
        project.path("digests/core.txt"),
        format!("{} core-demo\n", release.hex()),
    )
    .unwrap();
    let out = project.path("out");
    let digests = project.path("digests");
    let base = [
        "digests",
        "--check",
        "--out",
        out.to_str().unwrap(),
        "--digests-dir",
        digests.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| {
        let mut command = tools::stagex_in(project.dir.path(), &base);
        command
            .args(extra)
            .env("STAGEX_STORE", project.path("store"));
        command.output().unwrap()
    };
    let plain = run(&[]);
    assert_eq!(plain.status.code(), Some(1), "{}", text(&plain));
    let hint = format!(
        "why: stagex diff NS|DIR/core-demo@{release} {}@{built}",
        out.join("core-demo").display()
    );
    assert!(text(&plain).contains(&hint), "{}", text(&plain));
    let against = project.path("release");
    let explained = run(&["--against", against.to_str().unwrap()]);
    assert_eq!(explained.status.code(), Some(1), "{}", text(&explained));
    let out_text = text(&explained);
    assert!(
        out_text.contains(&format!(
            "why: stagex diff {}/core-demo@{release}",
            against.display()
        )),
        "{out_text}"
    );
    assert!(
        out_text.contains("/bin/tool: content differs"),
        "{out_text}"
    );
    assert!(
        !out_text.contains("index"),
        "manifest against manifest: {out_text}"
    );
}

#[test]
fn the_store_layer_index_supplies_content_digests() {
    let project = Project::new();
    let (a, b) = base_and_bye(&project);
    // The store already indexed both layers (as a pallet compose does).
    let store = stagex::store::Store::open(project.path("store")).unwrap();
    for dir in ["a", "b"] {
        let layout = Layout::open(project.path(dir)).unwrap();
        let top = layout.resolve(Some("v1")).unwrap();
        let (_, manifest, _) = layout.image_for_platform(&top, None).unwrap();
        store
            .layout()
            .copy_blob_from(&layout, &manifest.layers[0])
            .unwrap();
        store.ensure_layer_index(&manifest.layers[0]).unwrap();
    }
    let (human, report) = compare(&project, &a, &b);
    assert_differs(
        &human,
        &report,
        &[cause("file", "content", "/etc/motd")],
        "/etc/motd: content differs (6 bytes",
    );
    assert_eq!(
        report["causes"][0]["b"]["sha256"],
        Digest::of_bytes(b"bye\n").to_string()
    );
}

/// Pushes `oci:DIR:v1` (`side`, of the layout at `dir`) to `pushed`.
fn push(dir: &Path, pushed: &str) {
    let layout = Layout::open(dir).unwrap();
    let top = layout.resolve(Some("v1")).unwrap();
    let destination = stagex::image::output::Destination::parse(pushed).unwrap();
    stagex::image::output::write(
        &destination,
        &layout,
        &top,
        None,
        &stagex::progress::NoProgress,
    )
    .unwrap();
}

/// The one layer of the image tagged v1 in the layout at `dir`.
fn only_layer(dir: &Path) -> Digest {
    let layout = Layout::open(dir).unwrap();
    let top = layout.resolve(Some("v1")).unwrap();
    let bytes = layout.read_blob(&top.digest).unwrap();
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap()
}

/// Pushes the project's layouts `a` and `b` to `registry` as
/// `stagex/core-demo:1` and `:2`; their `docker://` references.
fn push_both(registry: &peers::registry::Registry, project: &Project) -> (String, String) {
    let (pushed_a, pushed_b) = (
        format!("docker://{}/stagex/core-demo:1", registry.host()),
        format!("docker://{}/stagex/core-demo:2", registry.host()),
    );
    push(&project.path("a"), &pushed_a);
    push(&project.path("b"), &pushed_b);
    (pushed_a, pushed_b)
}

/// A cold diff of registry sides scans each layer while it streams into
/// the store (the scan is cached by then, even when the comparison needs
/// none), and its report is the one a diff of the same images from local
/// layouts (scanned from the store) gives, and the one a diff of the
/// stored blobs without the cached scans gives.
#[test]
fn a_cold_registry_diff_scans_while_pulling_and_reports_the_same() {
    let Some(registry) = peers::registry::Registry::start() else {
        return;
    };
    let project = Project::new();
    let (a, b) = base_and_bye(&project);
    let (pushed_a, pushed_b) = push_both(&registry, &project);
    let causes_of = |report: &Value| (report["causes"].clone(), report["cause_count"].clone());
    let scans = project.path("store/meta/diff-scan-v1");
    // The same image on both sides: the comparison scans nothing, so a
    // scan in the store was made while the layer was pulled.
    let same = project.diff(false, &[&pushed_a, &pushed_a]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    let layer_a = only_layer(&project.path("a"));
    assert!(
        scans.join(layer_a.hex()).is_file(),
        "no scan of {layer_a} made at intake"
    );
    std::fs::remove_dir_all(project.path("store")).unwrap();
    let local = json(&project.diff(true, &[&a, &b]));
    std::fs::remove_dir_all(project.path("store")).unwrap();

    let (human, cold) = compare(&project, &pushed_a, &pushed_b);
    assert_differs(
        &human,
        &cold,
        &[cause("file", "content", "/etc/motd")],
        "/etc/motd",
    );
    assert_eq!(causes_of(&cold), causes_of(&local));

    std::fs::remove_dir_all(&scans).unwrap();
    let rescanned = json(&project.diff(true, &[&pushed_a, &pushed_b]));
    assert_eq!(causes_of(&rescanned), causes_of(&cold));
}

/// A registry blob whose bytes are another (valid) layer: the cold diff
/// fails naming the layer, and the store keeps neither its blob nor a
/// scan of it (the scan of unverified bytes is dropped) nor a temp file.
#[test]
fn a_corrupt_registry_layer_leaves_neither_blob_nor_scan() {
    let Some(registry) = peers::registry::Registry::start() else {
        return;
    };
    let project = Project::new();
    base_and_bye(&project);
    let (pushed_a, pushed_b) = push_both(&registry, &project);
    let victim = only_layer(&project.path("b"));
    let other = registry.blob_file(only_layer(&project.path("a")).hex());
    std::fs::copy(other, registry.blob_file(victim.hex())).unwrap();

    let failed = project.diff(false, &[&pushed_a, &pushed_b]);
    let stderr = text(&failed);
    assert_eq!(failed.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&victim.to_string()), "{stderr}");
    crate::pallet_support::assert_store_holds_nothing_of(&project.path("store"), &victim);
}
