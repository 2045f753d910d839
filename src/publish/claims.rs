//! Owns: publish's single-flight upload claims on one registry host: which
//! repositories are known to hold a blob (the mount sources), and which
//! blobs are being uploaded right now. The first worker to miss a blob
//! claims its upload; the others wait and then mount from the uploader's
//! repository. A claim ends on every path (`UploadClaim`), so no waiter
//! blocks forever.
//!
//! Must not: talk to a registry (the caller pushes through the registry
//! client's blob push rule, with the sources a claim gives).
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use crate::oci::digest::Digest;

/// Where a blob is known to live on one registry host, and which blobs are
/// being uploaded right now (single flight).
#[derive(Default)]
pub struct Holders {
    map: Mutex<HashMap<Digest, Slot>>,
    changed: Condvar,
}

enum Slot {
    InFlight,
    Held(Vec<String>),
}

/// What a worker should do about a blob its repository lacks.
pub enum Claim {
    /// Nobody has it: upload it, then call `finish`.
    Upload,
    /// These repositories hold it: mount.
    MountFrom(Vec<String>),
}

impl Holders {
    /// Records that `repo` holds `digest`.
    pub fn add(&self, digest: &Digest, repo: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(digest) {
            Some(Slot::Held(repos)) => {
                if !repos.iter().any(|r| r == repo) {
                    repos.push(repo.to_string());
                }
            }
            _ => {
                map.insert(digest.clone(), Slot::Held(vec![repo.to_string()]));
            }
        }
        self.changed.notify_all();
    }

    /// Repositories known to hold `digest` (none while in flight).
    pub fn known(&self, digest: &Digest) -> Vec<String> {
        match self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            Some(Slot::Held(repos)) => repos.clone(),
            _ => Vec::new(),
        }
    }

    /// What `repo`, lacking `digest`, should do: upload it (nobody holds
    /// it or is uploading it) or mount it; waits while another upload of
    /// it is in flight.
    pub fn claim(&self, digest: &Digest, repo: &str) -> Claim {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match map.get(digest) {
                None => {
                    map.insert(digest.clone(), Slot::InFlight);
                    return Claim::Upload;
                }
                Some(Slot::Held(repos)) => {
                    return Claim::MountFrom(repos.iter().filter(|r| *r != repo).cloned().collect())
                }
                Some(Slot::InFlight) => {
                    map = self.changed.wait(map).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Ends an `Upload` claim: `Some(repo)` now holds it, `None` failed.
    fn finish(&self, digest: &Digest, holder: Option<&str>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match holder {
            Some(repo) => {
                map.insert(digest.clone(), Slot::Held(vec![repo.to_string()]));
            }
            None => {
                map.remove(digest);
            }
        }
        self.changed.notify_all();
    }
}

/// An `Upload` claim that ends on every path: `finish`, or failed when
/// dropped unfinished (an error path that forgot it, an unwinding panic),
/// so no waiter blocks forever.
pub struct UploadClaim<'a> {
    holders: &'a Holders,
    digest: &'a Digest,
    finished: bool,
}

impl<'a> UploadClaim<'a> {
    pub fn new(holders: &'a Holders, digest: &'a Digest) -> UploadClaim<'a> {
        UploadClaim {
            holders,
            digest,
            finished: false,
        }
    }

    /// `Some(repo)`: the upload succeeded and `repo` holds the blob;
    /// `None`: it failed, the next claimant uploads.
    pub fn finish(mut self, holder: Option<&str>) {
        self.finished = true;
        self.holders.finish(self.digest, holder);
    }
}

impl Drop for UploadClaim<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.holders.finish(self.digest, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_per_blob_others_mount() {
        let holders = Holders::default();
        let d = Digest::of_bytes(b"layer");
        assert!(matches!(holders.claim(&d, "ns/a"), Claim::Upload));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| holders.claim(&d, "ns/b"));
            holders.finish(&d, Some("ns/a"));
            match waiter.join().unwrap() {
                Claim::MountFrom(from) => assert_eq!(from, vec!["ns/a".to_string()]),
                Claim::Upload => panic!("the waiter must mount"),
            }
        });
        // A failed upload lets the next claimant upload.
        let e = Digest::of_bytes(b"other");
        assert!(matches!(holders.claim(&e, "ns/a"), Claim::Upload));
        holders.finish(&e, None);
        assert!(matches!(holders.claim(&e, "ns/b"), Claim::Upload));
    }

    #[test]
    fn an_upload_claim_dropped_unfinished_releases_its_waiters() {
        let holders = Holders::default();
        let d = Digest::of_bytes(b"panicked");
        assert!(matches!(holders.claim(&d, "ns/a"), Claim::Upload));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| holders.claim(&d, "ns/b"));
            // The uploader unwinds (a panic) without calling finish.
            drop(UploadClaim::new(&holders, &d));
            assert!(matches!(waiter.join().unwrap(), Claim::Upload));
        });
    }
}
