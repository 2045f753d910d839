//! Downloading package sources into `fetch/<stage>/<name>/<file>`.
//!
//! Mirrors are tried in order; bytes are hashed while they stream into a
//! temporary file in the target directory, and the file is renamed into
//! place only after its sha256 matches. A present file with the right hash
//! is kept; a present file with a wrong hash is replaced. An interrupted
//! download leaves nothing behind, so the next run simply starts over.
//! `http(s)://` goes through the shared client and runtime of `crate::net`
//! (a mirror silent for the idle timeout fails over to the next one),
//! `file://` through std::fs. Progress leaves as events (one task per
//! download); nothing is drawn here.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::load::PackageTree;
use super::model::{Package, ResolvedSource};
use crate::net::{self, NetConfig, NetError};
use crate::oci::Digest;
use crate::progress::{Progress, Task};

/// One file to fetch.
#[derive(Clone, Debug)]
pub struct FetchJob {
    pub package: String,
    pub source: ResolvedSource,
    pub dest_dir: PathBuf,
}

impl FetchJob {
    pub fn dest(&self) -> PathBuf {
        self.dest_dir.join(&self.source.file)
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOutcome {
    /// Already present with the right hash.
    Present,
    /// Downloaded from this URL (after `replaced` an invalid file, if true).
    Downloaded { url: String, replaced: bool },
}

#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Downloads at once.
    pub concurrency: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { concurrency: 4 }
    }
}

/// `fetch/<stage>/<name>/` for a package (StageX uses `[package].name`).
pub fn fetch_dir(fetch_root: &Path, package: &Package) -> PathBuf {
    fetch_root.join(&package.stage).join(&package.name)
}

/// Every source file of `packages`, in order.
pub fn jobs_for(packages: &[&Package], fetch_root: &Path) -> Result<Vec<FetchJob>> {
    let mut jobs = Vec::new();
    for package in packages {
        for source in package.resolved_sources()? {
            // Subpackages share their definition's sources: fetch once.
            let dest = fetch_dir(fetch_root, package);
            if jobs
                .iter()
                .any(|j: &FetchJob| j.dest_dir == dest && j.source.file == source.file)
            {
                continue;
            }
            jobs.push(FetchJob {
                package: package.id.clone(),
                source,
                dest_dir: fetch_dir(fetch_root, package),
            });
        }
    }
    Ok(jobs)
}

/// Jobs for named packages (all packages when `names` is empty).
pub fn jobs_for_names(
    tree: &PackageTree,
    names: &[String],
    fetch_root: &Path,
) -> Result<Vec<FetchJob>> {
    let packages: Vec<&Package> = if names.is_empty() {
        tree.packages.values().collect()
    } else {
        names.iter().map(|n| tree.get(n)).collect::<Result<_>>()?
    };
    jobs_for(&packages, fetch_root)
}

/// Runs every job (several at once) on the shared runtime. All jobs are
/// attempted; if any failed, the error lists every failure.
pub fn fetch_all(
    jobs: &[FetchJob],
    options: &FetchOptions,
    progress: &dyn Progress,
) -> Result<Vec<FileOutcome>> {
    let config = net::config()?;
    net::block_on(fetch_all_async(
        jobs,
        options,
        config,
        &net::http_client()?,
        progress,
    ))
}

/// The HTTP side of one download: client and its configuration.
struct Http<'a> {
    client: &'a reqwest::Client,
    config: &'a NetConfig,
}

pub async fn fetch_all_async(
    jobs: &[FetchJob],
    options: &FetchOptions,
    config: &NetConfig,
    client: &reqwest::Client,
    progress: &dyn Progress,
) -> Result<Vec<FileOutcome>> {
    let http = Http { client, config };
    let results: Vec<(usize, Result<FileOutcome>)> =
        futures_util::stream::iter(jobs.iter().enumerate())
            .map(|(i, job)| {
                let http = &http;
                async move { (i, fetch_one(http, job, progress).await) }
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
    let mut ordered: Vec<Option<Result<FileOutcome>>> = (0..jobs.len()).map(|_| None).collect();
    for (i, r) in results {
        ordered[i] = Some(r);
    }
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (job, result) in jobs.iter().zip(ordered) {
        match result.expect("every job reports") {
            Ok(o) => outcomes.push(o),
            Err(e) => failures.push(format!("{} ({}): {e:#}", job.package, job.source.file)),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} source(s) could not be fetched:\n  {}",
            failures.len(),
            jobs.len(),
            failures.join("\n  ")
        );
    }
    Ok(outcomes)
}

/// sha256 of a file on disk.
fn hash_file(path: &Path) -> Result<Digest> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Digest::of_reader(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?
        .0)
}

