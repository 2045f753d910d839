//! Owns: the one bounded-concurrency loop over images that `sync` and
//! `audit` share (each image on its own task of the process runtime, at
//! most N at a time, results in input order), which reports itself as
//! one `progress` task counting the images. Knows nothing of signatures;
//! draws nothing.
use std::future::Future;

use futures_util::StreamExt;

use crate::progress::{Progress, Task};

/// The id of the task counting the images handled.
pub const TASK: &str = "images";

/// Runs `work(i)` for every `i` below `total`, at most `concurrency` at a
/// time, each spawned on its own task; a task that panics gives
/// `failed(i, reason)` instead. Reports to `progress` a task of `total`
/// items, advanced after each; returns the results in index order.
pub fn for_each<R, F>(
    total: usize,
    concurrency: usize,
    progress: &dyn Progress,
    work: impl Fn(usize) -> F,
    failed: impl Fn(usize, String) -> R,
) -> Vec<R>
where
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let task = Task::images(progress, TASK, "signatures", Some(total as u64));
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
            task.advance(1);
        }
        results
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Event;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// Each event as `started 6`, `advanced 1`, `finished`.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Progress for Recorder {
        fn event(&self, event: Event<'_>) {
            let line = match event {
                Event::Started { id, total, .. } => format!("started {id} {total:?}"),
                Event::Advanced { id, amount } => format!("advanced {id} {amount}"),
                Event::Finished { id } => format!("finished {id}"),
                other => format!("{other:?}"),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn results_come_in_order_within_the_bound_and_a_panic_is_a_failure() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let seen = Recorder::default();
        let results = for_each(
            6,
            2,
            &seen,
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
        let mut want = vec!["started images Some(6)".to_string()];
        want.extend((0..6).map(|_| "advanced images 1".to_string()));
        want.push("finished images".into());
        assert_eq!(*seen.0.lock().unwrap(), want);
    }
}
