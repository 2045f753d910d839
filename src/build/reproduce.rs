//! Owns: `stagex reproduce`'s runs and verdicts: for each builder, the
//! named packages are built twice (control, then varied: see
//! `reproduce_vary`) by a child `stagex build` into two fresh output
//! roots under one work directory, never the user's out/; dependencies
//! are hard-linked (copied across file systems) from the user's out/ into
//! each root, and a dependency missing there is built in each root too.
//! Then per package: the one digest (reproducible) or every digest and the
//! `stagex diff` command comparing the first two that differ, and whether
//! it is the committed digest. Signing and printing are the CLI's.
//! Each child build runs through `crate::child`: its stderr goes into
//! `build.log` in its root as it comes (the log survives a kill), its JSON
//! report into `build-report.json`, both read back from there; a build
//! still running after `$STAGEX_BUILD_TIMEOUT` is stopped and fails.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::package_build::{BuildOptions, BuilderChoice};
use super::reproduce_vary::{self, Applied, Host, VarySet};
use crate::child::{ChildError, Deadline, Output, Supervised};
use crate::oci::{Digest, Platform};
use crate::package::PackageTree;

#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    #[error("planning the build of {names}: {source:#}")]
    Plan {
        names: String,
        source: anyhow::Error,
    },
    #[error("{path} already exists: reproduce builds into fresh roots; pass a new or empty --work directory")]
    NotFresh { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Child(#[from] ChildError),
}

/// The env var holding each child build's time limit.
pub const BUILD_TIMEOUT_ENV: &str = "STAGEX_BUILD_TIMEOUT";
/// Its default: StageX builds (compilers, toolchains) can take hours.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReproduceError + '_ {
    move |source| ReproduceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to reproduce and how.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    /// This program (the builds run as `EXE build ...`).
    pub exe: PathBuf,
    /// The repository root, the packages tree and the fetched sources.
    pub root: PathBuf,
    pub packages_dir: PathBuf,
    pub fetch_dir: PathBuf,
    /// The user's out/: dependencies are taken from it, nothing written.
    pub user_out: PathBuf,
    /// `--platform` passed to each build; the first (else the host) is
    /// the platform whose manifest digest is compared.
    pub platforms: Vec<Platform>,
    pub builders: Vec<BuilderChoice>,
    pub vary: VarySet,
    /// The work directory holding every build root.
    pub work: PathBuf,
    /// The committed digests (`<stage>-<name>` -> manifest digest), when
    /// the digests directory exists.
    pub committed: Option<BTreeMap<String, Digest>>,
}

/// One build of one package.
#[derive(Clone, Debug, Serialize)]
pub struct BuildResult {
    pub builder: String,
    /// `control` or `varied`.
    pub run: &'static str,
    /// The package's layout (`ROOT/out/ID`).
    pub out: PathBuf,
    pub digest: Option<String>,
    pub error: Option<String>,
    /// The build's stderr, as it printed it.
    pub log: PathBuf,
}

/// One package's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct PackageResult {
    pub package: String,
    /// `reproducible`, `not reproducible` or `failed`.
    pub verdict: &'static str,
    /// The one digest, when reproducible.
    pub digest: Option<String>,
    pub builds: Vec<BuildResult>,
    pub committed: Option<String>,
    /// Reproduced AND equal to the committed digest.
    pub matches_committed: bool,
    /// The command comparing the first two builds that differ.
    pub diff_command: Option<String>,
    /// Its first causes (innermost first), when the two layouts could be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<crate::diff::Cause>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct ReproduceReport {
    pub packages: Vec<PackageResult>,
    /// Per builder, how each variation applied.
    pub variations: BTreeMap<String, Vec<Applied>>,
    pub work: PathBuf,
    /// Where each build's stderr went, per builder and run.
    pub logs: Vec<PathBuf>,
}

impl ReproduceReport {
    /// Removes the build roots (one directory per builder) and the work
    /// directory itself if nothing else is left in it.
    pub fn remove_roots(&self, options: &ReproduceOptions) -> Result<(), ReproduceError> {
        for &builder in &options.builders {
            let dir = options.work.join(builder_name(builder));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        let _ = std::fs::remove_dir(&options.work);
        Ok(())
    }

    pub fn all_reproduced(&self) -> bool {
        self.packages.iter().all(|p| p.verdict == "reproducible")
    }

    /// The control build's out/ of the first builder (what is signed).
    pub fn control_out(&self, options: &ReproduceOptions) -> PathBuf {
        let first = builder_name(options.builders[0]);
        reproduce_vary::build_root(&options.work, first, false, &options.vary).join("out")
    }
}

/// One child build of the run: which, and where it builds and logs.
#[derive(Clone, Debug)]
pub struct PlannedBuild {
    pub builder: BuilderChoice,
    pub varied: bool,
    /// Its output root (`out/`, the log and the report are inside).
    pub root: PathBuf,
}

impl PlannedBuild {
    /// `control` or `varied`.
    pub fn run(&self) -> &'static str {
        if self.varied {
            "varied"
        } else {
            "control"
        }
    }

    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// The build's stderr, appended as it comes.
    pub fn log(&self) -> PathBuf {
        self.root.join("build.log")
    }

