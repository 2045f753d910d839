//! Owns: the proof that `stagex build --dry-run --json` plans StageX's real
//! tree (release 2026.03.0, `../shared/stagex-2026.03.0`) exactly as
//! StageX's own `src/targets.py` does. The Makefile targets.py prints is
//! parsed (the `out/<id>/index.json` rules: dependencies, `--tag`,
//! `--target`, `--platform=`, every `--build-arg`, `-f`) and compared, per
//! target, with the plan. `STAGEX_REAL_TREE` points at another checkout.
//! The copy carries keys this version does not know (as other StageX
//! releases do): they change nothing of the plan, each is one warning, and
//! `lint` / `build --strict` refuse them.
//! Missing tree or python3: skipped, a failure under CI.
use crate::peers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use peers::tools::{self, run_ok};
use serde_json::Value;

/// What targets.py says about one target.
#[derive(Debug, Default, PartialEq, Eq)]
struct Target {
    version: String,
    target: Option<String>,
    platforms: Vec<String>,
    deps: BTreeSet<String>,
    build_args: BTreeMap<String, String>,
    containerfile: String,
}

/// The real tree, or `None` (a counted skip) outside CI.
fn real_tree() -> Option<PathBuf> {
    tools::real_stagex_tree()
}

/// The default `PLATFORM` of StageX's Makefile, given to both sides.
const PLATFORM: &str = "linux/amd64";

/// Parses the rules targets.py prints, keyed by `<stage>-<name>`.
fn parse_makefile(text: &str) -> BTreeMap<String, Target> {
    let mut targets = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let header = lines[i];
        i += 1;
        let Some(id) = header
            .strip_prefix("out/")
            .and_then(|h| h.strip_suffix("/index.json: \\"))
        else {
            continue;
        };
        let mut t = Target::default();
        // Prerequisites up to the recipe: files, then out/<dep>/index.json.
        while i < lines.len() && !lines[i].trim_start().starts_with("rm -rf out/") {
            for word in lines[i].split_whitespace() {
                if let Some(dep) = word
                    .strip_prefix("out/")
                    .and_then(|w| w.strip_suffix("/index.json"))
                {
                    t.deps.insert(dep.to_string());
                }
            }
            i += 1;
        }
        // The recipe, up to the next rule.
        while i < lines.len() && !lines[i].starts_with(".PHONY:") {
            let line = lines[i].trim().trim_end_matches('\\').trim();
            if let Some(tag) = line.strip_prefix(&format!("--tag stagex/{id}:")) {
                t.version = tag.to_string();
            } else if let Some(arg) = line.strip_prefix("--build-arg ") {
                let arg = arg.trim_matches('"');
                let (k, v) = arg.split_once('=').expect("NAME=value");
                if !k.starts_with("BUILDKIT_") {
                    t.build_args.insert(k.to_string(), v.to_string());
                }
            } else if let Some(target) = line.strip_prefix("--target ") {
                t.target = Some(target.to_string());
            } else if let Some(p) = line.strip_prefix("--platform=") {
                let p = p.replace("$(PLATFORM)", PLATFORM);
                t.platforms = p.split(',').map(str::to_string).collect();
            } else if let Some(f) = line.strip_prefix("-f ") {
                t.containerfile = f.to_string();
            }
            i += 1;
        }
        targets.insert(id.to_string(), t);
    }
    targets
}

/// Runs targets.py on a copy of the tree made a git repository (it needs
/// `git ls-files`).
fn targets_py(copy: &std::path::Path) -> BTreeMap<String, Target> {
    run_ok(Command::new("git").arg("init").arg("-q").current_dir(copy));
    run_ok(Command::new("git").args(["add", "-A"]).current_dir(copy));
    let out = run_ok(
        Command::new("python3")
            .arg("src/targets.py")
            .current_dir(copy),
    );
    parse_makefile(&String::from_utf8(out.stdout).unwrap())
}

