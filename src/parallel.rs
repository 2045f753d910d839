//! Owns: running work over a slice on several threads, results in the
//! slice's order: on every core in contiguous parts (verification reads,
//! parses and checks thousands of small independent items; a local
//! lookaside is read the same way), or on a given number of workers that
//! each take the next item when done (slow, uneven items: image pulls,
//! layer fetches), optionally starting no new item after a failure
//! (`try_map_with`). Must not do I/O of its own or decide what runs.
use std::sync::atomic::{AtomicUsize, Ordering};

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Splits `items` into one contiguous part per core, runs `f` on each part
/// on its own thread and concatenates the results in order.
pub fn map_parts<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    let threads = cores().min(items.len().max(1));
    if threads <= 1 {
        return f(items);
    }
    let part = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(part)
            .map(|chunk| {
                let f = &f;
                scope.spawn(move || f(chunk))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    })
}

/// Maps `f` over `items` on every core, keeping order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_parts(items, |part| part.iter().map(&f).collect())
}

/// Maps `f` over `items` on `workers` threads (at least 1, at most one per
/// item), each taking the next item as soon as it is done with the last,
/// so one slow item does not hold up a whole part. Results in the slice's
/// order; a panic in `f` is raised again here.
pub fn map_with<T: Sync, R: Send>(
    workers: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(at) else {
                            return done;
                        };
                        done.push((at, f(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (at, result) in done {
        slots[at] = Some(result);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every item was taken by one worker"))
        .collect()
}

/// `map_with` for fallible work that is not worth finishing once one item
/// failed: after an item returns `Err`, `f` starts on no further item
/// (the ones already running finish; the rest are skipped). Returns every result in the slice's
/// order, or the first error (by position among the items that ran).
pub fn try_map_with<T: Sync, R: Send, E: Send>(
    workers: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results = map_with(workers, items, |item| {
        if failed.load(Ordering::SeqCst) {
            return None;
        }
        let result = f(item);
        if result.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        Some(result)
    });
    let mut done = Vec::with_capacity(results.len());
    let mut first_error = None;
    for result in results.into_iter().flatten() {
        match result {
            Ok(r) => done.push(r),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_whatever_the_parts() {
        let items: Vec<u32> = (0..1001).collect();
        assert_eq!(
            map(&items, |n| n * 2),
            items.iter().map(|n| n * 2).collect::<Vec<_>>()
        );
        let sums = map_parts(&items, |part| vec![part.iter().sum::<u32>()]);
        assert_eq!(sums.iter().sum::<u32>(), items.iter().sum::<u32>());
        assert!(sums.len() <= cores());
        assert!(map(&[] as &[u32], |n| *n).is_empty());
    }

    #[test]
    fn workers_take_items_in_turn_and_order_is_kept() {
        let items: Vec<u32> = (0..257).collect();
        for workers in [0, 1, 3, 1000] {
            assert_eq!(
                map_with(workers, &items, |n| n * 3),
                items.iter().map(|n| n * 3).collect::<Vec<_>>(),
                "{workers} workers"
            );
        }
        // The worker count is honoured: with 4 workers, 4 items all run at
        // once (each waits, bounded, until all 4 have started).
        let started = AtomicUsize::new(0);
        let together = map_with(4, &[0, 1, 2, 3], |_| {
            started.fetch_add(1, Ordering::SeqCst);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while started.load(Ordering::SeqCst) < 4 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            started.load(Ordering::SeqCst) == 4
        });
        assert_eq!(together, [true; 4]);
        assert!(map_with(8, &[] as &[u32], |n| *n).is_empty());
    }
    #[test]
    fn a_failure_stops_handing_out_items() {
        let items: Vec<u32> = (0..200).collect();
        // One worker: items run in order, nothing after the failing one.
        let ran = AtomicUsize::new(0);
        let result = try_map_with(1, &items, |&n| {
            ran.fetch_add(1, Ordering::SeqCst);
            if n == 5 {
                Err(format!("item {n} failed"))
            } else {
                Ok(n)
            }
        });
        assert_eq!(result, Err("item 5 failed".to_string()));
        assert_eq!(ran.load(Ordering::SeqCst), 6);
        // Three workers: item 0 fails while the others hold items 1 and 2
        // (they wait, bounded, for the failure); few more items start.
        let (ran, failing) = (
            AtomicUsize::new(0),
            std::sync::atomic::AtomicBool::new(false),
        );
        let result = try_map_with(3, &items, |&n| {
            ran.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                failing.store(true, Ordering::SeqCst);
                return Err("item 0 failed".to_string());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !failing.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            Ok(n)
        });
        assert_eq!(result, Err("item 0 failed".to_string()));
        let ran = ran.load(Ordering::SeqCst);
        assert!(
            ran < items.len(),
            "every item ran after the failure ({ran})"
        );
        assert_eq!(
            try_map_with(3, &items, |&n| Ok::<_, String>(n + 1)),
            Ok(items.iter().map(|n| n + 1).collect())
        );
    }
}
