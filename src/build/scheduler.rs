//! Owns: running a build plan like `make -j N`: which packages to build
//! (up-to-date ones are skipped), starting a package as soon as its
//! dependencies are built, at most N at once, longest remaining path first
//! (`build::critical_path` picks; durations recorded by earlier builds in
//! `out/<id>.duration`, else estimated from the size of the fetched
//! sources), one subpackage family at a time, each build's log
//! in `out/<id>.log` (a file beside the layout, so neither the OCI layout
//! nor the digests change), stopping new work after the first failure
//! unless `keep_going`, proving a built digest against the committed one
//! at once when asked (`DigestCheck`: a mismatch stops its dependants, not
//! the rest), and the final report (built, up to date, failed with log,
//! mismatched, skipped because of which, not started). Progress is
//! reported as events (one task per running build plus one overall task
//! counting packages); it never draws.
//!
//! Subpackage families (one Containerfile, `--target package-<sub>`) are
//! built one member after the other, never two at once, in ONE builder
//! storage per family and platform for the run (`BuildOptions::
//! family_cache`, a temp directory in `out/`, removed when the family is
//! done): buildah/podman run with `--layers` there, so the shared `build`
//! stage is built once and the other members take it from the cache.
//!
//! Must not know how a package is built (that is `package_build`) nor read
//! `out/` layouts itself (`OutDir`, `build::inputs`).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::critical_path::{self, Dag, Priority, Status};
use super::inputs;
use super::inputs::write_record;
use super::package_build::{build_one, inputs_of, BuildOptions, BuildReport};
use super::plan::{self, PlanEntry};
use crate::image::OutDir;
use crate::oci::layout::write_atomic;
use crate::oci::{Digest, Platform};
use crate::package::PackageTree;
use crate::progress::{Progress, Task};

/// How to run the plan.
#[derive(Clone, Debug, Default)]
pub struct ScheduleOptions {
    /// Builds at once (at least 1).
    pub jobs: usize,
    /// Keep starting independent packages after a failure.
    pub keep_going: bool,
    /// Build only the named packages: their dependencies are in `out/`
    /// already (`--deps-from` pulled them), never built here.
    pub only_named: bool,
    /// Compare built digests with the committed ones as each build ends.
    pub check: Option<DigestCheck>,
}

/// Which built packages are proved against the release's committed
/// digests as soon as they are built (StageX: "prove hashes of bootstrap
/// layer builds match before proceeding").
#[derive(Clone, Debug)]
pub struct DigestCheck {
    /// `<stage>-<name>` -> the committed per-platform manifest digest.
    pub committed: BTreeMap<String, Digest>,
    /// Every package the release lists (`--check-digests`), not only the
    /// `bootstrap-*` ones.
    pub all: bool,
    /// The platform whose manifest `digests/` lists (as `stagex digests`).
    pub platform: Platform,
}

impl DigestCheck {
    /// The committed digest `id` is checked against, if it is checked.
    pub fn expected(&self, id: &str) -> Option<&Digest> {
        if self.all || id.starts_with("bootstrap-") {
            self.committed.get(id)
        } else {
            None
        }
    }
}

/// A built digest that is not the committed one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub expected: Digest,
    pub actual: Digest,
}

/// One package built now, and how it compared with its committed digest.
#[derive(Debug)]
pub struct Built {
    pub report: BuildReport,
    pub mismatch: Option<Mismatch>,
}

/// What happened to one package of the plan.
#[derive(Debug)]
pub enum Outcome {
    /// Built now. `started`/`finished` are positions on one counter shared
    /// by every start and finish of the run (a dependency's `finished` is
    /// always below its dependant's `started`).
    Built {
        report: Box<BuildReport>,
        started: usize,
        finished: usize,
    },
    /// `out/` already holds it (same inputs, or a dependency that was not
    /// asked for and is present).
    UpToDate,
    /// The build failed; the error is in the log too.
    Failed {
        error: String,
        started: usize,
        finished: usize,
    },
    /// Built, but its digest is not the committed one: what depends on it
    /// is not built (its inputs record is not written, so the next run
    /// builds it again).
    Mismatched {
        report: Box<BuildReport>,
        mismatch: Mismatch,
        started: usize,
        finished: usize,
    },
    /// Not built because these failed or mismatched packages are among its
    /// dependencies.
    Skipped { because: Vec<String> },
    /// Not started: the run stopped after a failure (no `--keep-going`).
    NotStarted,
}

