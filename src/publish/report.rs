//! Owns: what a publish run tells its caller: `progress` events while it
//! runs (the tasks below: bytes over all registries, images per registry
//! and per mirror; the CLI draws bars from them, the library draws
//! nothing; an upload's bytes counted once over its retries, `Uploading`)
//! and the final report, per registry and per mirror, with the
//! totals the release manager reads (images, tags, bytes uploaded, blobs mounted and skipped,
//! signatures uploaded, retries, failures). Serializable for `--json`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::progress::{Event, Progress};

/// The `progress` task counting the release's blob bytes in place (sent,
/// mounted or found) over every registry.
pub const BYTES_TASK: &str = "publish all registries";

/// The id of the `progress` task counting the images done on `registry`.
pub fn registry_task(registry: &str) -> String {
    format!("publish to registry {registry}")
}

/// The id of the `progress` task counting the images done on `mirror`.
pub fn mirror_task(mirror: &str) -> String {
    format!("publish to mirror {mirror}")
}

/// `bytes` more of the release are in place on a registry.
pub fn bytes_done(progress: &dyn Progress, bytes: u64) {
    progress.event(Event::Advanced {
        id: BYTES_TASK,
        amount: bytes,
    });
}

/// One more image is done (pushed or failed) on the destination whose
/// task is `task` (`registry_task`, `mirror_task`).
pub fn image_done(progress: &dyn Progress, task: &str) {
    progress.event(Event::Advanced {
        id: task,
        amount: 1,
    });
}

/// Upload progress of one blob, as bytes of publish's `BYTES_TASK`. Each
/// attempt starts a task again (the retry engine calls the upload anew);
/// an attempt reports
/// only the bytes past what earlier attempts already reported, so a retried
/// upload does not count its bytes twice and the bars stop at the release's
/// size.
pub struct Uploading<'a> {
    progress: &'a dyn Progress,
    /// Bytes sent by the current attempt.
    attempt: AtomicU64,
    /// Bytes reported so far (the most any attempt sent).
    reported: AtomicU64,
}

impl<'a> Uploading<'a> {
    pub fn new(progress: &'a dyn Progress) -> Uploading<'a> {
        Uploading {
            progress,
            attempt: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }
}

impl Progress for Uploading<'_> {
    fn event(&self, event: crate::progress::Event<'_>) {
        use crate::progress::Event as Task;
        match event {
            Task::Started { .. } => self.attempt.store(0, Ordering::Relaxed),
            Task::Advanced { amount, .. } => {
                let sent = self.attempt.fetch_add(amount, Ordering::Relaxed) + amount;
                let before = self.reported.fetch_max(sent, Ordering::Relaxed);
                if sent > before {
                    bytes_done(self.progress, sent - before);
                }
            }
            _ => {}
        }
    }
}

/// One image that failed on one registry or mirror.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Failed {
    pub image: String,
    pub error: String,
}

/// Counts for one registry destination.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RegistryReport {
    /// `host/namespace`.
    pub registry: String,
    pub images: u64,
    /// Images not asked about again: the journal has every tag.
    pub images_journaled: u64,
    pub tags_pushed: u64,
    pub tags_present: u64,
    pub manifests_pushed: u64,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub blobs_mounted: u64,
    pub bytes_mounted: u64,
    pub blobs_skipped: u64,
    pub retries: u64,
    pub failed: Vec<Failed>,
}

/// Counts for one signature mirror.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct MirrorReport {
    pub mirror: String,
    pub images: u64,
    pub signatures_uploaded: u64,
    pub signatures_present: u64,
    pub failed: Vec<Failed>,
    /// Images whose signatures were not uploaded, and why (their push
    /// failed on every registry).
    pub skipped: Vec<Failed>,
}

/// Totals over every registry and mirror.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub images: u64,
    pub tags_pushed: u64,
    pub tags_present: u64,
    pub bytes_uploaded: u64,
    pub blobs_uploaded: u64,
    pub blobs_mounted: u64,
    pub blobs_skipped: u64,
    pub signatures_uploaded: u64,
    pub retries: u64,
    pub failures: u64,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PublishReport {
    pub release: Option<String>,
    pub dry_run: bool,
    pub registries: Vec<RegistryReport>,
    pub mirrors: Vec<MirrorReport>,
    pub summary: Summary,
    /// Notes worth reading (an ignored journal, ...).
    pub notes: Vec<String>,
}

