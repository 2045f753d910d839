//! Owns: the publish journal, a small JSON file of what earlier runs
//! pushed and verified: `(registry, repository, manifest digest, tag)`.
//! An image whose every tag is journaled with its digest is not asked
//! about again, so a no-change re-run of a large release sends no request
//! to a rate-limited registry. Entries are only added after the registry
//! reported our digest for the tag. Saved atomically (temp file, rename).
//!
//! Must not: be trusted for anything but skipping work (`--no-journal`
//! re-checks everything against the registries).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

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

    /// Writes the journal (no-op when disabled).
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File {
            version: VERSION,
            pushed: self.lock().clone(),
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
}