    /// The build's stdout: its `--json` report.
    pub fn report(&self) -> PathBuf {
        self.root.join("build-report.json")
    }
}

/// Every child build of the run, in order: per builder, control then
/// varied.
pub fn planned_builds(options: &ReproduceOptions) -> Vec<PlannedBuild> {
    options
        .builders
        .iter()
        .flat_map(|&builder| {
            [false, true].map(|varied| PlannedBuild {
                builder,
                varied,
                root: reproduce_vary::build_root(
                    &options.work,
                    builder_name(builder),
                    varied,
                    &options.vary,
                ),
            })
        })
        .collect()
}

pub fn builder_name(b: BuilderChoice) -> &'static str {
    match b {
        BuilderChoice::Auto => "auto",
        BuilderChoice::Native => "native",
        BuilderChoice::Buildah => "buildah",
        BuilderChoice::Podman => "podman",
        BuilderChoice::Docker => "docker",
    }
}

/// The dependencies (transitive, in build order) of `names` that are
/// not named themselves.
pub fn dependencies(
    tree: &PackageTree,
    names: &[String],
    options: &BuildOptions,
) -> Result<Vec<String>, ReproduceError> {
    let plan = super::scheduler::plan_run(tree, names, options, false).map_err(|source| {
        ReproduceError::Plan {
            names: names.join(" "),
            source,
        }
    })?;
    Ok(plan
        .entries
        .into_iter()
        .map(|e| e.name)
        .filter(|n| !names.contains(n))
        .collect())
}

/// Builds `names` twice per builder and compares.
pub fn reproduce(
    names: &[String],
    deps: &[String],
    options: &ReproduceOptions,
) -> Result<ReproduceReport, ReproduceError> {
    let host = Host::probe();
    let platform = options
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(Platform::host);
    let deadline = Deadline::from_env(BUILD_TIMEOUT_ENV, BUILD_TIMEOUT)?;
    let mut variations = BTreeMap::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut logs = Vec::new();
    for &builder in &options.builders {
        let dir = options.work.join(builder_name(builder));
        if dir.exists() {
            return Err(ReproduceError::NotFresh { path: dir });
        }
        variations.insert(
            builder_name(builder).to_string(),
            reproduce_vary::applicability(&options.vary, builder, &host),
        );
    }
    for build in planned_builds(options) {
        link_dependencies(&options.user_out, &build.out(), deps)?;
        let outcome = run_build(names, &build, options, &host, deadline)?;
        logs.push(build.log());
        runs.push(Run { build, outcome });
    }
    let packages = names
        .iter()
        .map(|id| verdict(id, &runs, &platform, options.committed.as_ref()))
        .collect();
    Ok(ReproduceReport {
        packages,
        variations,
        work: options.work.clone(),
        logs,
    })
}

/// What one child build said: per package its digest or its error.
#[derive(Debug, Default)]
struct BuildOutcome {
    digests: BTreeMap<String, Vec<(Option<String>, String)>>,
    errors: BTreeMap<String, String>,
    /// The whole build failed without a report (its stderr tail, or its
    /// time limit), naming its log.
    failure: Option<String>,
}

/// One child build and what it said.
struct Run {
    build: PlannedBuild,
    outcome: BuildOutcome,
}

/// How many last lines of a build's log a failure without a report shows.
const LOG_TAIL_LINES: usize = 5;