/// One package of the plan and its outcome.
#[derive(Debug)]
pub struct Scheduled {
    pub id: String,
    /// Where its build log is (written only when it was built or failed).
    pub log: PathBuf,
    pub outcome: Outcome,
}

/// Every package of the plan, in plan order.
#[derive(Debug, Default)]
pub struct ScheduleReport {
    pub packages: Vec<Scheduled>,
}

impl ScheduleReport {
    /// True when nothing failed, was skipped or left out.
    pub fn success(&self) -> bool {
        self.packages
            .iter()
            .all(|p| matches!(p.outcome, Outcome::Built { .. } | Outcome::UpToDate))
    }
}

/// The build log of `id`: `out/<id>.log`.
pub fn log_path(out_root: &Path, id: &str) -> PathBuf {
    out_root.join(format!("{id}.log"))
}

/// How long the last successful build of `id` took: `out/<id>.duration`
/// (seconds, as text).
pub fn duration_path(out_root: &Path, id: &str) -> PathBuf {
    out_root.join(format!("{id}.duration"))
}

/// The recorded duration of `id` in seconds (none, or unreadable: `None`).
pub fn recorded_duration(out_root: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(duration_path(out_root, id)).ok()?;
    text.trim().parse().ok()
}

fn write_duration(out_root: &Path, id: &str, took: Duration) -> Result<()> {
    let text = format!("{:.3}\n", took.as_secs_f64());
    write_atomic(&duration_path(out_root, id), text.as_bytes())
}

/// Builds `names` (every package when empty) and what they need that is
/// not up to date, `schedule.jobs` at a time.
pub fn run(
    tree: &PackageTree,
    names: &[String],
    options: &BuildOptions,
    schedule: &ScheduleOptions,
    progress: &dyn Progress,
) -> Result<ScheduleReport> {
    let RunPlan {
        entries: plan,
        skip,
    } = plan_run(tree, names, options, schedule.only_named)?;
    let cache = family_cache(tree, &plan, &skip, &options.out_root)?;
    let options = &BuildOptions {
        family_cache: cache.as_ref().map(|c| c.path().to_path_buf()),
        ..options.clone()
    };
    let durations: Vec<Option<f64>> = plan
        .iter()
        .map(|e| recorded_duration(&options.out_root, &e.name))
        .collect();
    let estimates = Estimates {
        recorded: &durations,
        source_bytes: &source_bytes(tree, &plan, &options.fetch_root),
    };
    let outcomes = execute(
        &Graph::new(&plan, &skip, &estimates, schedule.jobs.max(1)),
        schedule,
        progress,
        |id| build_and_record(tree, id, options, schedule.check.as_ref()),
        |id, text| write_log(&options.out_root, id, text),
        |family| release_family(options, family),
    );
    Ok(ScheduleReport {
        packages: plan
            .iter()
            .zip(outcomes)
            .map(|(e, outcome)| Scheduled {
                id: e.name.clone(),
                log: log_path(&options.out_root, &e.name),
                outcome,
            })
            .collect(),
    })
}

/// The total size of each entry's fetched sources, for the first entry
/// of a family only (the one that builds the shared stage; its other
/// members take it from the cache and share its sources); `None` where a
/// source is not fetched, or there are none.
fn source_bytes(tree: &PackageTree, plan: &[PlanEntry], fetch_root: &Path) -> Vec<Option<u64>> {
    let mut families = BTreeSet::new();
    plan.iter()
        .map(|entry| {
            if !families.insert(entry.origin.as_str()) {
                return None;
            }
            let package = tree.get(&entry.name).ok()?;
            let dir = crate::package::fetch::fetch_dir(fetch_root, package);
            let sizes = package.resolved_sources().ok()?.into_iter().map(|s| {
                std::fs::metadata(dir.join(&s.file))
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
            });
            sizes.sum::<Option<u64>>().filter(|&total| total > 0)
        })
        .collect()
}

