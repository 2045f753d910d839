//! Owns: pushing release images to registry destinations, in parallel and
//! resumably. Per image and destination (a `Target`): every blob first,
//! through the registry client's one blob push rule (HEAD: skip what the
//! repository has; mount from another repository of the same registry
//! that holds it; upload otherwise, streamed in constant memory), then the
//! child manifests by digest and the root under each tag as their exact
//! bytes, then a read-back: the digest the registry serves for each tag
//! (HEAD, its `Docker-Content-Digest`) must be ours, or the image fails.
//!
//! What is read from `out/` again, and why that is safe: index and
//! manifest bytes are NOT: they are the ones the integrity check hashed,
//! carried in `ReleaseImage::documents`, so a `stagex build` rewriting
//! `out/<id>` after the load neither changes nor loses one (it used to
//! fail a release halfway). Configs and layers ARE streamed again from
//! `ReleaseImage::layout` (too large to hold): the upload hashes what it
//! reads and aborts on a mismatch, and the registry refuses bytes that do
//! not hash to the digest; a blob gone since the check fails that image
//! naming the file, never sends other bytes.
//! Every call goes through the retry engine (one budget per registry
//! host). A failed image is reported and does not stop the others.
//!
//! Concurrency: `jobs` worker threads take (destination, image) pairs from
//! one queue and share one client per registry host (its connections and
//! cached tokens); an image's blobs go up to `BLOB_JOBS` at a time. Uploads of
//! one blob to several repositories of a host are single-flight
//! (`claims`): the first uploads, the others wait and mount from it.
//!
//! `--dry-run` is the same walk (`Run::dry_run`): every read is made (HEAD
//! of blobs and tags) and every write (upload, mount, manifest, tag) is
//! counted instead of sent, so the plan is what a push would do.
//!
//! Must not: check signatures (the gate did), decide what a refused mount
//! means (the registry client's rule does) or draw progress (events).
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::claims::{Claim, Holders, UploadClaim};
use super::journal::{Entry, Journal};
use super::release::ReleaseImage;
use super::report::{self, Counters, Uploading};
use super::Request;
use crate::net::retry::{retry, Budget, Exhausted};
use crate::net::RegistryError;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::progress::{Progress, Task};
use crate::registry::push::Calls;
use crate::registry::{BlobPush, RegistryClient};

/// A registry namespace to publish into: `host[:port]/namespace`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RegistryNamespace {
    pub host: String,
    pub namespace: String,
}

impl RegistryNamespace {
    /// Parses `HOST[:PORT]/NAMESPACE`.
    pub fn parse(text: &str) -> anyhow::Result<RegistryNamespace> {
        let (host, namespace) = crate::registry::split_repository(text.trim_end_matches('/'))?;
        Ok(RegistryNamespace { host, namespace })
    }

    /// The repository of image `name` (`stagex/core-busybox`).
    pub fn repository(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }
}

impl std::fmt::Display for RegistryNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.namespace)
    }
}

/// Shared state of one registry host.
pub struct Host {
    pub budget: Budget,
    pub holders: Holders,
}

/// Everything the workers share.
pub struct Run<'a> {
    pub images: &'a [ReleaseImage],
    pub destinations: &'a [RegistryNamespace],
    /// Tags per image (index into `images`).
    pub tags: &'a [Vec<String>],
    pub journal: &'a Journal,
    pub progress: &'a dyn Progress,
    pub hosts: BTreeMap<String, Host>,
    /// Per destination (same order).
    pub counters: Vec<Counters>,
    /// Images finished (any destination), for periodic journal saves.
    finished: AtomicUsize,
    /// Count the writes instead of sending them (`--dry-run`).
    pub dry_run: bool,
}

/// The journal is written after this many finished images, so an
/// interrupted run keeps most of what it learned.
const JOURNAL_EVERY: usize = 50;