/// Runs one child build under `deadline`; a build stopped at its deadline
/// is a failed build (its error names the log), not an error of the run.
fn run_build(
    names: &[String],
    build: &PlannedBuild,
    options: &ReproduceOptions,
    host: &Host,
    deadline: Deadline,
) -> Result<BuildOutcome, ReproduceError> {
    let mut command = build_command(names, build, options, host);
    let (log, report) = (build.log(), build.report());
    let program = format!(
        "stagex build ({} {})",
        builder_name(build.builder),
        build.run()
    );
    let supervised = Supervised {
        program: &program,
        output: Output::LogAndReport {
            log: &log,
            report: &report,
        },
        deadline,
    };
    match supervised.run(&mut command) {
        Ok(_) => Ok(read_build_report(&report, &log)),
        Err(stopped @ ChildError::TimedOut { .. }) => Ok(BuildOutcome {
            failure: Some(stopped.to_string()),
            ..BuildOutcome::default()
        }),
        Err(other) => Err(other.into()),
    }
}

/// The child `stagex build` of `build`, run in its root.
fn build_command(
    names: &[String],
    build: &PlannedBuild,
    options: &ReproduceOptions,
    host: &Host,
) -> std::process::Command {
    let out = build.out();
    let mut args: Vec<OsString> = vec![
        "--json".into(),
        "--root".into(),
        options.root.clone().into(),
    ];
    args.extend([
        "build".into(),
        "--builder".into(),
        builder_name(build.builder).into(),
    ]);
    for (flag, value) in [
        ("--out", &out),
        ("--packages", &options.packages_dir),
        ("--fetch-dir", &options.fetch_dir),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.push("--no-bootstrap-check".into());
    for p in &options.platforms {
        args.push("--platform".into());
        args.push(p.to_string().into());
    }
    args.extend(names.iter().map(OsString::from));
    let mut command =
        reproduce_vary::build_command(&options.exe, &args, build.varied, &options.vary, host);
    command.current_dir(&build.root);
    command
}

/// What the build said: its JSON report, else (it failed without one)
/// the last lines of its log and where the whole log is.
fn read_build_report(report: &Path, log: &Path) -> BuildOutcome {
    let parsed = std::fs::read(report)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let Some(report) = parsed else {
        let tail = crate::child::tail(log, LOG_TAIL_LINES);
        return BuildOutcome {
            failure: Some(format!("{tail}\n(the whole log: {})", log.display())),
            ..BuildOutcome::default()
        };
    };
    parse_build_report(&report)
}

fn parse_build_report(report: &serde_json::Value) -> BuildOutcome {
    let mut outcome = BuildOutcome::default();
    let list = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    for built in list("built").iter().chain(list("mismatched").iter()) {
        let id = built["package"].as_str().unwrap_or_default().to_string();
        let manifests = built["manifests"].as_array().cloned().unwrap_or_default();
        let digests = manifests
            .iter()
            .map(|m| {
                (
                    m["platform"].as_str().map(str::to_string),
                    m["digest"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        outcome.digests.insert(id, digests);
    }
    for failed in list("failed") {
        let id = failed["package"].as_str().unwrap_or_default().to_string();
        let error = failed["error"].as_str().unwrap_or_default();
        outcome
            .errors
            .insert(id, error.lines().next().unwrap_or_default().to_string());
    }
    for skipped in list("skipped") {
        let id = skipped["package"].as_str().unwrap_or_default().to_string();
        outcome
            .errors
            .insert(id, format!("skipped: needs {}", skipped["because"]));
    }
    outcome
}

/// The verdict on `id` over every run.
fn verdict(
    id: &str,
    runs: &[Run],
    platform: &Platform,
    committed: Option<&BTreeMap<String, Digest>>,
) -> PackageResult {
    let builds: Vec<BuildResult> = runs
        .iter()
        .map(|Run { build, outcome }| {
            let digest = outcome.digests.get(id).and_then(|all| pick(all, platform));
            let error = match &digest {
                Some(_) => None,
                None => Some(
                    outcome
                        .errors
                        .get(id)
                        .cloned()
                        .or_else(|| outcome.failure.clone())
                        .unwrap_or_else(|| "not built".to_string()),
                ),
            };
            BuildResult {
                builder: builder_name(build.builder).to_string(),
                run: build.run(),
                out: build.out().join(id),
                digest,
                error,
                log: build.log(),
            }
        })
        .collect();
    let distinct: BTreeSet<&str> = builds.iter().filter_map(|b| b.digest.as_deref()).collect();
    let failed = builds.iter().any(|b| b.digest.is_none());
    let (verdict, digest) = match (failed, distinct.len()) {
        (true, _) => ("failed", None),
        (false, 1) => ("reproducible", distinct.first().map(|d| d.to_string())),
        _ => ("not reproducible", None),
    };
    let committed = committed.and_then(|c| c.get(id)).map(|d| d.to_string());
    let matches_committed = digest.is_some() && digest == committed;
    PackageResult {
        package: id.to_string(),
        verdict,
        digest,
        diff_command: diff_command(&builds),
        causes: first_causes(&builds),
        builds,
        committed,
        matches_committed,
    }
}

/// The manifest digest for `platform`, else the only/first one.
fn pick(all: &[(Option<String>, String)], platform: &Platform) -> Option<String> {
    let wanted = platform.to_string();
    all.iter()
        .find(|(p, _)| p.as_deref() == Some(wanted.as_str()))
        .or_else(|| all.first())
        .map(|(_, d)| d.clone())
}

/// `stagex diff` between the first build and the first one that differs.
fn diff_command(builds: &[BuildResult]) -> Option<String> {
    let first = builds.iter().find(|b| b.digest.is_some())?;
    let other = builds
        .iter()
        .find(|b| b.digest.is_some() && b.digest != first.digest)?;
    Some(format!(
        "stagex diff oci:{} oci:{}",
        first.out.display(),
        other.out.display()
    ))
}

/// How many causes of a difference the report carries.
const FIRST_CAUSES: usize = 3;

/// The first causes `stagex diff` finds between the first build and the
/// first one that differs; none when either layout cannot be read (the
/// command is still printed).
fn first_causes(builds: &[BuildResult]) -> Vec<crate::diff::Cause> {
    let Some(first) = builds.iter().find(|b| b.digest.is_some()) else {
        return Vec::new();
    };
    let Some(other) = builds
        .iter()
        .find(|b| b.digest.is_some() && b.digest != first.digest)
    else {
        return Vec::new();
    };
    let compare = || -> Result<crate::diff::Report, Box<dyn std::error::Error>> {
        let store = crate::store::Store::open_default()?;
        let a = crate::diff::side::resolve(
            "A",
            &format!("oci:{}", first.out.display()),
            &first.out,
            &store,
        )?;
        let b = crate::diff::side::resolve(
            "B",
            &format!("oci:{}", other.out.display()),
            &other.out,
            &store,
        )?;
        Ok(crate::diff::diff(
            &store,
            &a,
            &b,
            crate::diff::DiffOptions::default(),
        )?)
    };
    compare()
        .map(|report| {
            report
                .causes
                .into_iter()
                .filter(|c| !c.consequence)
                .take(FIRST_CAUSES)
                .collect()
        })
        .unwrap_or_default()
}

/// Hard-links (copies across file systems) each dependency layout found
/// in `user_out` into `out`; missing ones are left for the build.
fn link_dependencies(user_out: &Path, out: &Path, deps: &[String]) -> Result<(), ReproduceError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    for dep in deps {
        let from = user_out.join(dep);
        if from.join("index.json").is_file() {
            link_tree(&from, &out.join(dep))?;
        }
    }
    Ok(())
}

fn link_tree(from: &Path, to: &Path) -> Result<(), ReproduceError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io(&src))?;
        if kind.is_dir() {
            link_tree(&src, &dest)?;
        } else if kind.is_file() && std::fs::hard_link(&src, &dest).is_err() {
            std::fs::copy(&src, &dest).map_err(io(&src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(builder: &str, digest: Option<&str>) -> BuildResult {
        BuildResult {
            builder: builder.into(),
            run: "control",
            out: PathBuf::from(format!("/w/{builder}/out/core-x")),
            digest: digest.map(str::to_string),
            error: None,
            log: PathBuf::from(format!("/w/{builder}/build.log")),
        }
    }

    #[test]
    fn the_diff_command_names_the_first_two_that_differ() {
        let builds = [
            result("a", Some("sha256:1")),
            result("b", Some("sha256:1")),
            result("c", Some("sha256:2")),
        ];
        assert_eq!(
            diff_command(&builds).unwrap(),
            "stagex diff oci:/w/a/out/core-x oci:/w/c/out/core-x"
        );
        assert!(diff_command(&builds[..2]).is_none());
    }

    #[test]
    fn a_report_without_json_is_a_failure_with_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (report, log) = (dir.path().join("report.json"), dir.path().join("build.log"));
        std::fs::write(&log, "x\nstagex: error: no docker\n").unwrap();
        let failure = read_build_report(&report, &log).failure.unwrap();
        assert!(failure.contains("no docker"), "{failure}");
        assert!(failure.contains(&log.display().to_string()), "{failure}");
        std::fs::write(
            &report,
            r#"{"built": [{"package": "core-x", "manifests": []}]}"#,
        )
        .unwrap();
        let outcome = read_build_report(&report, &log);
        assert!(outcome.failure.is_none() && outcome.digests.contains_key("core-x"));
    }
}
