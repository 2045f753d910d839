//! Owns: which ready package starts next, as pure logic both the real
//! scheduler (`build::scheduler`) and the simulation bench
//! (`benches/schedule.rs`) call: the DAG as positions, each package's
//! priority (its longest remaining path: its own duration plus the longest
//! chain of dependants after it, "bottom level", also counting that a
//! family's members run one at a time), the estimate used for a package
//! whose duration was never recorded (its source size, else the median),
//! `next_ready` (the waiting package with the highest priority whose
//! dependencies succeeded and whose subpackage family has no build
//! running), `simulate` (the makespan of a
//! run with given durations on N slots, through `next_ready`), the choice
//! of order by simulation (`Priority::best`) and the lower bounds the
//! bench compares with.
//! Must not read or write anything, nor start anything.
use std::collections::{HashMap, HashSet};

use super::plan::PlanEntry;

/// The plan as the scheduler sees it: per package, its dependencies (as
/// positions in the plan; dependencies come first) and its subpackage
/// family (members of one family never build at once).
#[derive(Clone, Debug)]
pub struct Dag {
    pub deps: Vec<Vec<usize>>,
    pub families: Vec<String>,
}

impl Dag {
    /// The DAG of a build plan: dependencies outside the plan are not
    /// waited for; a family is the entry's origin (the package whose
    /// Containerfile builds it).
    pub fn from_plan(plan: &[PlanEntry]) -> Dag {
        let at: HashMap<&str, usize> = plan
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        Dag {
            deps: plan
                .iter()
                .map(|e| {
                    e.deps
                        .iter()
                        .filter_map(|d| at.get(d.as_str()).copied())
                        .collect()
                })
                .collect(),
            families: plan.iter().map(|e| e.origin.clone()).collect(),
        }
    }

    /// This DAG plus an edge from the first member of each family (plan
    /// order) to every other member: the first member builds the family's
    /// shared stage (hours for a compiler), the others take it from the
    /// family's cache (minutes), so their paths really start after it. For
    /// priorities and the lower bound only: the scheduler never waits on
    /// these edges (a member still builds when the first one failed).
    pub fn with_shared_stages(&self) -> Dag {
        let mut staged = self.clone();
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (at, family) in self.families.iter().enumerate() {
            let head = *first.entry(family.as_str()).or_insert(at);
            if head != at && !staged.deps[at].contains(&head) {
                staged.deps[at].push(head);
            }
        }
        staged
    }
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

    /// Longest remaining path first (ties: plan order), where the rest of
    /// a family waits for its first member (see `Dag::with_shared_stages`).
    pub fn critical_path(dag: &Dag, durations: &[f64]) -> Priority {
        let levels = bottom_levels(&dag.with_shared_stages(), durations);
        Priority::by_levels_in_families(dag, durations, &levels)
    }

    /// As `critical_path`, with the paths through a family counting that
    /// its members run one at a time (`family_levels`): a family of many
    /// members, or one whose members lead to long chains, starts earlier.
    pub fn family_critical_path(dag: &Dag, durations: &[f64]) -> Priority {
        let levels = family_levels(dag, durations);
        Priority::by_levels_in_families(dag, durations, &levels)
    }

    /// Highest level first, then within each family (one member at a
    /// time) the longest path AFTER a member first.
    fn by_levels_in_families(dag: &Dag, durations: &[f64], levels: &[f64]) -> Priority {
        let mut priority = Priority::by_levels(levels);
        // Within a family (one member at a time), the longest path AFTER a
        // member goes first (Jackson's rule for one machine with tails).
        let tails: Vec<f64> = levels.iter().zip(durations).map(|(l, d)| l - d).collect();
        let mut slots: HashMap<&str, Vec<usize>> = HashMap::new();
        for (position, &at) in priority.order.iter().enumerate() {
            slots
                .entry(dag.families[at].as_str())
                .or_default()
                .push(position);
        }
        for positions in slots.values().filter(|p| p.len() > 1) {
            let mut members: Vec<usize> = positions.iter().map(|&p| priority.order[p]).collect();
            members.sort_by(|&a, &b| tails[b].total_cmp(&tails[a]).then(a.cmp(&b)));
            for (&position, member) in positions.iter().zip(members) {
                priority.order[position] = member;
            }
        }
        priority
    }