impl<'a> Run<'a> {
    /// The run of `request` (its destinations, retry policy, dry run) over
    /// `images`, with their `tags` (same order).
    pub fn new(
        request: &'a Request,
        images: &'a [ReleaseImage],
        tags: &'a [Vec<String>],
        journal: &'a Journal,
        progress: &'a dyn Progress,
    ) -> Run<'a> {
        let mut hosts = BTreeMap::new();
        for d in &request.destinations {
            hosts.entry(d.host.clone()).or_insert_with(|| Host {
                budget: Budget::new(request.policy),
                holders: Holders::default(),
            });
        }
        for (host, state) in &hosts {
            journaled_holders(journal, images, host, &state.holders);
        }
        Run {
            images,
            destinations: &request.destinations,
            tags,
            journal,
            progress,
            hosts,
            counters: request
                .destinations
                .iter()
                .map(|_| Counters::default())
                .collect(),
            finished: AtomicUsize::new(0),
            dry_run: request.dry_run,
        }
    }

    pub(crate) fn host(&self, dest: &RegistryNamespace) -> &Host {
        &self.hosts[&dest.host]
    }

    /// True when the journal has every tag of `image` on `dest`.
    pub(crate) fn journaled(&self, dest: &RegistryNamespace, image: usize) -> bool {
        let repo = dest.repository(&self.images[image].name);
        let digest = self.images[image].root.digest.to_string();
        self.tags[image].iter().all(|tag| {
            self.journal.contains(&Entry {
                registry: dest.host.clone(),
                repository: repo.clone(),
                digest: digest.clone(),
                tag: tag.clone(),
            })
        })
    }
}

/// What earlier runs pushed to `host` is a mount source for new
/// repositories: every blob of an image whose root the journal has there.
fn journaled_holders(journal: &Journal, images: &[ReleaseImage], host: &str, holders: &Holders) {
    for (repo, digest) in journal.manifests_on(host) {
        for image in images
            .iter()
            .filter(|i| i.root.digest.to_string() == digest)
        {
            for blob in &image.blobs {
                holders.add(&blob.digest, &repo);
            }
        }
    }
}

/// Why one image could not be pushed to one destination (reported per
/// image; the others go on).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A registry call failed for good: what failed and why the retry
    /// engine stopped.
    #[error("{0}")]
    Registry(Box<Exhausted<RegistryError>>),
    /// No client for the host (configuration, credentials); shared by
    /// every image of the host.
    #[error("{0:#}")]
    Client(Arc<RegistryError>),
    /// A manifest the release lists without the checked bytes (a bug of
    /// the release walk: it lists only documents the check read).
    #[error("manifest {digest} of {image} is not among the documents the integrity check read; nothing of it was sent (a bug: please report it)")]
    NotChecked { image: String, digest: Box<Digest> },
    /// `tag` is `host/repo:tag`.
    #[error("{tag}: pushed, but checking what the registry serves failed: {error}")]
    ReadBack { tag: String, error: Box<PushError> },
    #[error(
        "{tag}: the registry serves {} after the push, ours is {ours} (a registry or proxy rewrote the manifest)",
        .served.as_ref().map_or("nothing".to_string(), |d| d.to_string())
    )]
    Rewritten {
        tag: String,
        served: Option<Box<Digest>>,
        ours: Box<Digest>,
    },
    #[error("blob {digest}: {error}")]
    Blob {
        digest: Digest,
        error: Box<PushError>,
    },
}

/// One client per registry host, shared by every worker of the run: the
/// credentials (auth files, credential helpers) are read once per host,
/// not once per worker and phase. A host's client is made outside the map's
/// lock (a slow credential helper holds up only its own host), and a
/// failure is kept too: every image of that host reports it at once
/// instead of running a failing or hanging helper again per image.
#[derive(Default)]
struct Clients(Mutex<HashMap<String, Arc<OnceClient>>>);

