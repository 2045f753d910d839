//! Owns: the proof that `stagex pallet` works in any directory from a pallet
//! catalog: a TEST catalog (StageX's own rust and clang Containerfiles of
//! the built-in catalog, with digests of images made here) served by a
//! real docker-registry resolves exactly both pallets' packages at their
//! release digests and gives the same image when the tags move, `--latest`
//! follows the tags and says so; an unreachable source is named with the
//! first pinned reference; misspelled names get a suggestion before any
//! network call; `--list` and `--dry-run --json` print exactly what the
//! catalog says; and the catalog is taken from --release, --catalog, the
//! current checkout, stagex.toml, the built-in one, in that order.
use crate::pallet_support;
use crate::peers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pallet_support::*;
use peers::registry::Registry;
use peers::tools;
use serde_json::{json, Value};
use stagex::layer::tree::FileTree;
use stagex::oci::config::RunConfig;
use stagex::oci::layout::Layout;

/// The test catalog's release (its directory name).
const RELEASE: &str = "2099.01.0";

/// Writes a catalog directory `<parent>/2099.01.0/`: the built-in
/// catalog's rust and clang Containerfiles, and `digests/core.txt` listing
/// `digests` (name -> hex). Returns the directory.
fn write_catalog(parent: &Path, digests: &BTreeMap<String, String>) -> PathBuf {
    let dir = parent.join(RELEASE);
    let builtin = repo_root().join("catalog/2026.03.0/packages/pallet");
    for pallet in ["clang", "rust"] {
        let to = dir.join("packages/pallet").join(pallet);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(
            builtin.join(pallet).join("Containerfile"),
            to.join("Containerfile"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(dir.join("digests")).unwrap();
    let lines: String = digests
        .iter()
        .map(|(name, hex)| format!("{hex} {name}\n"))
        .collect();
    std::fs::write(dir.join("digests/core.txt"), lines).unwrap();
    dir
}

/// Made-up digests for the rust+clang packages (for runs that never
/// read an image): package i gets `000…0i`.
fn fake_digests() -> BTreeMap<String, String> {
    RUST_CLANG_PACKAGES
        .iter()
        .enumerate()
        .map(|(i, name)| (name.to_string(), format!("{:064x}", i + 1)))
        .collect()
}

/// `stagex ARGS` run in `cwd` (no --root: the directory the user is in),
/// with `store`.
fn stagex_in(cwd: &Path, store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stagex"))
        .current_dir(cwd)
        .args(args)
        .env("STAGEX_STORE", store)
        .env_remove("STAGEX_ROOT")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn ok_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", tools::text(output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn stderr_of_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        tools::text(output)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// name -> manifest digest of every input the report pinned.
fn pinned(report: &Value) -> BTreeMap<String, String> {
    report["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_string();
            let manifest = p["manifest"].as_str().unwrap().to_string();
            assert_eq!(
                p["reference"],
                format!("{name}@{manifest}"),
                "pinned by digest"
            );
            (name, manifest)
        })
        .collect()
}

#[test]
fn rust_plus_clang_from_a_catalog_is_pinned_and_the_same_when_tags_move() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (out, empty) = (tmp.path().join("out"), tmp.path().join("project"));
    std::fs::create_dir_all(&empty).unwrap();
    let world = rust_clang_world(&out);
    seed_registry(&registry.host(), &out, &world);
    let release: BTreeMap<String, String> = world
        .iter()
        .map(|(n, p)| (n.clone(), p.manifest.digest.hex().to_string()))
        .collect();
    let catalog = write_catalog(&tmp.path().join("catalogs"), &release);
    let source = format!("{}/stagex", registry.host());
    let catalog_arg = catalog.display().to_string();
    let compose = |store: &str, extra: &[&str]| {
        let mut args = vec!["--json", "pallet", "rust+clang", "--catalog", &catalog_arg];
        args.extend(["--source", &source]);
        args.extend(extra);
        stagex_in(&empty, &tmp.path().join(store), &args)
    };

    let first = ok_json(&compose("store1", &[]));
    let want: BTreeMap<String, String> = world
        .iter()
        .map(|(n, p)| (n.clone(), p.manifest.digest.to_string()))
        .collect();
    assert_eq!(
        pinned(&first),
        want,
        "exactly both pallets' packages, pinned"
    );
    assert_eq!(
        first["catalog"],
        json!({"release": RELEASE, "origin": {"kind": "flag", "path": catalog_arg}, "pinning": "release"})
    );

    // core-rust's `latest` moves to another image: the pinned pallet stays.
    let moved = write_package(
        &out.join("moved"),
        "core-rust",
        &[filesystem_layer(), package_layer("core-rust"), newer_rust()],
        RunConfig::default(),
    );
    stagex::registry::push::push_image(
        &format!("{}/stagex/core-rust:latest", registry.host()),
        &Layout::open(out.join("moved/core-rust")).unwrap(),
        &moved.manifest,
        &BTreeMap::new(),
        &stagex::progress::NoProgress,
    )
    .unwrap();
    let second = ok_json(&compose("store2", &[]));
    assert_eq!(
        second["digest"], first["digest"],
        "same command, same image"
    );
    assert_eq!(pinned(&second), want);

    // --latest follows the tags, and says the result is not pinned.
    let latest = compose("store2", &["--latest"]);
    let report = ok_json(&latest);
    assert_eq!(report["catalog"]["pinning"], "latest");
    let resolved: BTreeMap<String, String> = report["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["reference"], p["name"], "resolved by tag");
            let manifest = p["manifest"].as_str().unwrap().to_string();
            (p["name"].as_str().unwrap().to_string(), manifest)
        })
        .collect();
    assert_eq!(resolved["core-rust"], moved.manifest.digest.to_string());
    assert_eq!(resolved["core-llvm"], want["core-llvm"]);
    assert_ne!(report["digest"], first["digest"]);
    let stderr = String::from_utf8_lossy(&latest.stderr);
    assert!(stderr.contains("NOT pinned"), "{stderr}");

    // No keys in the project: composed unverified, and told how to bring keys.
    let args = [
        "pallet",
        "rust+clang",
        "--catalog",
        &catalog_arg,
        "--source",
        &source,
    ];
    let human = stagex_in(&empty, &tmp.path().join("store2"), &args);
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{}", tools::text(&human));
    assert!(stdout.contains("skipped (no trusted keys in"), "{stdout}");
    assert!(
        stdout.contains("bring the StageX maintainers' keys"),
        "{stdout}"
    );
    assert!(!stdout.contains("pinned   NO"), "{stdout}");
}

/// One more file, so that the moved core-rust is another image.
fn newer_rust() -> FileTree {
    let mut tree = FileTree::new();
    dir(&mut tree, "usr");
    dir(&mut tree, "usr/share");
    file(&mut tree, "usr/share/rust-next", "a newer rust\n");
    tree
}

#[test]
fn an_unreachable_source_is_named_with_the_first_pinned_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let digests = fake_digests();
    let catalog = write_catalog(tmp.path(), &digests);
    let host = format!("127.0.0.1:{}", tools::free_port());
    let source = format!("{host}/stagex");
    let store = tmp.path().join("store");
    let run = |extra: &[&str]| {
        let mut args = vec!["pallet", "rust+clang", "--source", &source, "--no-verify"];
        args.extend(extra);
        stagex_in(tmp.path(), &store, &args)
    };
    let catalog_arg = catalog.display().to_string();
    let err = stderr_of_failure(&run(&["--catalog", &catalog_arg]));
    let first = format!("{source}/core-profile@sha256:{}", digests["core-profile"]);
    assert!(err.contains(&first), "{first} not in: {err}");
    assert!(
        err.contains(&format!("{host} refused the connection")),
        "{err}"
    );
    assert!(!err.contains("resolving rust"), "{err}");
    assert!(!err.contains("items not found"), "{err}");

    // The built-in catalog: pinned to its release's digests when it has
    // them; without them it says so before reading the network.
    let builtin = stagex::pallet::catalog::builtin(None).unwrap();
    let err = stderr_of_failure(&run(&[]));
    match builtin.digests.get("core-profile") {
        Some(digest) => {
            let first = format!("{source}/core-profile@{digest}");
            assert!(err.contains(&first), "{first} not in: {err}");
            assert!(
                err.contains(&format!("{host} refused the connection")),
                "{err}"
            );
        }
        None => {
            assert!(err.contains("has no release digests"), "{err}");
            assert!(err.contains("--latest"), "{err}");
            assert!(!err.contains(&host), "no network call: {err}");
        }
    }
}

