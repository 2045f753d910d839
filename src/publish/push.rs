//! Owns: pushing release images to registry destinations, in parallel and
//! resumably. Per image and destination: every blob first (HEAD: skip what
//! the repository has; mount from another repository of the same registry
//! that holds it; upload otherwise, streamed in constant memory), then the
//! child manifests by digest and the root under each tag as their exact
//! bytes, then a read-back: the digest the registry serves for each tag
//! (HEAD, its `Docker-Content-Digest`) must be ours, or the image fails. Every call goes through the retry
//! engine (one budget per registry host). A failed image is reported and
//! does not stop the others.
//!
//! Concurrency: `jobs` worker threads take (destination, image) pairs from
//! one queue and share one client per registry host (its connections and
//! cached tokens); an image's blobs go up to `BLOB_JOBS` at a time. Uploads of
//! one blob to several repositories of a host are single-flight: the first
//! uploads, the others wait and mount from it.
//!
//! `--dry-run` is the same walk (`Run::dry_run`): every read is made (HEAD
//! of blobs and tags) and every write (upload, mount, manifest, tag) is
//! counted instead of sent, so the plan is what a push would do.
//!
//! Must not: check signatures (the gate did) or draw progress (events).
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::journal::{Entry, Journal};
use super::release::ReleaseImage;
use super::report::{self, Counters};
use crate::net::retry::{retry, Budget, Exhausted, Policy};
use crate::net::RegistryError;
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::progress::{Progress, Task};
use crate::registry::{Mount, RegistryClient};

/// A registry namespace to publish into: `host[:port]/namespace`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destination {
    pub host: String,
    pub namespace: String,
}

impl Destination {
    /// Parses `HOST[:PORT]/NAMESPACE`.
    pub fn parse(text: &str) -> anyhow::Result<Destination> {
        let (host, namespace) = crate::registry::split_repository(text.trim_end_matches('/'))?;
        Ok(Destination { host, namespace })
    }

    /// The repository of image `name` (`stagex/core-busybox`).
    pub fn repository(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.namespace)
    }
}

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
enum Claim {
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

    fn claim(&self, digest: &Digest, repo: &str) -> Claim {
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

/// Shared state of one registry host.
pub struct Host {
    pub budget: Budget,
    pub holders: Holders,
}

/// Everything the workers share.
pub struct Run<'a> {
    pub images: &'a [ReleaseImage],
    pub destinations: &'a [Destination],
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
    pub fn new(
        images: &'a [ReleaseImage],
        destinations: &'a [Destination],
        tags: &'a [Vec<String>],
        journal: &'a Journal,
        progress: &'a dyn Progress,
        policy: Policy,
        dry_run: bool,
    ) -> Run<'a> {
        let mut hosts = BTreeMap::new();
        for d in destinations {
            hosts.entry(d.host.clone()).or_insert_with(|| Host {
                budget: Budget::new(policy),
                holders: Holders::default(),
            });
        }
        // What earlier runs pushed is a mount source for new repositories.
        for (host, state) in &hosts {
            for (repo, digest) in journal.manifests_on(host) {
                for image in images
                    .iter()
                    .filter(|i| i.root.digest.to_string() == digest)
                {
                    for blob in &image.blobs {
                        state.holders.add(&blob.digest, &repo);
                    }
                }
            }
        }
        Run {
            images,
            destinations,
            tags,
            journal,
            progress,
            hosts,
            counters: destinations.iter().map(|_| Counters::default()).collect(),
            finished: AtomicUsize::new(0),
            dry_run,
        }
    }

    pub(crate) fn host(&self, dest: &Destination) -> &Host {
        &self.hosts[&dest.host]
    }