type OnceClient = std::sync::OnceLock<Result<Arc<RegistryClient>, Arc<RegistryError>>>;

impl Clients {
    fn get(&self, host: &str) -> Result<Arc<RegistryClient>, PushError> {
        let once = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_string())
            .or_default()
            .clone();
        once.get_or_init(|| RegistryClient::new(host).map(Arc::new).map_err(Arc::new))
            .clone()
            .map_err(PushError::Client)
    }
}

/// Runs `f(clients, destination, image)` for every pair on `jobs` worker
/// threads, in phases: phase N holds the N-th destination of every host,
/// so the first namespace of a registry gets the uploads and the next ones
/// (a phase later) mount from it, every time, while different registries
/// are pushed side by side.
fn for_each_pair(run: &Run<'_>, jobs: usize, f: impl Fn(&Clients, usize, usize) + Sync) {
    let clients = Clients::default();
    let mut rank = vec![0usize; run.destinations.len()];
    for (d, dest) in run.destinations.iter().enumerate() {
        rank[d] = run.destinations[..d]
            .iter()
            .filter(|o| o.host == dest.host)
            .count();
    }
    let phases = rank.iter().max().map_or(0, |m| m + 1);
    for phase in 0..phases {
        let work: Vec<(usize, usize)> = largest_first(run.images)
            .into_iter()
            .flat_map(|i| {
                let rank = &rank;
                (0..run.destinations.len())
                    .filter(move |&d| rank[d] == phase)
                    .map(move |d| (d, i))
            })
            .collect();
        crate::parallel::map_with(jobs, &work, |&(d, i)| f(&clients, d, i));
    }
}

/// Image indexes, the most blob bytes first (ties in release order): the
/// big images start early, so the run does not end waiting on one of them
/// while the others are done.
fn largest_first(images: &[ReleaseImage]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(images[i].blob_bytes()));
    order
}

/// Pushes (or, dry run, plans) every image to every destination with
/// `jobs` workers.
pub fn push_all(run: &Run<'_>, jobs: usize) {
    let _tasks = (!run.dry_run).then(|| progress_tasks(run));
    for_each_pair(run, jobs, |clients, d, i| push_one(run, clients, d, i));
}

/// The run's `progress` tasks: the blob bytes over every destination, and
/// the images of each; they finish when dropped.
fn progress_tasks<'a>(run: &Run<'a>) -> Vec<Task<'a>> {
    let images = run.images.len() as u64;
    let bytes: u64 = run.images.iter().map(ReleaseImage::blob_bytes).sum();
    let all = bytes * run.destinations.len() as u64;
    let mut tasks = vec![Task::start(
        run.progress,
        report::BYTES_TASK,
        "all registries",
        Some(all),
    )];
    for dest in run.destinations {
        let registry = dest.to_string();
        let id = report::registry_task(&registry);
        tasks.push(Task::images(run.progress, &id, &registry, Some(images)));
    }
    tasks
}

/// Image `i` to destination `d`, unless the journal has it; a failure is
/// counted for the report.
fn push_one(run: &Run<'_>, clients: &Clients, d: usize, i: usize) {
    let dest = &run.destinations[d];
    let counters = &run.counters[d];
    Counters::add(&counters.images, 1);
    let result = if run.journaled(dest, i) {
        Counters::add(&counters.images_journaled, 1);
        Ok(())
    } else {
        clients
            .get(&dest.host)
            .and_then(|client| Target::new(run, &client, d, i).push())
    };
    if let Err(error) = result {
        counters.fail(&run.images[i].name, error.to_string());
    }
    if (run.finished.fetch_add(1, Ordering::Relaxed) + 1) % JOURNAL_EVERY == 0 && !run.dry_run {
        // Best effort: the final save reports a failure.
        let _ = run.journal.save();
    }
    report::image_done(run.progress, &report::registry_task(&dest.to_string()));
}