#[test]
fn misspelled_names_get_a_suggestion_before_any_network_call() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = write_catalog(tmp.path(), &fake_digests());
    let source = format!("127.0.0.1:{}/stagex", tools::free_port());
    let store = tmp.path().join("store");
    let catalog_arg = catalog.display().to_string();
    let fails = |expression: &str, extra: &[&str]| {
        let mut args = vec!["pallet", expression, "--source", &source];
        args.extend(extra);
        stderr_of_failure(&stagex_in(tmp.path(), &store, &args))
    };
    let err = fails("rsut+clang", &["--catalog", &catalog_arg]);
    assert_eq!(
        err.trim_end(),
        format!("stagex: error: no pallet or package named `rsut` in catalog {RELEASE} (--catalog {catalog_arg}); did you mean pallet `rust` or package `core-rust`? (an image that is not in the catalog is named with its tag or digest: `rsut:TAG`)")
    );
    let err = fails("rust+pallet-clnag", &["--catalog", &catalog_arg]);
    assert!(
        err.contains("named `pallet-clnag`") && err.contains("did you mean pallet `clang`"),
        "{err}"
    );
    let err = fails("rust+core-curl+core-jqq", &["--catalog", &catalog_arg]);
    assert!(err.contains("named `core-jqq`"), "{err}");
    // The built-in catalog knows every package of its release.
    let err = fails("rust+core-gawkk", &[]);
    assert!(err.contains("did you mean package `core-gawk`?"), "{err}");
    // A 100,000-character item is cut in the message.
    let long = "r".repeat(100_000);
    let err = fails(&long, &[]);
    assert!(err.len() < 500, "{} bytes", err.len());
    assert!(err.contains("(100000 characters)"), "{err}");
    assert!(!err.contains("127.0.0.1"), "no network call: {err}");
    // In a checkout too, where any image name is taken as a package.
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(checkout.join("pallets")).unwrap();
    let output = stagex_in(&checkout, &store, &["pallet", &long, "--source", &source]);
    let err = stderr_of_failure(&output);
    assert!(err.len() < 300, "{err}");
    assert!(
        err.contains("an image name is at most 255 characters"),
        "{err}"
    );
}

