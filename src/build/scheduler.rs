//! Owns: running a build plan like `make -j N`: which packages to build
//! (up-to-date ones are skipped), starting a package as soon as its
//! dependencies are built, at most N at once, one subpackage family at a
//! time, each build's log in `out/<id>.log` (a file beside the layout, so
//! neither the OCI layout nor the digests change), stopping new work after
//! the first failure unless `keep_going`, and the final report (built, up
//! to date, failed with log, skipped because of which failure, not
//! started). Progress is reported as events (one task per running build
//! plus one overall task counting packages); it never draws.
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
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{Context as _, Result};

use super::inputs;
use super::inputs::write_record;
use super::package_build::{build_one, inputs_of, BuildOptions, BuildReport};
use super::plan::{self, PlanEntry};
use crate::image::OutDir;
use crate::oci::layout::write_atomic;
use crate::package::PackageTree;
use crate::progress::{Progress, Task};

/// How to run the plan.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleOptions {
    /// Builds at once (at least 1).
    pub jobs: usize,
    /// Keep starting independent packages after a failure.
    pub keep_going: bool,
    /// Build only the named packages: their dependencies are in `out/`
    /// already (`--deps-from` pulled them), never built here.
    pub only_named: bool,
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
    /// Not built because these failed packages are among its dependencies.
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
    let origins = plan
        .iter()
        .map(|e| Ok(tree.get(&e.name)?.origin_id().to_string()))
        .collect::<Result<Vec<_>>>()?;
    let cache = family_cache(tree, &plan, &skip, &options.out_root)?;
    let options = &BuildOptions {
        family_cache: cache.as_ref().map(|c| c.path().to_path_buf()),
        ..options.clone()
    };
    let outcomes = execute(
        &Graph::new(&plan, &origins, &skip),
        schedule,
        progress,
        |id| build_and_record(tree, id, options),
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

fn build_and_record(tree: &PackageTree, id: &str, options: &BuildOptions) -> Result<BuildReport> {
    let package = tree.get(id)?;
    // The inputs are taken BEFORE the build: a file changed while it runs
    // must make the output stale, not be recorded as what it was built from.
    let inputs = inputs_of(package, options)?;
    let report = build_one(tree, package, options)?;
    write_record(&options.out_root, id, &inputs)?;
    Ok(report)
}

/// The log text of a finished build.
fn log_text(id: &str, result: &Result<BuildReport>) -> String {
    match result {
        Ok(report) => {
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
            text
        }
        Err(e) => format!("stagex build {id}: FAILED\n{e:#}\n"),
    }
}

fn write_log(out_root: &Path, id: &str, text: &str) -> Result<()> {
    std::fs::create_dir_all(out_root)?;
    write_atomic(&log_path(out_root, id), text.as_bytes())
}

/// The plan as the scheduler sees it: dependencies as positions, the
/// family of each entry, and what needs no build.
struct Graph {
    ids: Vec<String>,
    deps: Vec<Vec<usize>>,
    families: Vec<String>,
    skip: Vec<bool>,
}

impl Graph {
    fn new(plan: &[PlanEntry], origins: &[String], skip: &[bool]) -> Graph {
        let at: HashMap<&str, usize> = plan
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        Graph {
            ids: plan.iter().map(|e| e.name.clone()).collect(),
            // A dependency outside the plan is not ours to wait for.
            deps: plan
                .iter()
                .map(|e| {
                    e.deps
                        .iter()
                        .filter_map(|d| at.get(d.as_str()).copied())
                        .collect()
                })
                .collect(),
            families: origins.to_vec(),
            skip: skip.to_vec(),
        }
    }
}

/// Where each entry stands while the plan runs.
enum State {
    Waiting,
    Running,
    Done(Outcome),
}

/// A finished build, sent back by its worker.
struct Finished {
    at: usize,
    result: Result<BuildReport>,
    started: usize,
    finished: usize,
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
    B: Fn(&str) -> Result<BuildReport> + Sync,
    L: Fn(&str, &str) -> Result<()> + Sync,
    F: Fn(&str),
{
    let mut states: Vec<State> = graph
        .skip
        .iter()
        .map(|&s| {
            if s {
                State::Done(Outcome::UpToDate)
            } else {
                State::Waiting
            }
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
    let jobs = schedule.jobs.max(1);
    let (tx, rx) = mpsc::channel::<Finished>();
    std::thread::scope(|scope| {
        let mut running = 0;
        let mut stopped = false;
        loop {
            skip_dependants(graph, &mut states);
            if !stopped {
                while running < jobs {
                    let Some(at) = next_ready(graph, &states) else {
                        break;
                    };
                    states[at] = State::Running;
                    running += 1;
                    let (tx, build, log, counter) = (tx.clone(), &build, &log, &counter);
                    let id = graph.ids[at].as_str();
                    scope.spawn(move || {
                        let task = Task::counting(
                            progress,
                            &format!("build:{id}"),
                            &format!("build {id}"),
                            None,
                        );
                        let started = counter.fetch_add(1, Ordering::SeqCst);
                        // A panicking build is a failed build, never a
                        // scheduler waiting forever for its report.
                        let mut result =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(id)))
                                .unwrap_or_else(|_| Err(anyhow::anyhow!("building {id} panicked")));
                        if let Err(e) = log(id, &log_text(id, &result)) {
                            result = result
                                .and(Err(e.context(format!("writing the build log of {id}"))));
                        }
                        let finished = counter.fetch_add(1, Ordering::SeqCst);
                        drop(task);
                        // The receiver outlives every worker (same scope).
                        let _ = tx.send(Finished {
                            at,
                            result,
                            started,
                            finished,
                        });
                    });
                }
            }
            if running == 0 {
                break;
            }
            let done = rx.recv().expect("a running worker always reports");
            running -= 1;
            overall.advance(1);
            let family = graph.families[done.at].as_str();
            let family_left = |states: &[State]| {
                (0..states.len()).any(|i| {
                    i != done.at
                        && graph.families[i] == family
                        && matches!(states[i], State::Waiting | State::Running)
                })
            };
            if !family_left(&states) {
                family_done(family);
            }
            states[done.at] = State::Done(match done.result {
                Ok(report) => Outcome::Built {
                    report: Box::new(report),
                    started: done.started,
                    finished: done.finished,
                },
                Err(e) => {
                    stopped |= !schedule.keep_going;
                    Outcome::Failed {
                        error: format!("{e:#}"),
                        started: done.started,
                        finished: done.finished,
                    }
                }
            });
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

/// Marks every waiting entry with a failed or skipped dependency as
/// skipped, naming the failures behind it (plan order: dependencies come
/// first, so one pass reaches every dependant).
fn skip_dependants(graph: &Graph, states: &mut [State]) {
    for at in 0..states.len() {
        if !matches!(states[at], State::Waiting) {
            continue;
        }
        let mut because = BTreeSet::new();
        for &dep in &graph.deps[at] {
            match &states[dep] {
                State::Done(Outcome::Failed { .. }) => {
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

/// The first waiting entry (plan order) whose dependencies are all built
/// or up to date and whose family has no build running.
fn next_ready(graph: &Graph, states: &[State]) -> Option<usize> {
    let busy: BTreeSet<&str> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, State::Running))
        .map(|(i, _)| graph.families[i].as_str())
        .collect();
    (0..states.len()).find(|&at| {
        matches!(states[at], State::Waiting)
            && !busy.contains(graph.families[at].as_str())
            && graph.deps[at].iter().all(|&d| {
                matches!(
                    states[d],
                    State::Done(Outcome::Built { .. } | Outcome::UpToDate)
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::time::{Duration, Instant};

    fn graph(families: &[&str], deps: Vec<Vec<usize>>) -> Graph {
        Graph {
            ids: (0..families.len()).map(|i| format!("core-{i}")).collect(),
            deps,
            families: families.iter().map(|f| f.to_string()).collect(),
            skip: vec![false; families.len()],
        }
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
            only_named: false,
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
            keep_going: false,
            only_named: false,
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