    /// Highest level first (ties: plan order).
    fn by_levels(levels: &[f64]) -> Priority {
        let mut order: Vec<usize> = (0..levels.len()).collect();
        order.sort_by(|&a, &b| levels[b].total_cmp(&levels[a]).then(a.cmp(&b)));
        Priority { order }
    }

    /// The best of the orders above for `slots` builds, by simulating each
    /// with `durations` (list scheduling has no best rule for every DAG;
    /// with plan order among the candidates, the pick is never worse than
    /// plan order for these durations). Ties: the earlier candidate.
    pub fn best(dag: &Dag, durations: &[f64], slots: usize) -> Priority {
        let candidates = [
            Priority::family_critical_path(dag, durations),
            Priority::critical_path(dag, durations),
            Priority::plan_order(durations.len()),
        ];
        let mut best: Option<(f64, Priority)> = None;
        for candidate in candidates {
            let makespan = simulate(dag, durations, &candidate, slots);
            if best.as_ref().is_none_or(|(b, _)| makespan < *b) {
                best = Some((makespan, candidate));
            }
        }
        best.map(|(_, p)| p).expect("three candidates")
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

/// Bottom levels (as `bottom_levels` on `Dag::with_shared_stages`) that
/// count what one-member-at-a-time families add: the members after a
/// family's first run back to back, longest path after a member first
/// (Jackson's rule), so from a member's start the family is busy with it
/// and every member after it, each then followed by its own path. A
/// member's level is at least that; its dependencies' levels follow.
pub fn family_levels(dag: &Dag, durations: &[f64]) -> Vec<f64> {
    let staged = dag.with_shared_stages();
    let plain = bottom_levels(&staged, durations);
    let tail = |at: usize| plain[at] - durations[at];
    let mut floor = vec![0.0f64; durations.len()];
    for rest in family_members(dag).iter().filter_map(|m| m.get(1..)) {
        let mut order = rest.to_vec();
        order.sort_by(|&a, &b| tail(b).total_cmp(&tail(a)).then(a.cmp(&b)));
        // From the last member back: its duration, then the longer of its
        // own path and what the members after it still need.
        let mut after = 0.0f64;
        for &at in order.iter().rev() {
            after = durations[at] + tail(at).max(after);
            floor[at] = after;
        }
    }
    let mut after = vec![0.0f64; durations.len()];
    let mut levels = vec![0.0f64; durations.len()];
    for at in (0..durations.len()).rev() {
        levels[at] = (durations[at] + after[at]).max(floor[at]);
        for &dep in &staged.deps[at] {
            after[dep] = after[dep].max(levels[at]);
        }
    }
    levels
}

/// The members of each family, in plan order (families in the order of
/// their first member).
fn family_members(dag: &Dag) -> Vec<Vec<usize>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (at, family) in dag.families.iter().enumerate() {
        let slot = *index.entry(family.as_str()).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[slot].push(at);
    }
    members
}

/// Recorded durations with the missing ones estimated. A package whose
/// sources are fetched (`source_bytes`, their total size) is estimated as
/// its size times the time per byte learnt from the packages that have
/// both (the median of their ratios); else the median recorded duration
/// (a typical package). With nothing recorded at all, a package of the
/// median source size counts 1, as does each package without sources
/// (longest chain of packages first, the largest sources first within it).
pub fn with_estimates(recorded: &[Option<f64>], source_bytes: &[Option<u64>]) -> Vec<f64> {
    let valid = |d: &Option<f64>| d.filter(|d| d.is_finite() && *d >= 0.0);
    let sized = |b: &Option<u64>| b.filter(|&b| b > 0).map(|b| b as f64);
    let bytes_of = |at: usize| source_bytes.get(at).and_then(sized);
    let recorded_median = median(recorded.iter().filter_map(valid).collect());
    let per_byte = match recorded_median {
        Some(_) => median(
            recorded
                .iter()
                .enumerate()
                .filter_map(|(at, d)| Some(valid(d)? / bytes_of(at)?))
                .collect(),
        ),
        None => median(source_bytes.iter().filter_map(sized).collect()).map(|m| 1.0 / m),
    };
    let typical = recorded_median.unwrap_or(1.0);
    recorded
        .iter()
        .enumerate()
        .map(|(at, d)| {
            valid(d)
                .or_else(|| Some(bytes_of(at)? * per_byte?))
                .unwrap_or(typical)
        })
        .collect()
}

/// The middle value (the upper one of an even count); none when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
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

/// The least makespan any order can reach on `slots` builds, ignoring
/// that a family builds one member at a time: the longest path (a
/// family's other members after its first, as its shared stage requires),
/// or all the work spread evenly, whichever is longer.
pub fn lower_bound(dag: &Dag, durations: &[f64], slots: usize) -> f64 {
    let longest = bottom_levels(&dag.with_shared_stages(), durations)
        .into_iter()
        .fold(0.0, f64::max);
    let total: f64 = durations.iter().sum();
    longest.max(total / slots.max(1) as f64)
}

/// What one-member-at-a-time families add to `lower_bound`: per family,
/// the members after its first can start no earlier than the earliest of
/// them could, then run back to back; the best order of those (longest
/// path after a member first, Jackson's rule) still ends some member's
/// path at the value returned (the largest over families). A lower bound
/// of any schedule, whatever the number of slots.
pub fn family_bound(dag: &Dag, durations: &[f64]) -> f64 {
    let staged = dag.with_shared_stages();
    let levels = bottom_levels(&staged, durations);
    // Earliest start of each package with unlimited slots.
    let mut earliest = vec![0.0f64; durations.len()];
    for at in 0..durations.len() {
        for &dep in &staged.deps[at] {
            earliest[at] = earliest[at].max(earliest[dep] + durations[dep]);
        }
    }
    let mut bound = 0.0f64;
    for rest in family_members(dag).iter().filter_map(|m| m.get(1..)) {
        let tail = |at: usize| levels[at] - durations[at];
        let mut order = rest.to_vec();
        order.sort_by(|&a, &b| tail(b).total_cmp(&tail(a)));
        let mut clock = rest
            .iter()
            .map(|&at| earliest[at])
            .fold(f64::INFINITY, f64::min);
        for at in order {
            clock += durations[at];
            bound = bound.max(clock + tail(at));
        }
    }
    bound
}

/// What the work that cannot start early adds to `lower_bound` on
/// `slots` builds: a package cannot start before its dependencies could
/// end with unlimited slots (its earliest start, the rest of its family
/// after its first member); so for any time r, everything whose earliest
/// start is r or later still has to run after r, at best spread evenly:
/// r + that work / slots. The largest over r. With few slots and a long
/// chain first (the bootstrap and the compilers), this is far above
/// total work / slots.
pub fn release_bound(dag: &Dag, durations: &[f64], slots: usize) -> f64 {
    let staged = dag.with_shared_stages();
    let mut earliest = vec![0.0f64; durations.len()];
    for at in 0..durations.len() {
        for &dep in &staged.deps[at] {
            earliest[at] = earliest[at].max(earliest[dep] + durations[dep]);
        }
    }
    let mut by_start: Vec<usize> = (0..durations.len()).collect();
    by_start.sort_by(|&a, &b| earliest[b].total_cmp(&earliest[a]));
    // From the latest start back: the work starting then or later.
    let mut later = 0.0f64;
    let mut bound = 0.0f64;
    for at in by_start {
        later += durations[at];
        bound = bound.max(earliest[at] + later / slots.max(1) as f64);
    }
    bound
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
        assert_eq!(plan, 25.0);
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
    fn a_family_builds_its_stage_first_then_its_members_longest_tail_first() {
        // Family "llvm": 0 builds the stage (10), 1 and 2 take it from the
        // cache (1 each); 3 (5) needs 2, 4 (2) needs 1.
        let mut g = dag(vec![vec![], vec![], vec![], vec![2], vec![1]]);
        g.families = ["llvm", "llvm", "llvm", "rust", "go"]
            .map(String::from)
            .to_vec();
        let durations = [10.0, 1.0, 1.0, 5.0, 2.0];
        let critical = Priority::critical_path(&g, &durations);
        let members: Vec<usize> = critical
            .order
            .iter()
            .copied()
            .filter(|&at| at < 3)
            .collect();
        assert_eq!(members, [0, 2, 1]);
        // The stage, then 2 (its path is longer), then 1: 10 + 1 + 5.
        assert_eq!(simulate(&g, &durations, &critical, 4), 16.0);
        assert_eq!(lower_bound(&g, &durations, 4), 16.0);
        assert_eq!(family_bound(&g, &durations), 16.0);
        // Plan order runs 1 before 2: one unit later.
        assert_eq!(simulate(&g, &durations, &Priority::plan_order(5), 4), 17.0);
        assert_eq!(
            simulate(&g, &durations, &Priority::best(&g, &durations, 4), 4),
            16.0
        );
    }

    #[test]
    fn a_family_whose_members_run_one_at_a_time_starts_before_a_longer_single_package() {
        // Family "php": 0 builds the stage (1), 1..=3 its members (3 each,
        // one at a time); 4 needs every member (5). 5 and 6: alone, 10.
        let mut g = dag(vec![
            vec![],
            vec![],
            vec![],
            vec![],
            vec![1, 2, 3],
            vec![],
            vec![],
        ]);
        g.families = ["php", "php", "php", "php", "pie", "q", "r"]
            .map(String::from)
            .to_vec();
        let durations = [1.0, 3.0, 3.0, 3.0, 5.0, 10.0, 10.0];
        // Without the members' queue the family's path is 1 + 3 + 5 = 9,
        // below 10; with it, 1 + 3 + 3 + 3 + 5 = 15.
        let levels = family_levels(&g, &durations);
        assert_eq!(levels[0], 15.0);
        assert_eq!(bottom_levels(&g.with_shared_stages(), &durations)[0], 9.0);
        let status = vec![Status::Waiting; 7];
        let family_first = Priority::family_critical_path(&g, &durations);
        assert_eq!(next_ready(&g, &family_first, &status), Some(0));
        let plain = Priority::critical_path(&g, &durations);
        assert_eq!(next_ready(&g, &plain, &status), Some(5));
        // On two slots: the stage and 5 first, the members one after the
        // other beside it, 6 in the gap, 4 last: 18; the plain order
        // leaves the members until 5 and 6 are done: 25.
        assert_eq!(simulate(&g, &durations, &family_first, 2), 18.0);
        assert_eq!(simulate(&g, &durations, &plain, 2), 25.0);
        assert_eq!(
            simulate(&g, &durations, &Priority::best(&g, &durations, 2), 2),
            18.0
        );
        assert_eq!(family_bound(&g, &durations), 15.0);
    }

    #[test]
    fn work_that_cannot_start_early_raises_the_bound() {
        // 0 (10) first; 1, 2, 3 (10 each) need it. On two slots: 10, then
        // 30 of work on two slots: 25, where work / slots says 20.
        let g = dag(vec![vec![], vec![0], vec![0], vec![0]]);
        let durations = [10.0; 4];
        assert_eq!(lower_bound(&g, &durations, 2), 20.0);
        assert_eq!(release_bound(&g, &durations, 2), 25.0);
        let plan = Priority::plan_order(4);
        assert_eq!(simulate(&g, &durations, &plan, 2), 30.0);
    }

    #[test]
    fn missing_durations_are_the_median_of_the_recorded_ones() {
        assert_eq!(
            with_estimates(
                &[Some(10.0), None, Some(2.0), Some(4.0), Some(f64::NAN)],
                &[]
            ),
            [10.0, 4.0, 2.0, 4.0, 4.0]
        );
        assert_eq!(with_estimates(&[None, None], &[None, None]), [1.0, 1.0]);
    }

    #[test]
    fn missing_durations_scale_with_the_source_size() {
        // Seconds per byte where both are known: 0.1 (10 s / 100 B), 0.2
        // (40 s / 200 B), 0.3 (3 s / 10 B): median 0.2.
        let recorded = [
            Some(10.0),
            Some(40.0),
            Some(3.0),
            Some(7.0),
            None,
            None,
            None,
        ];
        let bytes = [
            Some(100),
            Some(200),
            Some(10),
            None,
            Some(1000),
            None,
            Some(0),
        ];
        assert_eq!(
            with_estimates(&recorded, &bytes),
            // 1000 B: 200 s; no sources, or none fetched: the median
            // recorded duration (of 3, 7, 10, 40: 10).
            [10.0, 40.0, 3.0, 7.0, 200.0, 10.0, 10.0]
        );
        // Sources but no package with both: the median recorded duration.
        assert_eq!(
            with_estimates(&[Some(5.0), None], &[None, Some(50)]),
            [5.0, 5.0]
        );
        // Nothing recorded: relative to the median source size.
        assert_eq!(
            with_estimates(
                &[None, None, None, None],
                &[Some(100), Some(400), Some(200), None]
            ),
            [0.5, 2.0, 1.0, 1.0]
        );
    }
}
