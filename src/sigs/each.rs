//! Owns: the one bounded-concurrency loop over images that `sync` and
//! `audit` share (each image on its own task of the process runtime, at
//! most N at a time, progress after each, results in input order) and its
//! `Progress` event. Knows nothing of signatures; draws nothing.
use std::future::Future;

use futures_util::StreamExt;

/// Progress: `done` of `total` images handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// Runs `work(i)` for every `i` below `total`, at most `concurrency` at a
/// time, each spawned on its own task; a task that panics gives
/// `failed(i, reason)` instead. Reports `progress` before the first and
/// after each; returns the results in index order.
pub fn for_each<R, F>(
    total: usize,
    concurrency: usize,
    progress: &dyn Fn(Progress),
    work: impl Fn(usize) -> F,
    failed: impl Fn(usize, String) -> R,
) -> Vec<R>
where
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    progress(Progress { done: 0, total });
    let mut results: Vec<(usize, R)> = crate::net::block_on(async {
        let tasks = (0..total).map(|i| {
            let task = tokio::spawn(work(i));
            let failed = &failed;
            async move {
                let result = task.await.unwrap_or_else(|e| failed(i, e.to_string()));
                (i, result)
            }
        });
        let mut stream = futures_util::stream::iter(tasks).buffer_unordered(concurrency.max(1));
        let mut results = Vec::with_capacity(total);
        while let Some(done) = stream.next().await {
            results.push(done);
            progress(Progress {
                done: results.len(),
                total,
            });
        }
        results
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn results_come_in_order_within_the_bound_and_a_panic_is_a_failure() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let seen = std::sync::Mutex::new(Vec::new());
        let results = for_each(
            6,
            2,
            &|p| seen.lock().unwrap().push(p.done),
            |i| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    assert!(i != 4, "image 4 fails");
                    format!("ok {i}")
                }
            },
            |i, reason| format!("failed {i}: {}", reason.contains("image 4 fails")),
        );
        assert_eq!(
            results,
            ["ok 0", "ok 1", "ok 2", "ok 3", "failed 4: true", "ok 5"]
        );
        assert!(most.load(Ordering::SeqCst) <= 2);
        assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 4, 5, 6]);
    }
}