/// One image going to one destination: what every step of its push
/// shares. Its registry calls go through the host's retry budget (`Calls`).
struct Target<'a> {
    run: &'a Run<'a>,
    client: &'a RegistryClient,
    dest: &'a RegistryNamespace,
    /// The destination's host: its retry budget and upload claims.
    host: &'a Host,
    /// `namespace/name` on the destination.
    repo: String,
    counters: &'a Counters,
    progress: &'a dyn Progress,
    /// Count the writes instead of sending them.
    dry_run: bool,
    image: &'a ReleaseImage,
    tags: &'a [String],
}

impl Calls for Target<'_> {
    type Error = PushError;

    /// Runs `op` under the host's retry budget; the error names what
    /// failed and why the engine stopped.
    fn call<T>(&self, op: impl FnMut() -> Result<T, RegistryError>) -> Result<T, PushError> {
        retry(&self.host.budget, op).map_err(|e| PushError::Registry(Box::new(e)))
    }
}

/// Blobs of one image pushed at once (on top of the images in parallel).
const BLOB_JOBS: usize = 4;

impl<'a> Target<'a> {
    fn new(run: &'a Run<'a>, client: &'a RegistryClient, d: usize, i: usize) -> Target<'a> {
        let dest = &run.destinations[d];
        let image = &run.images[i];
        Target {
            run,
            client,
            dest,
            host: run.host(dest),
            repo: dest.repository(&image.name),
            counters: &run.counters[d],
            progress: run.progress,
            dry_run: run.dry_run,
            image,
            tags: &run.tags[i],
        }
    }

    fn root(&self) -> &'a Descriptor {
        self.image
            .manifests
            .last()
            .expect("the root manifest is last")
    }

    /// The image: blobs, child manifests, tags (each step only if needed).
    fn push(&self) -> Result<(), PushError> {
        // The first tag serving our digest means the registry holds the
        // whole image (it refuses a manifest whose blobs or children it
        // lacks): no blob is asked about (a re-run without the journal
        // costs one HEAD per tag). Otherwise the blobs go first; when
        // every one was there already, the other tags may still serve our
        // digest.
        let first_served = self.tags.first().is_some_and(|tag| self.serves(tag));
        let all_there = if first_served {
            self.held_already();
            true
        } else {
            self.push_blobs()?
        };
        let present: Vec<bool> = (0..self.tags.len())
            .map(|n| match n {
                0 => first_served,
                _ => all_there && self.serves(&self.tags[n]),
            })
            .collect();
        if present.iter().any(|p| !p) {
            self.push_children()?;
        }
        self.push_tags(&present)
    }

    /// True when `tag` serves our root digest. Unreadable counts as not
    /// served: the push that follows names the failure if it persists.
    fn serves(&self, tag: &str) -> bool {
        self.served_digest(tag)
            .is_ok_and(|d| d.as_ref() == Some(&self.root().digest))
    }

    /// The digest of what the registry serves for `repo:tag`: None when it
    /// answers that there is none; any other failure (after retries) is
    /// the error, naming what failed.
    fn served_digest(&self, tag: &str) -> Result<Option<Digest>, PushError> {
        match retry(&self.host.budget, || {
            self.client.manifest_digest(&self.repo, tag)
        }) {
            Ok(digest) => Ok(Some(digest)),
            Err(e) if e.error.is_not_found() => Ok(None),
            Err(e) => Err(PushError::Registry(Box::new(e))),
        }
    }

    /// The manifests below the root, by digest.
    fn push_children(&self) -> Result<(), PushError> {
        let children = &self.image.manifests[..self.image.manifests.len() - 1];
        for child in children {
            if !self.dry_run {
                let bytes = self.document(&child.digest)?;
                let reference = child.digest.to_string();
                self.call(|| {
                    self.client
                        .push_manifest(&self.repo, &reference, bytes, &child.media_type)
                })?;
            }
            Counters::add(&self.counters.manifests_pushed, 1);
        }
        Ok(())
    }

