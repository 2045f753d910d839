//! Owns: running slow, uneven network work (an image's blob uploads, the
//! publish's image/destination pairs) on a given number of plain threads,
//! each taking the next item when done, results in the slice's order. Must
//! not do I/O of its own or decide what runs.
//!
//! Everything CPU-bound, and the pulls, use rayon (par_iter, par_chunks, a
//! dedicated `rayon::ThreadPool` where a -j limit applies). The publish stays
//! here because its pools nest (image pairs, then each image's blobs): a rayon
//! worker that waits on another pool's `install` takes further jobs of its own
//! pool meanwhile, so more than -j images would be under way at once and the
//! largest-first start order would be lost. Plain scoped threads block.
use std::sync::atomic::{AtomicUsize, Ordering};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