/// The plan `run` follows and what it leaves out; `build --dry-run` shows
/// exactly this, so a dry run and a run cannot disagree.
#[derive(Debug)]
pub struct RunPlan {
    /// In build order, `up_to_date` filled in.
    pub entries: Vec<PlanEntry>,
    /// Per entry: `run` does not build it (up to date, or a dependency
    /// nobody asked for that is already in `out/`; see `to_skip`).
    pub skip: Vec<bool>,
}

/// The plan `run` follows for `names` (every package when empty);
/// `only_named` as in `ScheduleOptions`.
pub fn plan_run(
    tree: &PackageTree,
    names: &[String],
    options: &BuildOptions,
    only_named: bool,
) -> Result<RunPlan> {
    let entries = plan_for(tree, names, options, only_named)?;
    let requested: BTreeSet<String> = names
        .iter()
        .map(|n| tree.get(n).map(|p| p.id.clone()))
        .collect::<Result<_>>()?;
    let skip = to_skip(&entries, &requested, options);
    Ok(RunPlan { entries, skip })
}

/// The plan with `up_to_date` filled in.
fn plan_for(
    tree: &PackageTree,
    names: &[String],
    options: &BuildOptions,
    only_named: bool,
) -> Result<Vec<PlanEntry>> {
    let mut plan = plan::plan(tree, names, &options.plan_options())?;
    if only_named && !names.is_empty() {
        let named: BTreeSet<&str> = names
            .iter()
            .map(|n| tree.get(n).map(|p| p.id.as_str()))
            .collect::<Result<_>>()?;
        plan.retain(|e| named.contains(e.name.as_str()));
    }
    inputs::mark_up_to_date(&mut plan, tree, &options.out_root)?;
    Ok(plan)
}

/// Which entries are not built: up-to-date ones, and dependencies nobody
/// asked for that are already in `out/` (preseeded, pulled), unless
/// `rebuild_deps`.
fn to_skip(plan: &[PlanEntry], requested: &BTreeSet<String>, options: &BuildOptions) -> Vec<bool> {
    let out = OutDir::open(&options.out_root);
    plan.iter()
        .map(|e| {
            let explicit = requested.is_empty() || requested.contains(&e.name);
            if explicit {
                e.up_to_date
            } else {
                !options.rebuild_deps && (e.up_to_date || out.is_built(&e.name))
            }
        })
        .collect()
}

/// A directory for the run's family storages (removed when the run ends),
/// when a subpackage is to be built.
fn family_cache(
    tree: &PackageTree,
    plan: &[PlanEntry],
    skip: &[bool],
    out_root: &Path,
) -> Result<Option<tempfile::TempDir>> {
    let any = plan
        .iter()
        .zip(skip)
        .any(|(e, &skip)| !skip && tree.get(&e.name).is_ok_and(|p| p.target.is_some()));
    if !any {
        return Ok(None);
    }
    std::fs::create_dir_all(out_root)?;
    let dir = tempfile::Builder::new()
        .prefix(".stagex-families.")
        .tempdir_in(out_root)
        .with_context(|| format!("creating a build cache in {}", out_root.display()))?;
    Ok(Some(dir))
}

/// Frees a family's storages once its last member is done (best effort:
/// the run's cache directory goes at the end anyway).
fn release_family(options: &BuildOptions, family: &str) {
    if let Some(cache) = &options.family_cache {
        let _ = std::fs::remove_dir_all(cache.join(family));
    }
}