    /// True when the journal has every tag of `image` on `dest`.
    pub(crate) fn journaled(&self, dest: &Destination, image: usize) -> bool {
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
    /// A blob of the local layout could not be read.
    #[error("{0:#}")]
    Local(anyhow::Error),
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

/// Runs `op` under the host's retry budget; the error names what failed
/// and why the engine stopped.
fn call<T>(host: &Host, op: impl FnMut() -> Result<T, RegistryError>) -> Result<T, PushError> {
    retry(&host.budget, op).map_err(|e| PushError::Registry(Box::new(e)))
}

/// Upload progress of one blob, as bytes of publish's `BYTES_TASK`. Each
/// attempt starts a
/// task again (the retry engine calls the upload anew); an attempt reports
/// only the bytes past what earlier attempts already reported, so a retried
/// upload does not count its bytes twice and the bars stop at the release's
/// size.
struct Uploading<'a> {
    progress: &'a dyn Progress,
    /// Bytes sent by the current attempt.
    attempt: AtomicU64,
    /// Bytes reported so far (the most any attempt sent).
    reported: AtomicU64,
}

impl<'a> Uploading<'a> {
    fn new(progress: &'a dyn Progress) -> Uploading<'a> {
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
                    report::bytes_done(self.progress, sent - before);
                }
            }
            _ => {}
        }
    }
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

fn push_one(run: &Run<'_>, clients: &Clients, d: usize, i: usize) {
    let dest = &run.destinations[d];
    let image = &run.images[i];
    let counters = &run.counters[d];
    Counters::add(&counters.images, 1);
    let result = if run.journaled(dest, i) {
        Counters::add(&counters.images_journaled, 1);
        Ok(())
    } else {
        clients
            .get(&dest.host)
            .and_then(|client| push_image(run, &client, dest, counters, image, &run.tags[i]))
    };
    if let Err(error) = result {
        counters.fail(&image.name, error.to_string());
    }
    if (run.finished.fetch_add(1, Ordering::Relaxed) + 1) % JOURNAL_EVERY == 0 && !run.dry_run {
        // Best effort: the final save reports a failure.
        let _ = run.journal.save();
    }
    report::image_done(run.progress, &report::registry_task(&dest.to_string()));
}

/// One image to one destination.
fn push_image(
    run: &Run<'_>,
    client: &RegistryClient,
    dest: &Destination,
    counters: &Counters,
    image: &ReleaseImage,
    tags: &[String],
) -> Result<(), PushError> {
    let host = run.host(dest);
    let repo = dest.repository(&image.name);
    let root = image.manifests.last().expect("the root manifest is last");
    // Unreadable counts as not served here: the push that follows names
    // the failure if it persists.
    let serves = |tag: &str| {
        served_digest(client, host, &repo, tag).is_ok_and(|d| d.as_ref() == Some(&root.digest))
    };
    // The first tag serving our digest means the registry holds the whole
    // image (it refuses a manifest whose blobs or children it lacks): no
    // blob is asked about (a re-run without the journal costs one HEAD
    // per tag). Otherwise the blobs go first; when every one was there
    // already, the other tags may still serve our digest.
    let first_served = tags.first().is_some_and(|tag| serves(tag));
    let all_there = if first_served {
        held_already(run, dest, &repo, counters, image);
        true
    } else {
        push_blobs(run, client, dest, &repo, counters, image)?
    };
    let present: Vec<bool> = tags
        .iter()
        .enumerate()
        .map(|(n, tag)| {
            if n == 0 {
                first_served
            } else {
                all_there && serves(tag)
            }
        })
        .collect();
    let missing = present.iter().any(|p| !p);
    if missing {
        for child in &image.manifests[..image.manifests.len() - 1] {
            if run.dry_run {
                Counters::add(&counters.manifests_pushed, 1);
                continue;
            }
            let bytes = image
                .layout
                .read_blob(&child.digest)
                .map_err(PushError::Local)?;
            call(host, || {
                client.push_manifest(&repo, &child.digest.to_string(), &bytes, &child.media_type)
            })?;
            Counters::add(&counters.manifests_pushed, 1);
        }
    }
    // The root's bytes, read only when a tag is to be pushed for real.
    let root_bytes = match missing && !run.dry_run {
        true => Some(
            image
                .layout
                .read_blob(&root.digest)
                .map_err(PushError::Local)?,
        ),
        false => None,
    };
    for (tag, present) in tags.iter().zip(present) {
        if present {
            Counters::add(&counters.tags_present, 1);
        } else {
            Counters::add(&counters.tags_pushed, 1);
            if let Some(bytes) = &root_bytes {
                push_tag(client, host, dest, &repo, tag, bytes, root)?;
            }
        }
        if !run.dry_run {
            run.journal.record(Entry {
                registry: dest.host.clone(),
                repository: repo.clone(),
                digest: root.digest.to_string(),
                tag: tag.clone(),
            });
        }
    }
    Ok(())
}