/// The plan order of rust+clang: pallet-clang's packages, then rust's.
const CLANG_ONLY: usize = 13;

#[test]
fn list_and_dry_run_print_exactly_what_the_catalog_says() {
    let tmp = tempfile::tempdir().unwrap();
    let digests = fake_digests();
    write_catalog(&tmp.path().join("cat"), &digests);
    let store = tmp.path().join("store");
    let catalog_arg = format!("cat/{RELEASE}");
    let list = ok_json(&stagex_in(
        tmp.path(),
        &store,
        &["--json", "pallet", "--list", "--catalog", &catalog_arg],
    ));
    let packages = RUST_CLANG_PACKAGES;
    assert_eq!(
        list,
        json!({
            "release": RELEASE,
            "origin": {"kind": "flag", "path": catalog_arg},
            "pinning": "release",
            "digests": 22,
            "pallets": [
                {"name": "clang", "image": "pallet-clang", "base": "core-profile",
                 "entrypoint": ["/usr/bin/clang"], "packages": packages[..CLANG_ONLY]},
                {"name": "rust", "image": "pallet-rust", "base": "pallet-clang",
                 "entrypoint": ["/usr/bin/cargo"], "packages": packages},
            ]
        })
    );
    let human = stagex_in(
        tmp.path(),
        &store,
        &["pallet", "--list", "--catalog", &catalog_arg],
    );
    assert!(human.status.success(), "{}", tools::text(&human));
    let text = String::from_utf8(human.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        format!("catalog  {RELEASE} (--catalog {catalog_arg}): 2 pallets, 22 package digests")
    );
    assert!(lines[2].starts_with("pallet   rust "), "{text}");
    assert!(lines[2].ends_with(&packages.join(" ")), "{text}");

    let dry_run = |store: &Path| {
        ok_json(&stagex_in(
            tmp.path(),
            store,
            &[
                "--json",
                "pallet",
                "rust+clang",
                "--dry-run",
                "--catalog",
                &catalog_arg,
                "--source",
                "127.0.0.1:5000/stagex",
            ],
        ))
    };
    let report = dry_run(&store);
    let planned: Vec<Value> = packages
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let from = match i < CLANG_ONLY {
                true => json!(["rust", "clang"]),
                false => json!(["rust"]),
            };
            json!({"name": name,
                   "reference": format!("127.0.0.1:5000/stagex/{name}@sha256:{}", digests[*name]),
                   "pin": "release", "from": from})
        })
        .collect();
    assert_eq!(
        report,
        json!({
            "expression": "rust+clang",
            "release": RELEASE,
            "origin": {"kind": "flag", "path": catalog_arg},
            "pinning": "release",
            "pinned": true,
            "packages": planned,
            "copies": [],
            "links": ["rust"],
            "entrypoint": ["/usr/bin/cargo"],
            "conflicts": [{
                "kind": "config-not-used",
                "items": ["rust", "clang"],
                "detail": "clang's entrypoint is not used: the image's config is rust's (put clang first to use it)"
            }]
        })
    );
    assert_eq!(dry_run(&tmp.path().join("other-store")), report, "stable");
    assert!(!store.exists(), "a dry run opens no store");
}

