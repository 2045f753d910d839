//! Owns: the simulation bench of build scheduling on StageX's real DAG:
//! the release tree (`../shared/stagex-2026.03.0`, every target, loaded
//! through the crate's own plan code) with seeded synthetic heavy-tailed
//! durations, simulated with the SAME picker real builds use
//! (`build::critical_path::next_ready`, families one member at a time):
//! the makespan of plan order, of longest-remaining-path-first, and the
//! lower bound max(critical path, total work / N), for N = 2, 4, 16, 64.
//!
//! The tree: `STAGEX_REAL_TREE`, else `shared/stagex-2026.03.0` in the
//! nearest ancestor of this repository that has one (in CI the repository
//! is a fresh clone with shared/ beside it).
//! Seeds: `STAGEX_BENCH_SEEDS` (default 20); the table is the first
//! seed's, then the worst and median ratio over all seeds
//! (`STAGEX_BENCH_VERBOSE=1`: every seed's). The new order is what `build`
//! runs: `Priority::best` for N (the family-aware critical path, the
//! critical path, or plan order: whichever the simulation says is
//! shortest). `STAGEX_BENCH_EXPLAIN=SEED:N,...` prints, for those runs,
//! the chain from the last package back to the start with what each one
//! waited for (a dependency, a member of its family, a free slot).
//! Three lower bounds: the max(critical path, total work / N);
//! the family-aware one (a family's members one at a time, see
//! `critical_path::family_bound`): where the new order misses the first
//! by more than a few per cent, it meets the second; and "all bounds",
//! the largest of those two and `critical_path::release_bound` (work that
//! cannot start before some time r runs after r: with 2 or 4 builds the
//! bootstrap and compiler chain leaves slots idle that total work / N
//! ignores).
//! Run: `cargo bench --bench schedule`.
//!
//! Measured (513 images, 443 families; 20 seeds; worst (median)): plan
//! order is 1.120x (1.044x) the bound for N = 16, the new order 1.023x
//! (1.000x), and 1.000x (1.000x) of the family-aware bound on every seed;
//! for N = 64, 1.064x (1.010x) against 1.023x (1.000x), again 1.000x of
//! the family-aware bound; never worse than plan order. Against all
//! bounds, the new order is 1.000x (1.000x) for N = 2, 1.014x (1.008x)
//! for N = 4, 1.000x (1.000x) for N = 16 and 64. Without the
//! family-aware candidate: 1.025x at N = 16 (1.005x of the family-aware
//! bound). The 2% of the bound is out of reach on seed 2 for any
//! order that builds a family one member at a time: core-pie (173.7 min
//! on that seed) needs core-php and all nine core-php-ext-* members of
//! core-php's family; the critical path counts one member, but the nine
//! run back to back (25.0 min from core-php's end to core-pie's start), so
//! no schedule ends before 826.6 min, 1.023x the critical path (808.3
//! min); the new order ends exactly then.
use std::path::PathBuf;

use stagex::build::critical_path::{
    bottom_levels, family_bound, lower_bound, next_ready, release_bound, simulate, Dag, Priority,
    Status,
};
use stagex::build::plan::{self, PlanEntry, PlanOptions};
use stagex::package::PackageTree;

/// Families whose builds take hours in StageX (compilers); everything
/// else takes minutes.
const HEAVY: [&str; 3] = ["core-llvm", "core-rust", "core-gcc"];

const SLOTS: [usize; 4] = [2, 4, 16, 64];

fn real_tree() -> PathBuf {
    if let Some(tree) = std::env::var_os("STAGEX_REAL_TREE") {
        return PathBuf::from(tree);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|dir| dir.join("shared/stagex-2026.03.0"))
        .find(|tree| tree.join("packages").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "StageX's tree is not in shared/stagex-2026.03.0 beside {} or above; set STAGEX_REAL_TREE",
                here.display()
            )
        })
}

/// Minutes per plan entry. The first member of a family (plan order)
/// builds the shared stage: hours (1 to 6) for the heavy ones, else a
/// Pareto draw (heavy tail) of 2 minutes at least, capped at 3 hours. The
/// other members take the stage from the family's cache: 1 to 5 minutes.
fn synthetic_minutes(rng: &mut fastrand::Rng, entries: &[PlanEntry]) -> Vec<f64> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .map(|entry| {
            if !seen.insert(entry.origin.as_str()) {
                return 1.0 + 4.0 * rng.f64();
            }
            if HEAVY.contains(&entry.origin.as_str()) {
                return 60.0 * (1.0 + 5.0 * rng.f64());
            }
            let pareto = 2.0 / (1.0 - rng.f64()).powf(1.0 / 1.3);
            pareto.min(180.0)
        })
        .collect()
}