    /// Every tag not `present` gets the root; every tag is journaled.
    fn push_tags(&self, present: &[bool]) -> Result<(), PushError> {
        // The root's checked bytes, needed only when a tag is to be
        // pushed for real.
        let root_bytes = match present.iter().any(|p| !p) && !self.dry_run {
            true => Some(self.document(&self.root().digest)?),
            false => None,
        };
        for (tag, present) in self.tags.iter().zip(present) {
            if *present {
                Counters::add(&self.counters.tags_present, 1);
            } else {
                Counters::add(&self.counters.tags_pushed, 1);
                if let Some(bytes) = root_bytes {
                    self.push_tag(tag, bytes)?;
                }
            }
            if !self.dry_run {
                self.run.journal.record(Entry {
                    registry: self.dest.host.clone(),
                    repository: self.repo.clone(),
                    digest: self.root().digest.to_string(),
                    tag: tag.clone(),
                });
            }
        }
        Ok(())
    }

    /// Pushes the root manifest `bytes` under `tag`, then reads back the
    /// digest the registry serves for it: it must be ours.
    fn push_tag(&self, tag: &str, bytes: &[u8]) -> Result<(), PushError> {
        let root = self.root();
        self.call(|| {
            self.client
                .push_manifest(&self.repo, tag, bytes, &root.media_type)
        })?;
        let at = format!("{}/{}:{tag}", self.dest.host, self.repo);
        let served = self
            .served_digest(tag)
            .map_err(|error| PushError::ReadBack {
                tag: at.clone(),
                error: Box::new(error),
            })?;
        match served {
            Some(got) if got == root.digest => Ok(()),
            served => Err(PushError::Rewritten {
                tag: at,
                served: served.map(Box::new),
                ours: Box::new(root.digest.clone()),
            }),
        }
    }

