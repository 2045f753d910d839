//! Owns: which ready package starts next, as pure logic both the real
//! scheduler (`build::scheduler`) and the simulation bench
//! (`benches/schedule.rs`) call: the DAG as positions, each package's
//! priority (its longest remaining path: its own duration plus the longest
//! chain of dependants after it, "bottom level"), the estimate used for a
//! package whose duration was never recorded, `next_ready` (the waiting
//! package with the highest priority whose dependencies succeeded and whose
//! subpackage family has no build running), and `simulate`, the makespan
//! of a run with given durations on N slots.
//! Must not read or write anything, nor start anything.
use std::collections::HashSet;

/// The plan as the scheduler sees it: per package, its dependencies (as
/// positions in the plan; dependencies come first) and its subpackage
/// family (members of one family never build at once).
#[derive(Clone, Debug)]
pub struct Dag {
    pub deps: Vec<Vec<usize>>,
    pub families: Vec<String>,
}

/// Where one package stands, as `next_ready` needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Running,
    /// Built now or already up to date: dependants may start.
    Succeeded,
    /// Failed, skipped, stopped: dependants never start.
    Stopped,
}

/// The order `next_ready` tries waiting packages in.
#[derive(Clone, Debug)]
pub struct Priority {
    order: Vec<usize>,
}

impl Priority {
    /// Plan order (what `build` did before priorities).
    pub fn plan_order(len: usize) -> Priority {
        Priority {
            order: (0..len).collect(),
        }
    }

    /// Longest remaining path first (ties: plan order).
    pub fn critical_path(dag: &Dag, durations: &[f64]) -> Priority {
        let levels = bottom_levels(dag, durations);
        let mut order: Vec<usize> = (0..levels.len()).collect();
        order.sort_by(|&a, &b| levels[b].total_cmp(&levels[a]).then(a.cmp(&b)));
        Priority { order }
    }
}

/// Per package: its duration plus the longest chain of dependants after
/// it (the time from its start to the end of the run, with unlimited
/// slots). Dependencies come first in the plan, so one backwards pass.
pub fn bottom_levels(dag: &Dag, durations: &[f64]) -> Vec<f64> {
    let mut after = vec![0.0f64; durations.len()];
    let mut levels = vec![0.0f64; durations.len()];
    for at in (0..durations.len()).rev() {
        levels[at] = durations[at] + after[at];
        for &dep in &dag.deps[at] {
            after[dep] = after[dep].max(levels[at]);
        }
    }
    levels
}

/// Recorded durations with the missing ones estimated: the median of the
/// recorded ones (a typical package), else 1 for all (longest chain of
/// packages first).
pub fn with_estimates(recorded: &[Option<f64>]) -> Vec<f64> {
    let mut known: Vec<f64> = recorded
        .iter()
        .flatten()
        .copied()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .collect();
    known.sort_by(f64::total_cmp);
    let estimate = known.get(known.len() / 2).copied().unwrap_or(1.0);
    recorded
        .iter()
        .map(|d| match d {
            Some(d) if d.is_finite() && *d >= 0.0 => *d,
            _ => estimate,
        })
        .collect()
}

/// The first waiting package in `priority` order whose dependencies all
/// succeeded and whose family has no build running.
pub fn next_ready(dag: &Dag, priority: &Priority, status: &[Status]) -> Option<usize> {
    let busy: HashSet<&str> = status
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == Status::Running)
        .map(|(i, _)| dag.families[i].as_str())
        .collect();
    priority.order.iter().copied().find(|&at| {
        status[at] == Status::Waiting
            && !busy.contains(dag.families[at].as_str())
            && dag.deps[at].iter().all(|&d| status[d] == Status::Succeeded)
    })
}

/// The makespan of building every package of `dag` on `slots` parallel
/// builds, starting ready packages in `priority` order, each taking its
/// duration (the real scheduler's rule, time simulated).
pub fn simulate(dag: &Dag, durations: &[f64], priority: &Priority, slots: usize) -> f64 {
    let mut status = vec![Status::Waiting; durations.len()];
    // (finish time, package) of the running builds.
    let mut running: Vec<(f64, usize)> = Vec::new();
    let mut now = 0.0f64;
    loop {
        while running.len() < slots.max(1) {
            let Some(at) = next_ready(dag, priority, &status) else {
                break;
            };
            status[at] = Status::Running;
            running.push((now + durations[at], at));
        }
        let Some(first) = (0..running.len()).min_by(|&a, &b| {
            running[a]
                .0
                .total_cmp(&running[b].0)
                .then(running[a].1.cmp(&running[b].1))
        }) else {
            return now;
        };
        let (end, at) = running.swap_remove(first);
        now = end;
        status[at] = Status::Succeeded;
    }
}

