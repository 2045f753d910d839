//! Owns: progress and warnings as events, the crate's ONE progress
//! channel. Library functions that take time (pulls and pushes, publish,
//! `sigs sync`/`audit`, sign) report through a `&dyn Progress` (tasks
//! counting bytes or items started, advanced, described, finished;
//! warnings) and never draw anything: rendering (bars, terminal detection)
//! lives in `cli/progress.rs`. `NoProgress` ignores everything.

/// What a task counts: bytes (transfers), items (packages), or items that
/// are images (drawn as `3/6 images`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unit {
    #[default]
    Bytes,
    Items,
    Images,
}

/// One thing that happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A task began: `id` is unique while it runs (a digest, a file name),
    /// `what` says it for humans (`pull core-jq 1a2b3c4d5e6f`), `total` in
    /// `unit`s when known.
    Started {
        id: &'a str,
        what: &'a str,
        total: Option<u64>,
        unit: Unit,
    },
    /// `amount` more of task `id` are done (in its unit).
    Advanced { id: &'a str, amount: u64 },
    /// Task `id` is now about `what` (the item in hand: `sign core-jq`).
    Described { id: &'a str, what: &'a str },
    /// Task `id` ended (done or failed).
    Finished { id: &'a str },
    /// Something the user should know that does not stop the work.
    Warning(&'a str),
}

/// Receives events; shared by worker threads.
pub trait Progress: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event<'_>) {}
}

/// A running task: reports `Started` on creation and `Finished` when
/// dropped, so an early error cannot leave a task open.
pub struct Task<'a> {
    progress: &'a dyn Progress,
    id: String,
}

impl<'a> Task<'a> {
    /// A task counting bytes.
    pub fn start(progress: &'a dyn Progress, id: &str, what: &str, total: Option<u64>) -> Self {
        Task::start_in(progress, id, what, total, Unit::Bytes)
    }

    /// A task counting items (packages, images).
    pub fn counting(progress: &'a dyn Progress, id: &str, what: &str, total: Option<u64>) -> Self {
        Task::start_in(progress, id, what, total, Unit::Items)
    }

    /// A task counting images (publish, `sigs`, sign).
    pub fn images(progress: &'a dyn Progress, id: &str, what: &str, total: Option<u64>) -> Self {
        Task::start_in(progress, id, what, total, Unit::Images)
    }

    fn start_in(
        progress: &'a dyn Progress,
        id: &str,
        what: &str,
        total: Option<u64>,
        unit: Unit,
    ) -> Self {
        progress.event(Event::Started {
            id,
            what,
            total,
            unit,
        });
        Task {
            progress,
            id: id.to_string(),
        }
    }

    /// `amount` more done, in the task's unit.
    pub fn advance(&self, amount: u64) {
        self.progress.event(Event::Advanced {
            id: &self.id,
            amount,
        });
    }

    /// The task is now about `what` (the item being worked on).
    pub fn describe(&self, what: &str) {
        self.progress.event(Event::Described { id: &self.id, what });
    }
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        self.progress.event(Event::Finished { id: &self.id });
    }
}

/// Reports a warning.
pub fn warn(progress: &dyn Progress, message: &str) {
    progress.event(Event::Warning(message));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Progress for Recorder {
        fn event(&self, event: Event<'_>) {
            self.0.lock().unwrap().push(format!("{event:?}"));
        }
    }

    #[test]
    fn a_task_finishes_even_on_early_return() {
        let recorder = Recorder::default();
        let failing = || -> Result<(), ()> {
            let task = Task::start(&recorder, "d1", "pull x", Some(10));
            task.advance(4);
            task.describe("pull y");
            Err(())
        };
        assert!(failing().is_err());
        warn(&recorder, "careful");
        let events = recorder.0.into_inner().unwrap();
        assert_eq!(events.len(), 5, "{events:?}");
        assert!(events[0].starts_with("Started"));
        assert!(events[0].contains("unit: Bytes"), "{events:?}");
        assert!(events[1].contains("amount: 4"));
        assert!(events[2].contains("what: \"pull y\""), "{events:?}");
        assert!(events[3].starts_with("Finished"));
        assert_eq!(events[4], "Warning(\"careful\")");
    }
}