    /// The checked bytes of index or manifest `digest` (never `out/`).
    fn document(&self, digest: &Digest) -> Result<&'a [u8], PushError> {
        self.image
            .document(digest)
            .ok_or_else(|| PushError::NotChecked {
                image: self.image.name.clone(),
                digest: Box::new(digest.clone()),
            })
    }

    /// Counts every blob of the image as present (a tag proved it).
    fn held_already(&self) {
        for blob in &self.image.blobs {
            self.counted(blob, BlobPush::Existed);
        }
    }

    /// Every blob of the image, up to `BLOB_JOBS` at a time; true when
    /// every one was already there.
    fn push_blobs(&self) -> Result<bool, PushError> {
        let one = |blob: &Descriptor| {
            let pushed = match self.dry_run {
                true => self.plan_blob(blob),
                false => self.push_blob(blob),
            };
            pushed.map_err(|error| PushError::Blob {
                digest: blob.digest.clone(),
                error: Box::new(error),
            })
        };
        crate::parallel::map_with(BLOB_JOBS, &self.image.blobs, one)
            .into_iter()
            .try_fold(true, |all, r| Ok(all & r?))
    }

    /// `blob` through the registry client's rule, inside this host's
    /// single-flight claims: the first repository to miss it uploads, the
    /// others wait and mount from it. True when it was there already.
    fn push_blob(&self, blob: &Descriptor) -> Result<bool, PushError> {
        // An upload's bytes reach the progress as they are sent (once
        // over retries); a blob mounted or already there counts at once.
        let uploading = Uploading::new(self.progress);
        let holders = &self.host.holders;
        // Asked only when the repository lacks the blob.
        let mut claim = None;
        let mount_from = || match holders.claim(&blob.digest, &self.repo) {
            Claim::MountFrom(sources) => sources,
            Claim::Upload => {
                claim = Some(UploadClaim::new(holders, &blob.digest));
                Vec::new()
            }
        };
        let layout = &self.image.layout;
        let pushed = self
            .client
            .push_blob_with(self, &self.repo, blob, layout, &uploading, mount_from);
        // Waiters for this blob are released on every path (a panic too:
        // the claim's drop).
        if let Some(claim) = claim {
            claim.finish(pushed.as_ref().ok().map(|_| self.repo.as_str()));
        }
        let pushed = pushed?;
        self.counted(blob, pushed);
        Ok(pushed == BlobPush::Existed)
    }

    /// What a push would do with `blob` (dry run): the HEAD is made; a
    /// missing blob counts as mounted when another repository of the host
    /// holds it (or would, earlier in the plan), else as uploaded.
    fn plan_blob(&self, blob: &Descriptor) -> Result<bool, PushError> {
        if !self.call(|| self.client.needs_blob(&self.repo, &blob.digest))? {
            self.counted(blob, BlobPush::Existed);
            return Ok(true);
        }
        let holders = &self.host.holders;
        if holders.known(&blob.digest).iter().any(|r| *r != self.repo) {
            self.counted(blob, BlobPush::Mounted);
        } else {
            self.counted(blob, BlobPush::Uploaded(blob.size));
        }
        Ok(false)
    }

    /// Counts what happened to `blob`; the repository holds it from now on
    /// (a mount source). Bytes found or mounted reach the progress here;
    /// uploaded ones did as they were sent.
    fn counted(&self, blob: &Descriptor, pushed: BlobPush) {
        let c = self.counters;
        self.host.holders.add(&blob.digest, &self.repo);
        match pushed {
            BlobPush::Existed => Counters::add(&c.blobs_skipped, 1),
            BlobPush::Mounted => {
                Counters::add(&c.blobs_mounted, 1);
                Counters::add(&c.bytes_mounted, blob.size);
            }
            BlobPush::Uploaded(bytes) => {
                Counters::add(&c.blobs_uploaded, 1);
                Counters::add(&c.bytes_uploaded, bytes);
            }
        }
        if !matches!(pushed, BlobPush::Uploaded(_)) {
            report::bytes_done(self.progress, blob.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_errors_name_the_tag_and_both_digests() {
        let ours = Digest::of_bytes(b"ours");
        let theirs = Digest::of_bytes(b"theirs");
        let rewritten = PushError::Rewritten {
            tag: "127.0.0.1:5000/stagex/core-x:1".into(),
            served: Some(Box::new(theirs.clone())),
            ours: Box::new(ours.clone()),
        };
        assert_eq!(
            rewritten.to_string(),
            format!("127.0.0.1:5000/stagex/core-x:1: the registry serves {theirs} after the push, ours is {ours} (a registry or proxy rewrote the manifest)")
        );
        let blob = PushError::Blob {
            digest: ours.clone(),
            error: Box::new(PushError::Rewritten {
                tag: "h/r:t".into(),
                served: None,
                ours: Box::new(ours.clone()),
            }),
        };
        assert!(blob.to_string().starts_with(&format!(
            "blob {ours}: h/r:t: the registry serves nothing after"
        )));
    }

    #[test]
    fn a_document_missing_from_the_release_is_named_and_not_read_from_out() {
        let digest = Digest::of_bytes(b"manifest");
        let error = PushError::NotChecked {
            image: "core-x".into(),
            digest: Box::new(digest.clone()),
        };
        assert!(error.to_string().starts_with(&format!(
            "manifest {digest} of core-x is not among the documents the integrity check read"
        )));
    }

    #[test]
    fn destinations_parse_and_name_repositories() {
        let d = RegistryNamespace::parse("127.0.0.1:5000/stagex/").unwrap();
        assert_eq!(d.host, "127.0.0.1:5000");
        assert_eq!(d.repository("core-x"), "stagex/core-x");
        assert_eq!(d.to_string(), "127.0.0.1:5000/stagex");
        assert!(RegistryNamespace::parse("stagex").is_err());
    }
}