/// Keys this version does not know, as other StageX releases carry them
/// (`licenses` in place of `license`, a whole new table, a new source
/// field), added to a copy of the tree; returns the warning each must give
/// (file:line: what, did you mean).
fn add_unknown_fields(copy: &std::path::Path) -> Vec<String> {
    let edit = |package: &str, change: &dyn Fn(String) -> String| {
        let path = copy.join("packages").join(package).join("package.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = change(text.clone());
        assert_ne!(text, changed, "{package}: the edit applied");
        // The copy keeps the shared tree's modes, read-only in CI.
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        std::fs::set_permissions(&path, permissions).unwrap();
        std::fs::write(&path, changed).unwrap();
    };
    let line_of = |package: &str, needle: &str| {
        let path = copy.join("packages").join(package).join("package.toml");
        let text = std::fs::read_to_string(path).unwrap();
        1 + text.lines().position(|l| l.starts_with(needle)).unwrap()
    };
    edit("core/busybox", &|t| {
        t.replacen("license = ", "licenses = ", 1)
    });
    edit("core/llvm", &|t| {
        t.replacen("[sources.llvm]\n", "[sources.llvm]\nsha512 = \"00\"\n", 1)
            + "\n[maintainers]\nlead = \"someone\"\n"
    });
    vec![
        format!(
            "packages/core/busybox/package.toml:{}: unknown field `package.licenses` (did you mean `license`?)",
            line_of("core/busybox", "licenses = ")
        ),
        format!(
            "packages/core/llvm/package.toml:{}: unknown field `sources.llvm.sha512`",
            line_of("core/llvm", "sha512 = ")
        ),
        format!(
            "packages/core/llvm/package.toml:{}: unknown table `maintainers`",
            line_of("core/llvm", "[maintainers]")
        ),
    ]
}

/// The plan of `stagex build --dry-run --json` by image, and its stderr.
fn ours(root: &std::path::Path) -> (BTreeMap<String, Value>, String) {
    let out = run_ok(
        tools::stagex()
            .arg("--json")
            .arg("--root")
            .arg(root)
            .args(["build", "--dry-run", "--platform", PLATFORM])
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = doc["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    (plan, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `lint` lists exactly the unknown keys (one line each, exit 1) and
/// `build --strict` refuses them, naming each.
fn strict_modes_refuse(copy: &std::path::Path, warnings: &[String]) {
    let lint = tools::stagex_output(copy, &["lint"]);
    assert_eq!(lint.status.code(), Some(1), "{}", tools::text(&lint));
    let stdout = String::from_utf8_lossy(&lint.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), warnings.len(), "{stdout}");
    for (line, warning) in lines.iter().zip(warnings) {
        assert!(
            line.ends_with(warning.as_str()),
            "{line:?} is not {warning:?}"
        );
    }
    let strict = tools::stagex_output(
        copy,
        &["build", "--dry-run", "--strict", "--platform", PLATFORM],
    );
    assert!(!strict.status.success(), "{}", tools::text(&strict));
    let text = tools::text(&strict);
    for warning in warnings {
        assert!(text.contains(warning.as_str()), "{warning:?} not in {text}");
    }
}

/// The differences between one target of targets.py and our plan entry.
fn differences(id: &str, want: &Target, got: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |what: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!("{id}: {what}: targets.py {want}, stagex {got}"));
        }
    };
    check(
        "version",
        want.version.clone(),
        got["version"].to_string().replace('"', ""),
    );
    check(
        "target",
        format!("{:?}", want.target),
        format!("{:?}", got["target"].as_str().map(str::to_string)),
    );
    check(
        "platforms",
        format!("{:?}", want.platforms),
        format!("{:?}", strings(&got["platforms"])),
    );
    check(
        "deps",
        format!("{:?}", want.deps.iter().collect::<Vec<_>>()),
        format!("{:?}", strings(&got["deps"])),
    );
    check(
        "containerfile",
        want.containerfile.clone(),
        got["containerfile"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let mut args = want.build_args.clone();
    // Our documented choice where targets.py passes Python's `None`.
    if args.get("VERSION_MAJOR_MINOR").map(String::as_str) == Some("None") {
        args.insert("VERSION_MAJOR_MINOR".into(), args["VERSION"].clone());
    }
    let got_args: BTreeMap<String, String> = got["build_args"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    check("build_args", format!("{args:?}"), format!("{got_args:?}"));
    diffs
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dry_run_plans_the_real_tree_exactly_like_targets_py() {
    let Some(tree) = real_tree() else {
        return;
    };
    if tools::require(&["python3", "git"]).is_none() {
        return;
    }
    let copy = tempfile::tempdir().unwrap();
    tools::copy_dir(&tree, copy.path());
    // Keys this version does not know change nothing of the plan; each is
    // one warning.
    let warnings = add_unknown_fields(copy.path());
    let want = targets_py(copy.path());
    assert_eq!(want.len(), 513, "targets.py of 2026.03.0 has 513 targets");
    // The parse saw every field it compares.
    for (id, t) in &want {
        assert!(
            !t.version.is_empty() && !t.platforms.is_empty() && !t.containerfile.is_empty(),
            "{id}: {t:?}"
        );
        assert_eq!(t.build_args["SOURCE_DATE_EPOCH"], "1", "{id}");
    }
    let with_deps = want.values().filter(|t| !t.deps.is_empty()).count();
    let subpackages = want.values().filter(|t| t.target.is_some()).count();
    assert!(
        with_deps > 400,
        "only {with_deps} targets with dependencies parsed"
    );
    assert_eq!(subpackages, 78, "subpackage targets");
    let (got, stderr) = ours(copy.path());
    let warned: Vec<&str> = stderr.lines().filter(|l| l.contains("unknown")).collect();
    assert_eq!(warned.len(), warnings.len(), "{stderr}");
    for (line, warning) in warned.iter().zip(&warnings) {
        assert!(line.starts_with("stagex: warning: "), "{line}");
        assert!(
            line.contains(warning.as_str()),
            "{warning:?} not in {line:?}"
        );
    }
    strict_modes_refuse(copy.path(), &warnings);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same images"
    );
    let diffs: Vec<String> = want
        .iter()
        .flat_map(|(id, t)| differences(id, t, &got[id]))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // Spot checks of what the comparison covers.
    let clang = &got["core-clang"];
    assert_eq!(clang["origin"], "core-llvm");
    assert_eq!(clang["target"], "package-clang");
    assert_eq!(clang["up_to_date"], false);
    assert!(want["core-clang"].build_args.contains_key("VERSION_UNDER"));
}