#[test]
fn the_catalog_comes_from_release_flag_checkout_settings_then_builtin() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = write_catalog(&tmp.path().join("cat"), &fake_digests());
    let store = tmp.path().join("store");
    let origin = |cwd: &Path, extra: &[&str]| {
        let mut args = vec!["--json", "pallet", "--list"];
        args.extend(extra);
        let list = ok_json(&stagex_in(cwd, &store, &args));
        (
            list["origin"]["kind"].clone(),
            list["release"].clone(),
            list["pinning"].clone(),
        )
    };
    let project = tmp.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let builtin = stagex::pallet::catalog::builtin(None).unwrap();
    let newest = builtin.release.clone().unwrap();
    assert_eq!(
        origin(&project, &[]),
        (json!("built-in"), json!(newest), json!("release"))
    );

    // A relative path in stagex.toml is taken from the project's root.
    let relative = format!("catalog = \"../cat/{RELEASE}\"\n");
    std::fs::write(project.join("stagex.toml"), relative).unwrap();
    assert_eq!(
        origin(&project, &[]),
        (json!("settings"), json!(RELEASE), json!("release"))
    );
    assert_eq!(
        origin(&project, &["--release", &newest]),
        (json!("built-in"), json!(newest), json!("release"))
    );
    let flag = catalog.display().to_string();
    assert_eq!(
        origin(&project, &["--catalog", &flag, "--latest"]),
        (json!("flag"), json!(RELEASE), json!("latest"))
    );
    // Inside a StageX checkout, its own definitions, by tag as before.
    assert_eq!(
        origin(&catalog, &[]),
        (json!("checkout"), Value::Null, json!("checkout-tags"))
    );

    let err = stderr_of_failure(&stagex_in(
        &project,
        &store,
        &["pallet", "--list", "--release", "1999.01.0"],
    ));
    assert!(
        err.contains(&format!(
            "no built-in release 1999.01.0: this stagex has {newest}"
        )),
        "{err}"
    );
}