async fn fetch_one(
    http: &Http<'_>,
    job: &FetchJob,
    progress: &dyn Progress,
) -> Result<FileOutcome> {
    let dest = job.dest();
    std::fs::create_dir_all(&job.dest_dir)
        .with_context(|| format!("creating {}", job.dest_dir.display()))?;
    let mut replaced = false;
    if dest.is_file() {
        let dest2 = dest.clone();
        let actual = tokio::task::spawn_blocking(move || hash_file(&dest2)).await??;
        if actual == job.source.hash {
            return Ok(FileOutcome::Present);
        }
        std::fs::remove_file(&dest)
            .with_context(|| format!("removing invalid {} (sha256 {actual})", dest.display()))?;
        replaced = true;
    }
    if job.source.urls.is_empty() {
        bail!("no mirrors to fetch {} from", job.source.file);
    }
    let mut errors = Vec::new();
    for url in &job.source.urls {
        let attempt = if let Some(path) = url.strip_prefix("file://") {
            let (path, job) = (PathBuf::from(path), job.clone());
            tokio::task::spawn_blocking(move || copy_local(&path, &job)).await?
        } else if url.starts_with("http://") || url.starts_with("https://") {
            download(http, url, job, progress).await
        } else {
            Err(anyhow::anyhow!(
                "unsupported URL scheme (expected http://, https:// or file://)"
            ))
        };
        match attempt {
            Ok(()) => {
                return Ok(FileOutcome::Downloaded {
                    url: url.clone(),
                    replaced,
                })
            }
            Err(e) => errors.push(format!("{url}: {e:#}")),
        }
    }
    bail!("every mirror failed:\n    {}", errors.join("\n    "))
}

/// A temp file beside the destination, hashed as it is written.
struct Staging {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
}

impl Staging {
    fn new(job: &FetchJob) -> Result<Staging> {
        let file = tempfile::Builder::new()
            .prefix(&format!(".{}.", job.source.file))
            .suffix(".part")
            .tempfile_in(&job.dest_dir)
            .with_context(|| format!("creating a temporary file in {}", job.dest_dir.display()))?;
        Ok(Staging {
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.file.write_all(bytes).context("writing the download")
    }

    /// Renames into place if the hash matches; otherwise the temp file is
    /// deleted (on drop) and the error names both digests.
    fn finish(self, job: &FetchJob) -> Result<()> {
        let actual = Digest::from_hasher(self.hasher);
        if actual != job.source.hash {
            bail!(
                "sha256 mismatch: expected {}, got {actual} ({} bytes); the file was discarded (fix the mirror or the hash in package.toml)",
                job.source.hash,
                self.size
            );
        }
        // A fixed mode (as a plain download under umask 022 would have), so
        // sources copied into images do not depend on the umask.
        use std::os::unix::fs::PermissionsExt;
        self.file
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("setting the download's mode")?;
        self.file
            .as_file()
            .sync_all()
            .context("syncing the download")?;
        let dest = job.dest();
        self.file
            .persist(&dest)
            .map_err(|e| anyhow::anyhow!("renaming into {}: {}", dest.display(), e.error))?;
        Ok(())
    }
}

fn copy_local(path: &Path, job: &FetchJob) -> Result<()> {
    let mut input =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut staging = Staging::new(job)?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = input
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        staging.write(&buffer[..n])?;
    }
    staging.finish(job)
}

/// GETs `url` into a staging file; only silence (the idle timeout) ends a
/// slow download, and the error then names the mirror's host.
async fn download(
    http: &Http<'_>,
    url: &str,
    job: &FetchJob,
    progress: &dyn Progress,
) -> Result<()> {
    let host = net::host_of(url);
    // The caller prefixes the URL.
    let what = "download";
    let transport = |e: &reqwest::Error| NetError::from_reqwest(host, what, e, http.config);
    let response = http
        .client
        .get(url)
        .send()
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if !status.is_success() {
        bail!("HTTP {status}");
    }
    let task = Task::start(
        progress,
        &job.dest().display().to_string(),
        &job.source.file,
        response.content_length(),
    );
    let mut staging = Staging::new(job)?;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(&e))?;
        staging.write(&chunk)?;
        task.advance(chunk.len() as u64);
    }
    drop(task);
    staging.finish(job)
}