impl PublishReport {
    /// Fills `summary` from the per-registry and per-mirror reports.
    pub fn total(&mut self, images: u64) {
        let r = &self.registries;
        let sum = |f: fn(&RegistryReport) -> u64| r.iter().map(f).sum::<u64>();
        self.summary = Summary {
            images,
            tags_pushed: sum(|r| r.tags_pushed),
            tags_present: sum(|r| r.tags_present),
            bytes_uploaded: sum(|r| r.bytes_uploaded),
            blobs_uploaded: sum(|r| r.blobs_uploaded),
            blobs_mounted: sum(|r| r.blobs_mounted),
            blobs_skipped: sum(|r| r.blobs_skipped),
            signatures_uploaded: self.mirrors.iter().map(|m| m.signatures_uploaded).sum(),
            retries: sum(|r| r.retries),
            failures: sum(|r| r.failed.len() as u64)
                + self
                    .mirrors
                    .iter()
                    .map(|m| m.failed.len() as u64)
                    .sum::<u64>(),
        };
    }

    pub fn ok(&self) -> bool {
        self.summary.failures == 0
    }
}

/// Counters workers add to while a registry is pushed.
#[derive(Debug, Default)]
pub struct Counters {
    pub images: AtomicU64,
    pub images_journaled: AtomicU64,
    pub tags_pushed: AtomicU64,
    pub tags_present: AtomicU64,
    pub manifests_pushed: AtomicU64,
    pub blobs_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub blobs_mounted: AtomicU64,
    pub bytes_mounted: AtomicU64,
    pub blobs_skipped: AtomicU64,
    pub failed: Mutex<Vec<Failed>>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn fail(&self, image: &str, error: String) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Failed {
                image: image.to_string(),
                error,
            });
    }

    /// The report of `registry` (retries come from its budget).
    pub fn report(&self, registry: &str, retries: u64) -> RegistryReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        failed.sort_by(|a, b| a.image.cmp(&b.image));
        RegistryReport {
            registry: registry.to_string(),
            images: get(&self.images),
            images_journaled: get(&self.images_journaled),
            tags_pushed: get(&self.tags_pushed),
            tags_present: get(&self.tags_present),
            manifests_pushed: get(&self.manifests_pushed),
            blobs_uploaded: get(&self.blobs_uploaded),
            bytes_uploaded: get(&self.bytes_uploaded),
            blobs_mounted: get(&self.blobs_mounted),
            bytes_mounted: get(&self.bytes_mounted),
            blobs_skipped: get(&self.blobs_skipped),
            retries,
            failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the bytes of every advance of publish's `BYTES_TASK`.
    #[derive(Default)]
    struct Bytes(Mutex<Vec<u64>>);

    impl Progress for Bytes {
        fn event(&self, event: crate::progress::Event<'_>) {
            if let crate::progress::Event::Advanced { id, amount } = event {
                assert_eq!(id, BYTES_TASK);
                self.0.lock().unwrap().push(amount);
            }
        }
    }

    #[test]
    fn a_retried_upload_reports_its_bytes_once() {
        use crate::progress::{Event as Task, Unit};
        let seen = Bytes::default();
        let uploading = Uploading::new(&seen);
        let start = || {
            uploading.event(Task::Started {
                id: "blob",
                what: "push",
                total: Some(10),
                unit: Unit::Bytes,
            })
        };
        let advance = |amount| uploading.event(Task::Advanced { id: "blob", amount });
        start();
        advance(4);
        advance(3);
        // The connection broke at 7 of 10; the retry sends all 10 again.
        start();
        advance(4);
        advance(6);
        assert_eq!(*seen.0.lock().unwrap(), vec![4, 3, 3]);
        assert_eq!(seen.0.lock().unwrap().iter().sum::<u64>(), 10);
    }

    #[test]
    fn totals_add_registries_and_mirrors() {
        let counters = Counters::default();
        Counters::add(&counters.images, 2);
        Counters::add(&counters.tags_pushed, 6);
        Counters::add(&counters.bytes_uploaded, 100);
        Counters::add(&counters.blobs_mounted, 3);
        counters.fail("core-b", "boom".into());
        counters.fail("core-a", "bang".into());
        let first = counters.report("h/ns", 4);
        assert_eq!(first.failed[0].image, "core-a", "failures sorted by image");
        let mut report = PublishReport {
            registries: vec![first.clone(), first],
            mirrors: vec![MirrorReport {
                signatures_uploaded: 5,
                failed: vec![Failed {
                    image: "x".into(),
                    error: "401".into(),
                }],
                ..MirrorReport::default()
            }],
            ..PublishReport::default()
        };
        report.total(2);
        let s = &report.summary;
        assert_eq!(
            (s.images, s.tags_pushed, s.bytes_uploaded, s.blobs_mounted),
            (2, 12, 200, 6)
        );
        assert_eq!((s.retries, s.signatures_uploaded, s.failures), (8, 5, 5));
        assert!(!report.ok());
    }
}
