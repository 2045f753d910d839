//! Owns: the publish journal, a small JSON file of what earlier runs
//! pushed and verified: `(registry, repository, manifest digest, tag)`.
//! An image whose every tag is journaled with its digest is not asked
//! about again, so a no-change re-run of a large release sends no request
//! to a rate-limited registry. Entries are only added after the registry
//! reported our digest for the tag. Saved atomically (temp file, rename),
//! merged with what the file holds then, under a `flock` on
//! `<file>.lock` (`file_lock`), so two publishes from one checkout at
//! once keep both runs' entries.
//!
//! Must not: be trusted for anything but skipping work (`--no-journal`
//! re-checks everything against the registries).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::file_lock::lock_exclusive;

/// One pushed and verified tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub tag: String,
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    version: u32,
    pushed: BTreeSet<Entry>,
}

const VERSION: u32 = 1;

/// How long a save waits for another run's save of the same journal.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The journal of one repository root.
#[derive(Debug, Default)]
pub struct Journal {
    path: Option<PathBuf>,
    entries: Mutex<BTreeSet<Entry>>,
    /// Why an existing file was ignored (unreadable or another version).
    pub ignored: Option<String>,
}

impl Journal {
    /// A journal that remembers nothing and saves nothing.
    pub fn disabled() -> Journal {
        Journal::default()
    }

    /// Loads `path` (missing = empty). A damaged file is ignored, not
    /// fatal: it only ever saves requests.
    pub fn load(path: &Path) -> Journal {
        let mut journal = Journal {
            path: Some(path.to_path_buf()),
            ..Journal::default()
        };
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(file) if file.version == VERSION => {
                    journal.entries = Mutex::new(file.pushed);
                }
                Ok(file) => {
                    journal.ignored = Some(format!(
                        "{}: journal version {} (expected {VERSION}), ignored",
                        path.display(),
                        file.version
                    ))
                }
                Err(e) => journal.ignored = Some(format!("{}: {e}, ignored", path.display())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => journal.ignored = Some(format!("{}: {e}, ignored", path.display())),
        }
        journal
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn contains(&self, entry: &Entry) -> bool {
        self.lock().contains(entry)
    }

    pub fn record(&self, entry: Entry) {
        self.lock().insert(entry);
    }

    /// Every `(repository, digest)` journaled on `registry`.
    pub fn manifests_on(&self, registry: &str) -> Vec<(String, String)> {
        let set: BTreeSet<(String, String)> = self
            .lock()
            .iter()
            .filter(|e| e.registry == registry)
            .map(|e| (e.repository.clone(), e.digest.clone()))
            .collect();
        set.into_iter().collect()
    }

    /// Writes the journal with the entries another run saved meanwhile
    /// (no-op when disabled). Waits at most `LOCK_WAIT` for another
    /// run's save; past it, or where there is no `flock`, it writes its
    /// merge anyway (a lost entry only costs a request next time).
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let lock_file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.with_extension("json.lock"))?;
        let _held = lock_exclusive(lock_file, LOCK_WAIT)?;
        let mut pushed = self.lock().clone();
        pushed.extend(Journal::load(path).lock().iter().cloned());
        let file = File {
            version: VERSION,
            pushed,
        };
        crate::oci::layout::write_atomic(path, &serde_json::to_vec_pretty(&file)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: &str) -> Entry {
        Entry {
            registry: "r:1".into(),
            repository: "ns/x".into(),
            digest: "sha256:ab".into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn saves_loads_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j/journal.json");
        let j = Journal::load(&path);
        assert!(j.ignored.is_none() && !j.contains(&entry("1")));
        j.record(entry("1"));
        j.save().unwrap();
        let j = Journal::load(&path);
        assert!(j.contains(&entry("1")) && !j.contains(&entry("2")));
        assert_eq!(
            j.manifests_on("r:1"),
            vec![("ns/x".to_string(), "sha256:ab".to_string())]
        );
        std::fs::write(&path, b"{not json").unwrap();
        let j = Journal::load(&path);
        assert!(j.ignored.is_some() && !j.contains(&entry("1")));
        Journal::disabled().save().unwrap();
    }

    /// Two runs loaded the journal before either saved: after both saves
    /// it holds both runs' entries (before, the second save dropped the
    /// first's).
    #[test]
    fn two_runs_saving_one_journal_keep_both_runs_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        let (first, second) = (Journal::load(&path), Journal::load(&path));
        first.record(entry("1"));
        second.record(entry("2"));
        first.save().unwrap();
        second.save().unwrap();
        let both = Journal::load(&path);
        assert!(both.contains(&entry("1")) && both.contains(&entry("2")));
    }
}