struct Row {
    slots: usize,
    plan: f64,
    critical: f64,
    /// max(critical path, total work / N).
    bound: f64,
    /// `bound` and what one-member-at-a-time families add.
    family: f64,
    /// `family` and what work that cannot start early adds
    /// (`critical_path::release_bound`): the tightest bound here.
    tight: f64,
}

fn rows(dag: &Dag, durations: &[f64]) -> Vec<Row> {
    let plan_order = Priority::plan_order(durations.len());
    SLOTS
        .iter()
        .map(|&slots| Row {
            slots,
            plan: simulate(dag, durations, &plan_order, slots),
            critical: simulate(
                dag,
                durations,
                &Priority::best(dag, durations, slots),
                slots,
            ),
            bound: lower_bound(dag, durations, slots),
            family: lower_bound(dag, durations, slots).max(family_bound(dag, durations)),
            tight: lower_bound(dag, durations, slots)
                .max(family_bound(dag, durations))
                .max(release_bound(dag, durations, slots)),
        })
        .collect()
}

fn main() {
    let tree_root = real_tree();
    let tree = PackageTree::load(&tree_root.join("packages")).expect("loading StageX's tree");
    let options = PlanOptions {
        platforms: vec!["linux/amd64".parse().unwrap()],
        epoch: 1,
        root: tree_root.clone(),
    };
    let entries = plan::plan(&tree, &[], &options).expect("planning every target");
    let dag = Dag::from_plan(&entries);
    let families = entries
        .iter()
        .map(|e| e.origin.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let edges: usize = dag.deps.iter().map(Vec::len).sum();
    println!(
        "StageX DAG at {}: {} images, {} families, {edges} dependency edges",
        tree_root.display(),
        entries.len(),
        families
    );
    let seeds: u64 = std::env::var("STAGEX_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // Per N, per seed: the ratio of plan order and of the new order to
    // the bound, and of the new order to the family-aware bound and to
    // the tightest bound.
    let mut ratios: Vec<Vec<[f64; 4]>> = vec![Vec::new(); SLOTS.len()];
    let mut beaten = 0;
    let verbose = std::env::var_os("STAGEX_BENCH_VERBOSE").is_some();
    for seed in 1..=seeds.max(1) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let durations = synthetic_minutes(&mut rng, &entries);
        let rows = rows(&dag, &durations);
        if seed == 1 {
            print_table(&durations, &rows);
        }
        if verbose {
            print_seed(seed, &rows);
        }
        for (i, row) in rows.iter().enumerate() {
            ratios[i].push([
                row.plan / row.bound,
                row.critical / row.bound,
                row.critical / row.family,
                row.critical / row.tight,
            ]);
            beaten += usize::from(row.critical > row.plan + 1e-9);
        }
    }
    print_summary(seeds, &ratios);
    println!("runs where the new order was worse than plan order: {beaten}");
    if let Ok(list) = std::env::var("STAGEX_BENCH_EXPLAIN") {
        // SEED:N,... : why those runs end when they do.
        for (seed, slots) in list.split(',').filter_map(seed_and_slots) {
            let durations = synthetic_minutes(&mut fastrand::Rng::with_seed(seed), &entries);
            explain(&entries, &dag, &durations, slots, seed);
        }
    }
}

fn seed_and_slots(item: &str) -> Option<(u64, usize)> {
    let (seed, slots) = item.split_once(':')?;
    Some((seed.trim().parse().ok()?, slots.trim().parse().ok()?))
}

fn print_seed(seed: u64, rows: &[Row]) {
    let line: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "N={} {:.3}x bound, {:.3}x family-aware, {:.3}x all",
                r.slots,
                r.critical / r.bound,
                r.critical / r.family,
                r.critical / r.tight
            )
        })
        .collect();
    println!("seed {seed}: {}", line.join("; "));
}