/// The least makespan any order can reach on `slots` builds: the longest
/// path, or all the work spread evenly, whichever is longer.
pub fn lower_bound(dag: &Dag, durations: &[f64], slots: usize) -> f64 {
    let longest = bottom_levels(dag, durations)
        .into_iter()
        .fold(0.0, f64::max);
    let total: f64 = durations.iter().sum();
    longest.max(total / slots.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(deps: Vec<Vec<usize>>) -> Dag {
        let families = (0..deps.len()).map(|i| format!("f{i}")).collect();
        Dag { deps, families }
    }

    #[test]
    fn bottom_level_is_the_longest_chain_from_a_package_to_the_end() {
        // 0 -> 1 -> 3, 0 -> 2; 4 alone.
        let g = dag(vec![vec![], vec![0], vec![0], vec![1], vec![]]);
        let levels = bottom_levels(&g, &[1.0, 2.0, 10.0, 3.0, 4.0]);
        assert_eq!(levels, [11.0, 5.0, 10.0, 3.0, 4.0]);
    }

    #[test]
    fn the_longest_remaining_path_starts_first() {
        // 0 is short and alone; 1 is short but 2 (long) waits for it.
        let g = dag(vec![vec![], vec![], vec![1]]);
        let durations = [5.0, 1.0, 10.0];
        let critical = Priority::critical_path(&g, &durations);
        let status = vec![Status::Waiting; 3];
        assert_eq!(next_ready(&g, &critical, &status), Some(1));
        assert_eq!(
            next_ready(&g, &Priority::plan_order(3), &status),
            Some(0),
            "plan order takes the first"
        );
        // On one slot the order does not matter; on two it does.
        let plan = Priority::plan_order(3);
        assert_eq!(simulate(&g, &durations, &plan, 1), 16.0);
        assert_eq!(simulate(&g, &durations, &critical, 1), 16.0);
        assert_eq!(simulate(&g, &durations, &plan, 2), 11.0);
        assert_eq!(simulate(&g, &durations, &critical, 2), 11.0);
        assert_eq!(lower_bound(&g, &durations, 2), 11.0);
    }

    #[test]
    fn plan_order_loses_where_a_long_chain_starts_late() {
        // Three short independent packages first in plan order, then a
        // short package a long one waits for.
        let g = dag(vec![vec![], vec![], vec![], vec![], vec![3]]);
        let durations = [4.0, 4.0, 4.0, 1.0, 20.0];
        let plan = simulate(&g, &durations, &Priority::plan_order(5), 2);
        let critical = simulate(&g, &durations, &Priority::critical_path(&g, &durations), 2);
        assert_eq!(plan, 29.0);
        assert_eq!(critical, 21.0);
        assert_eq!(lower_bound(&g, &durations, 2), 21.0);
    }

    #[test]
    fn one_family_member_at_a_time_and_only_after_its_dependencies() {
        let mut g = dag(vec![vec![], vec![], vec![0]]);
        g.families = vec!["llvm".into(), "llvm".into(), "gcc".into()];
        let priority = Priority::plan_order(3);
        let status = [Status::Running, Status::Waiting, Status::Waiting];
        assert_eq!(next_ready(&g, &priority, &status), None);
        let status = [Status::Stopped, Status::Waiting, Status::Waiting];
        assert_eq!(next_ready(&g, &priority, &status), Some(1));
        let status = [Status::Succeeded, Status::Running, Status::Waiting];
        assert_eq!(next_ready(&g, &priority, &status), Some(2));
        // Family members serialize in the simulation too.
        assert_eq!(simulate(&g, &[2.0, 3.0, 1.0], &priority, 3), 5.0);
    }

    #[test]
    fn missing_durations_are_the_median_of_the_recorded_ones() {
        assert_eq!(
            with_estimates(&[Some(10.0), None, Some(2.0), Some(4.0), Some(f64::NAN)]),
            [10.0, 4.0, 2.0, 4.0, 4.0]
        );
        assert_eq!(with_estimates(&[None, None]), [1.0, 1.0]);
    }
}