/// Builds `id`, records how long it took, proves its digest when `check`
/// asks, and writes its inputs record unless the digest mismatched (so a
/// mismatched image is never "up to date" for its dependants).
fn build_and_record(
    tree: &PackageTree,
    id: &str,
    options: &BuildOptions,
    check: Option<&DigestCheck>,
) -> Result<Built> {
    let package = tree.get(id)?;
    // The inputs are taken BEFORE the build: a file changed while it runs
    // must make the output stale, not be recorded as what it was built from.
    let inputs = inputs_of(package, options)?;
    let started = Instant::now();
    let report = build_one(tree, package, options)?;
    write_duration(&options.out_root, id, started.elapsed())?;
    let mismatch = match check.and_then(|c| c.expected(id).map(|e| (c, e))) {
        Some((check, expected)) => {
            let actual = OutDir::open(&options.out_root)
                .manifest_digest(id, &check.platform)
                .with_context(|| format!("reading the digest of {id} just built"))?
                .digest;
            (actual != *expected).then(|| Mismatch {
                expected: expected.clone(),
                actual,
            })
        }
        None => None,
    };
    if mismatch.is_none() {
        write_record(&options.out_root, id, &inputs)?;
    }
    Ok(Built { report, mismatch })
}

/// The command that shows why `id` differs from its committed image.
pub fn diff_hint(id: &str, expected: &Digest) -> String {
    format!("stagex diff {id} {id}@{expected}")
}

/// The log text of a finished build.
fn log_text(id: &str, result: &Result<Built>) -> String {
    match result {
        Ok(Built { report, mismatch }) => {
            let mut text = format!(
                "stagex build {id}: built with {} into {}\n",
                report.backend,
                report.output.dir.display()
            );
            for m in &report.output.manifests {
                let platform = m.platform.as_ref().map(|p| p.to_string());
                text.push_str(&format!(
                    "manifest {} {}\n",
                    platform.unwrap_or_default(),
                    m.digest
                ));
            }
            if let Some(m) = mismatch {
                text.push_str(&format!(
                    "MISMATCH: built {}, the committed digest is {}; its dependants are not built; run `{}`\n",
                    m.actual,
                    m.expected,
                    diff_hint(id, &m.expected)
                ));
            }
            text
        }
        Err(e) => format!("stagex build {id}: FAILED\n{e:#}\n"),
    }
}

fn write_log(out_root: &Path, id: &str, text: &str) -> Result<()> {
    std::fs::create_dir_all(out_root)?;
    write_atomic(&log_path(out_root, id), text.as_bytes())
}

/// What durations are estimated from, per plan entry.
struct Estimates<'a> {
    recorded: &'a [Option<f64>],
    source_bytes: &'a [Option<u64>],
}

/// The plan as the scheduler sees it: dependencies as positions, the
/// family of each entry, what needs no build, and the start order.
struct Graph {
    ids: Vec<String>,
    dag: Dag,
    skip: Vec<bool>,
    priority: Priority,
}

impl Graph {
    /// Durations recorded per entry, estimated where missing (see
    /// `critical_path::with_estimates`); the start order is the best for
    /// `jobs` builds by simulation with them.
    fn new(plan: &[PlanEntry], skip: &[bool], known: &Estimates, jobs: usize) -> Graph {
        let dag = Dag::from_plan(plan);
        let mut estimates = critical_path::with_estimates(known.recorded, known.source_bytes);
        // What needs no build takes no time.
        for (estimate, _) in estimates.iter_mut().zip(skip).filter(|(_, &s)| s) {
            *estimate = 0.0;
        }
        let priority = Priority::best(&dag, &estimates, jobs);
        Graph {
            ids: plan.iter().map(|e| e.name.clone()).collect(),
            dag,
            skip: skip.to_vec(),
            priority,
        }
    }
}

/// Where each entry stands while the plan runs.
enum State {
    Waiting,
    Running,
    Done(Outcome),
}

impl State {
    fn status(&self) -> Status {
        match self {
            State::Waiting => Status::Waiting,
            State::Running => Status::Running,
            State::Done(Outcome::Built { .. } | Outcome::UpToDate) => Status::Succeeded,
            State::Done(_) => Status::Stopped,
        }
    }
}