/// Worst and median over the seeds of each ratio, per N.
fn print_summary(seeds: u64, ratios: &[Vec<[f64; 4]>]) {
    println!("\nover {seeds} seeds, worst (median):");
    println!(
        "{:>4} {:>20} {:>20} {:>22} {:>22}",
        "N", "plan order/bound", "new order/bound", "new order/fam. bound", "new order/all bounds"
    );
    for (slots, per_seed) in SLOTS.iter().zip(ratios) {
        let cells: Vec<String> = (0..4)
            .map(|k| {
                let mut column: Vec<f64> = per_seed.iter().map(|r| r[k]).collect();
                column.sort_by(f64::total_cmp);
                let worst = column.last().copied().unwrap_or(f64::NAN);
                // The lower middle of an even count.
                let median = column
                    .get(column.len().saturating_sub(1) / 2)
                    .copied()
                    .unwrap_or(f64::NAN);
                format!("{worst:.3}x ({median:.3}x)")
            })
            .collect();
        println!(
            "{slots:>4} {:>20} {:>20} {:>22} {:>22}",
            cells[0], cells[1], cells[2], cells[3]
        );
    }
}

/// Start and end of every package in a run through `next_ready` (the
/// same rule as `simulate`, with the times kept).
fn trace(dag: &Dag, durations: &[f64], priority: &Priority, slots: usize) -> Vec<(f64, f64)> {
    let mut status = vec![Status::Waiting; durations.len()];
    let mut times = vec![(0.0, 0.0); durations.len()];
    let mut running: Vec<usize> = Vec::new();
    let mut now = 0.0f64;
    loop {
        while running.len() < slots {
            let Some(at) = next_ready(dag, priority, &status) else {
                break;
            };
            status[at] = Status::Running;
            times[at] = (now, now + durations[at]);
            running.push(at);
        }
        let Some(first) = (0..running.len()).min_by(|&a, &b| {
            times[running[a]]
                .1
                .total_cmp(&times[running[b]].1)
                .then(running[a].cmp(&running[b]))
        }) else {
            return times;
        };
        let at = running.swap_remove(first);
        now = times[at].1;
        status[at] = Status::Succeeded;
    }
}

/// Why the last package of a run ended when it did: from it back to the
/// start, what each package on the way waited for (a dependency, a
/// member of its family, or a free slot), with the bound's terms.
fn explain(entries: &[PlanEntry], dag: &Dag, durations: &[f64], slots: usize, seed: u64) {
    let priority = Priority::best(dag, durations, slots);
    let times = trace(dag, durations, &priority, slots);
    let makespan = times.iter().map(|t| t.1).fold(0.0, f64::max);
    let longest = bottom_levels(&dag.with_shared_stages(), durations)
        .into_iter()
        .fold(0.0, f64::max);
    let work: f64 = durations.iter().sum();
    println!(
        "\nseed {seed}, N = {slots}: makespan {:.1} min; critical path {longest:.1}, work/N {:.1}, family-aware bound {:.1}",
        makespan,
        work / slots as f64,
        family_bound(dag, durations)
    );
    let mut at = (0..times.len())
        .max_by(|&a, &b| times[a].1.total_cmp(&times[b].1))
        .unwrap();
    loop {
        let (start, end) = times[at];
        let ended_then = |other: usize| (times[other].1 - start).abs() < 1e-9;
        let dep = dag.deps[at].iter().copied().find(|&d| ended_then(d));
        let member = (0..times.len())
            .find(|&o| o != at && dag.families[o] == dag.families[at] && ended_then(o));
        let busy = times
            .iter()
            .filter(|t| t.0 <= start - 1e-9 && t.1 > start + 1e-9)
            .count();
        let (why, next) = match (dep, member) {
            (Some(d), _) => ("after dependency", Some(d)),
            (None, Some(m)) => ("after family member", Some(m)),
            (None, None) if start == 0.0 => ("at the start", None),
            (None, None) => ("after a slot freed", None),
        };
        println!(
            "  {:>7.1}-{:>7.1} {:<32} family {:<24} {why} ({busy} others busy)",
            start, end, entries[at].name, entries[at].origin
        );
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
}

fn print_table(durations: &[f64], rows: &[Row]) {
    let total: f64 = durations.iter().sum();
    println!(
        "seed 1: total work {:.1} h; makespans in hours (ratio to the bound max(critical path, work/N))",
        total / 60.0
    );
    println!(
        "{:>4} {:>18} {:>18} {:>8} {:>12} {:>11}",
        "N", "plan order", "new order", "bound", "family-aware", "all bounds"
    );
    for r in rows {
        println!(
            "{:>4} {:>9.2} ({:.3}x) {:>9.2} ({:.3}x) {:>8.2} {:>12.2} {:>11.2}",
            r.slots,
            r.plan / 60.0,
            r.plan / r.bound,
            r.critical / 60.0,
            r.critical / r.bound,
            r.bound / 60.0,
            r.family / 60.0,
            r.tight / 60.0
        );
    }
}