/// Pushes the root manifest `bytes` under `tag`, then reads back the
/// digest the registry serves for it: it must be ours.
fn push_tag(
    client: &RegistryClient,
    host: &Host,
    dest: &Destination,
    repo: &str,
    tag: &str,
    bytes: &[u8],
    root: &Descriptor,
) -> Result<(), PushError> {
    call(host, || {
        client.push_manifest(repo, tag, bytes, &root.media_type)
    })?;
    let at = format!("{}/{repo}:{tag}", dest.host);
    let served = served_digest(client, host, repo, tag).map_err(|error| PushError::ReadBack {
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

/// Counts every blob of `image` as present in `repo` (a tag proved it).
fn held_already(
    run: &Run<'_>,
    dest: &Destination,
    repo: &str,
    counters: &Counters,
    image: &ReleaseImage,
) {
    for blob in &image.blobs {
        skipped(run, dest, repo, counters, blob);
    }
}

/// Counts `blob` as already in `repo` (a mount source from now on).
fn skipped(run: &Run<'_>, dest: &Destination, repo: &str, counters: &Counters, blob: &Descriptor) {
    Counters::add(&counters.blobs_skipped, 1);
    run.host(dest).holders.add(&blob.digest, repo);
    report::bytes_done(run.progress, blob.size);
}

/// Blobs of one image pushed at once (on top of the images in parallel).
const BLOB_JOBS: usize = 4;

/// Every blob of `image`, up to `BLOB_JOBS` at a time; true when every one
/// was already there.
fn push_blobs(
    run: &Run<'_>,
    client: &RegistryClient,
    dest: &Destination,
    repo: &str,
    counters: &Counters,
    image: &ReleaseImage,
) -> Result<bool, PushError> {
    let host = run.host(dest);
    let one = |blob: &Descriptor| {
        push_blob(run, client, host, dest, repo, counters, image, blob).map_err(|error| {
            PushError::Blob {
                digest: blob.digest.clone(),
                error: Box::new(error),
            }
        })
    };
    crate::parallel::map_with(BLOB_JOBS, &image.blobs, one)
        .into_iter()
        .try_fold(true, |all, r| Ok(all & r?))
}

/// The digest of what the registry serves for `repo:tag`: None when it
/// answers that there is none; any other failure (after retries) is the
/// error, naming what failed.
fn served_digest(
    client: &RegistryClient,
    host: &Host,
    repo: &str,
    tag: &str,
) -> Result<Option<Digest>, PushError> {
    match retry(&host.budget, || client.manifest_digest(repo, tag)) {
        Ok(digest) => Ok(Some(digest)),
        Err(e) if e.error.is_not_found() => Ok(None),
        Err(e) => Err(PushError::Registry(Box::new(e))),
    }
}

#[allow(clippy::too_many_arguments)]
fn push_blob(
    run: &Run<'_>,
    client: &RegistryClient,
    host: &Host,
    dest: &Destination,
    repo: &str,
    counters: &Counters,
    image: &ReleaseImage,
    blob: &Descriptor,
) -> Result<bool, PushError> {
    // An upload's bytes reach the progress as they are sent (`uploading`);
    // a blob mounted or already there counts at once.
    let uploading = Uploading::new(run.progress);
    if !call(host, || client.needs_blob(repo, &blob.digest))? {
        skipped(run, dest, repo, counters, blob);
        return Ok(true);
    }
    if run.dry_run {
        plan_blob(host, repo, counters, blob);
        return Ok(false);
    }
    let uploaded = || {
        Counters::add(&counters.blobs_uploaded, 1);
        Counters::add(&counters.bytes_uploaded, blob.size);
    };
    let sources = match host.holders.claim(&blob.digest, repo) {
        Claim::MountFrom(sources) => sources,
        Claim::Upload => {
            // Waiters for this blob are released even if the upload panics.
            let claim = UploadClaim::new(&host.holders, &blob.digest);
            let result = upload(host, client, repo, image, blob, &uploading);
            claim.finish(result.as_ref().ok().map(|_| repo));
            result?;
            uploaded();
            return Ok(false);
        }
    };
    for from in &sources {
        // Not mounted (202), or refused (a token without pull scope on
        // `from`): try the next source, then upload.
        let mounted = call(host, || client.mount_blob(repo, from, &blob.digest));
        if matches!(mounted, Ok(Mount::Mounted)) {
            Counters::add(&counters.blobs_mounted, 1);
            Counters::add(&counters.bytes_mounted, blob.size);
            host.holders.add(&blob.digest, repo);
            report::bytes_done(run.progress, blob.size);
            return Ok(false);
        }
    }
    upload(host, client, repo, image, blob, &uploading)?;
    host.holders.add(&blob.digest, repo);
    uploaded();
    Ok(false)
}

/// What a push would do with a blob `repo` lacks: mount it when another
/// repository of the host holds it (or would, earlier in the plan), else
/// upload it.
fn plan_blob(host: &Host, repo: &str, counters: &Counters, blob: &Descriptor) {
    if host.holders.known(&blob.digest).iter().any(|r| r != repo) {
        Counters::add(&counters.blobs_mounted, 1);
        Counters::add(&counters.bytes_mounted, blob.size);
    } else {
        Counters::add(&counters.blobs_uploaded, 1);
        Counters::add(&counters.bytes_uploaded, blob.size);
        host.holders.add(&blob.digest, repo);
    }
}

/// Uploads `blob` to `repo` (retried under the host's budget).
fn upload(
    host: &Host,
    client: &RegistryClient,
    repo: &str,
    image: &ReleaseImage,
    blob: &Descriptor,
    progress: &dyn Progress,
) -> Result<(), PushError> {
    call(host, || {
        client.upload_blob(repo, blob, &image.layout, progress)
    })
}

/// An `Upload` claim that ends on every path: `finish`, or failed when
/// dropped unfinished (an unwinding panic), so no waiter blocks forever.
struct UploadClaim<'a> {
    holders: &'a Holders,
    digest: &'a Digest,
    finished: bool,
}

impl<'a> UploadClaim<'a> {
    fn new(holders: &'a Holders, digest: &'a Digest) -> UploadClaim<'a> {
        UploadClaim {
            holders,
            digest,
            finished: false,
        }
    }

    fn finish(mut self, holder: Option<&str>) {
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

    /// Records the bytes of every advance of publish's `BYTES_TASK`.
    #[derive(Default)]
    struct Bytes(Mutex<Vec<u64>>);

    impl Progress for Bytes {
        fn event(&self, event: crate::progress::Event<'_>) {
            if let crate::progress::Event::Advanced { id, amount } = event {
                assert_eq!(id, report::BYTES_TASK);
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
    fn destinations_parse_and_name_repositories() {
        let d = Destination::parse("127.0.0.1:5000/stagex/").unwrap();
        assert_eq!(d.host, "127.0.0.1:5000");
        assert_eq!(d.repository("core-x"), "stagex/core-x");
        assert_eq!(d.to_string(), "127.0.0.1:5000/stagex");
        assert!(Destination::parse("stagex").is_err());
    }

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