/// A finished build, sent back by its worker.
struct Finished {
    at: usize,
    result: Result<Built>,
    started: usize,
    finished: usize,
}

/// What a worker needs besides the entry it builds.
struct Worker<'a, B, L> {
    progress: &'a dyn Progress,
    build: &'a B,
    log: &'a L,
    counter: &'a AtomicUsize,
}

impl<B, L> Worker<'_, B, L>
where
    B: Fn(&str) -> Result<Built> + Sync,
    L: Fn(&str, &str) -> Result<()> + Sync,
{
    /// Builds `id` and logs it; never panics out (a panicking build is a
    /// failed build, never a scheduler waiting forever for its report).
    fn run(&self, at: usize, id: &str) -> Finished {
        let task = Task::counting(
            self.progress,
            &format!("build:{id}"),
            &format!("build {id}"),
            None,
        );
        let started = self.counter.fetch_add(1, Ordering::SeqCst);
        let mut result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.build)(id)))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("building {id} panicked")));
        if let Err(e) = (self.log)(id, &log_text(id, &result)) {
            result = result.and(Err(e.context(format!("writing the build log of {id}"))));
        }
        let finished = self.counter.fetch_add(1, Ordering::SeqCst);
        drop(task);
        Finished {
            at,
            result,
            started,
            finished,
        }
    }
}

/// The outcome of a finished build.
fn outcome_of(done: Finished) -> Outcome {
    let (started, finished) = (done.started, done.finished);
    match done.result {
        Ok(Built {
            report,
            mismatch: None,
        }) => Outcome::Built {
            report: Box::new(report),
            started,
            finished,
        },
        Ok(Built {
            report,
            mismatch: Some(mismatch),
        }) => Outcome::Mismatched {
            report: Box::new(report),
            mismatch,
            started,
            finished,
        },
        Err(e) => Outcome::Failed {
            error: format!("{e:#}"),
            started,
            finished,
        },
    }
}

/// Runs the graph: pure scheduling around `build` (one package) and `log`
/// (its log), so the order rules are testable without building anything.
fn execute<B, L, F>(
    graph: &Graph,
    schedule: &ScheduleOptions,
    progress: &dyn Progress,
    build: B,
    log: L,
    family_done: F,
) -> Vec<Outcome>
where
    B: Fn(&str) -> Result<Built> + Sync,
    L: Fn(&str, &str) -> Result<()> + Sync,
    F: Fn(&str),
{
    let mut states: Vec<State> = graph
        .skip
        .iter()
        .map(|&s| match s {
            true => State::Done(Outcome::UpToDate),
            false => State::Waiting,
        })
        .collect();
    let to_build = states
        .iter()
        .filter(|s| matches!(s, State::Waiting))
        .count();
    let overall = Task::counting(
        progress,
        "build:overall",
        &format!("build {to_build} packages"),
        Some(to_build as u64),
    );
    let counter = AtomicUsize::new(0);
    let worker = Worker {
        progress,
        build: &build,
        log: &log,
        counter: &counter,
    };
    let jobs = schedule.jobs.max(1);
    let (tx, rx) = mpsc::channel::<Finished>();
    std::thread::scope(|scope| {
        let mut running = 0;
        let mut stopped = false;
        loop {
            skip_dependants(graph, &mut states);
            while !stopped && running < jobs {
                let status: Vec<Status> = states.iter().map(State::status).collect();
                let Some(at) = critical_path::next_ready(&graph.dag, &graph.priority, &status)
                else {
                    break;
                };
                states[at] = State::Running;
                running += 1;
                let (tx, worker, id) = (tx.clone(), &worker, graph.ids[at].as_str());
                // The receiver outlives every worker (same scope).
                scope.spawn(move || {
                    let _ = tx.send(worker.run(at, id));
                });
            }
            if running == 0 {
                break;
            }
            let done = rx.recv().expect("a running worker always reports");
            running -= 1;
            overall.advance(1);
            let at = done.at;
            let family = graph.dag.families[at].as_str();
            let family_left = (0..states.len()).any(|i| {
                i != at
                    && graph.dag.families[i] == family
                    && matches!(states[i], State::Waiting | State::Running)
            });
            if !family_left {
                family_done(family);
            }
            let outcome = outcome_of(done);
            stopped |= !schedule.keep_going && matches!(outcome, Outcome::Failed { .. });
            states[at] = State::Done(outcome);
        }
    });
    states
        .into_iter()
        .map(|s| match s {
            State::Done(outcome) => outcome,
            State::Waiting | State::Running => Outcome::NotStarted,
        })
        .collect()
}

/// Marks every waiting entry with a failed, mismatched or skipped
/// dependency as skipped, naming the failures and mismatches behind it
/// (plan order: dependencies come first, so one pass reaches every
/// dependant).
fn skip_dependants(graph: &Graph, states: &mut [State]) {
    for at in 0..states.len() {
        if !matches!(states[at], State::Waiting) {
            continue;
        }
        let mut because = BTreeSet::new();
        for &dep in &graph.dag.deps[at] {
            match &states[dep] {
                State::Done(Outcome::Failed { .. } | Outcome::Mismatched { .. }) => {
                    because.insert(graph.ids[dep].clone());
                }
                State::Done(Outcome::Skipped { because: b }) => because.extend(b.iter().cloned()),
                _ => {}
            }
        }
        if !because.is_empty() {
            states[at] = State::Done(Outcome::Skipped {
                because: because.into_iter().collect(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::time::{Duration, Instant};

    fn graph(families: &[&str], deps: Vec<Vec<usize>>) -> Graph {
        let dag = Dag {
            deps,
            families: families.iter().map(|f| f.to_string()).collect(),
        };
        Graph {
            ids: (0..families.len()).map(|i| format!("core-{i}")).collect(),
            skip: vec![false; families.len()],
            priority: Priority::plan_order(families.len()),
            dag,
        }
    }

    /// A package `core-NAME` in `packages` with one source file `FILE`
    /// (and `subpackages` when given).
    fn write_package(packages: &Path, name: &str, file: &str, subpackages: &[&str]) {
        let dir = packages.join("core").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let subs: Vec<String> = subpackages.iter().map(|s| format!("{s:?}")).collect();
        let subs = if subs.is_empty() {
            String::new()
        } else {
            format!("subpackages = [{}]\n", subs.join(", "))
        };
        std::fs::write(
            dir.join("package.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"1\"\n{subs}\n[sources.s]\nhash = \"{}\"\nfile = \"{file}\"\nmirrors = [\"file:///nowhere/{file}\"]\n",
                "0".repeat(64)
            ),
        )
        .unwrap();
        std::fs::write(dir.join("Containerfile"), "FROM scratch\n").unwrap();
    }

    #[test]
    fn source_sizes_are_counted_once_per_family_and_only_when_fetched() {
        let root = tempfile::tempdir().unwrap();
        let packages = root.path().join("packages");
        let fetch = root.path().join("fetch");
        write_package(&packages, "big", "big.tar", &[]);
        write_package(&packages, "unfetched", "gone.tar", &[]);
        write_package(&packages, "fam", "fam.tar", &["fam", "fam-doc"]);
        for (name, file, size) in [("big", "big.tar", 3000), ("fam", "fam.tar", 500)] {
            let dir = fetch.join("core").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), vec![0u8; size]).unwrap();
        }
        let tree = PackageTree::load(&packages).unwrap();
        let options = plan::PlanOptions {
            platforms: vec!["linux/amd64".parse().unwrap()],
            epoch: 1,
            root: root.path().to_path_buf(),
        };
        let entries = plan::plan(&tree, &[], &options).unwrap();
        let sizes: BTreeMap<&str, Option<u64>> = entries
            .iter()
            .map(|e| e.name.as_str())
            .zip(source_bytes(&tree, &entries, &fetch))
            .collect();
        assert_eq!(sizes["core-big"], Some(3000));
        assert_eq!(sizes["core-unfetched"], None);
        // The family's first member builds the stage from its sources;
        // the other takes it from the cache.
        let family: Vec<Option<u64>> = entries
            .iter()
            .filter(|e| e.origin == "core-fam")
            .map(|e| sizes[e.name.as_str()])
            .collect();
        assert_eq!(family, [Some(500), None], "{sizes:?}");
    }

    /// Runs `g` with builds that fail after giving another build a bounded
    /// chance to start alongside; returns the outcomes and the most builds
    /// seen running at once.
    fn run_counting(g: &Graph, jobs: usize, keep_going: bool) -> (Vec<Outcome>, usize) {
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let schedule = ScheduleOptions {
            jobs,
            keep_going,
            ..ScheduleOptions::default()
        };
        let outcomes = execute(
            g,
            &schedule,
            &NoProgress,
            |id| {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_millis(200);
                while in_flight.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                most.fetch_max(in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                anyhow::bail!("{id} fails")
            },
            |_, _| Ok(()),
            |_| {},
        );
        (outcomes, most.load(Ordering::SeqCst))
    }

    #[test]
    fn one_family_member_at_a_time_other_families_in_parallel() {
        // Three subpackages of one origin, nothing between them.
        let g = graph(&["core-llvm"; 3], vec![vec![], vec![], vec![]]);
        let (outcomes, most) = run_counting(&g, 3, true);
        assert_eq!(most, 1, "two members of one family ran at once");
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Failed { .. })));
        // Two families: -j 2 does run them together.
        let g = graph(&["core-llvm", "core-gcc"], vec![vec![], vec![]]);
        let (_, most) = run_counting(&g, 2, true);
        assert_eq!(most, 2);
    }

    #[test]
    fn a_panicking_build_is_a_failure_not_a_hang() {
        let g = graph(&["a", "b"], vec![vec![], vec![0]]);
        let schedule = ScheduleOptions {
            jobs: 2,
            ..ScheduleOptions::default()
        };
        let outcomes = execute(
            &g,
            &schedule,
            &NoProgress,
            |_| panic!("builder bug"),
            |_, _| Ok(()),
            |_| {},
        );
        match &outcomes[0] {
            Outcome::Failed { error, .. } => assert!(error.contains("panicked"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(outcomes[1], Outcome::Skipped { .. }));
    }

    #[test]
    fn ready_packages_start_longest_remaining_path_first() {
        let mut g = graph(&["a", "b", "c", "d"], vec![vec![], vec![], vec![], vec![2]]);
        // 3 takes long and waits for 2: 2 starts first, then 1, then 0.
        let durations = [Some(1.0), Some(5.0), Some(1.0), Some(100.0)];
        g.priority =
            Priority::critical_path(&g.dag, &critical_path::with_estimates(&durations, &[]));
        let schedule = ScheduleOptions {
            jobs: 1,
            keep_going: true,
            ..ScheduleOptions::default()
        };
        let outcomes = execute(
            &g,
            &schedule,
            &NoProgress,
            |id| anyhow::bail!("{id} fails"),
            |_, _| Ok(()),
            |_| {},
        );
        let started: Vec<usize> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Failed { started, .. } => *started,
                other => panic!("{other:?}"),
            })
            .take(3)
            .collect();
        // Positions count starts and finishes: 2 first (0), 1 next (2), 0 last (4).
        assert_eq!(started, [4, 2, 0]);
        assert!(matches!(outcomes[3], Outcome::Skipped { .. }));
    }

    #[test]
    fn dependants_of_a_failure_are_skipped_naming_it() {
        // 0 fails; 1 needs 0; 2 needs 1; 3 is independent.
        let g = graph(
            &["a", "b", "c", "d"],
            vec![vec![], vec![0], vec![1], vec![]],
        );
        let (outcomes, _) = run_counting(&g, 1, false);
        assert!(matches!(outcomes[0], Outcome::Failed { .. }));
        for at in [1, 2] {
            match &outcomes[at] {
                Outcome::Skipped { because } => assert_eq!(because, &["core-0"]),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(outcomes[3], Outcome::NotStarted), "{outcomes:?}");
    }
}
