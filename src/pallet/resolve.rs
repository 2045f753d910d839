//! Resolution of package images: from a registry namespace
//! (`127.0.0.1:5000/stagex`: image `core-jq` is `127.0.0.1:5000/stagex/core-jq`)
//! or a local directory (`out/` holding one OCI layout per package,
//! `out/<stage>-<name>/`, or a single layout whose index.json tags images
//! `name:tag`) to pinned `PackageImage`s for one platform.
//!
//! Everything lands in the local store: manifests, configs, layers (pulled
//! blobs are verified against their digests; local blobs are hard-linked),
//! and each layer's index is computed once when the blob arrives. A
//! second run needs the network only to re-read a tag: a digest pin found
//! in the store is used as is, and when the registry cannot be reached a
//! tag falls back to the digest it had last time (`remote-tag` metadata).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::compose::PackageImage;
use super::expr::ItemRef;
use super::materialize::{ensure_layer_index, layer_index, META_LAYER_INDEX};
use crate::net::RegistryError;
use crate::oci::config::ImageConfig;
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::layout::{select_platform, Layout};
use crate::oci::manifest::{AnyManifest, ImageManifest};
use crate::oci::media_type::{self, ANNOTATION_REF_NAME};
use crate::progress::{self, Progress};
use crate::registry::RegistryClient;
use crate::store::Store;

/// Parallel layer fetch/index workers.
pub const FETCH_WORKERS: usize = 4;

/// Store metadata: last digest a remote tag pointed at.
pub const META_REMOTE_TAG: &str = "remote-tag";

/// Where package images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `host[:port][/namespace]`.
    Registry { host: String, namespace: String },
    /// A directory of layouts, or one layout.
    Local(PathBuf),
}

impl Source {
    /// An existing directory (or a path starting with `.` or `/`) is local;
    /// otherwise `HOST[:PORT][/NAMESPACE]`.
    pub fn parse(text: &str) -> Result<Source> {
        let text = text.trim_end_matches('/');
        if text.is_empty() {
            bail!("empty --source: give a registry namespace (127.0.0.1:5000/stagex) or a directory (out/)");
        }
        if text.starts_with('.') || text.starts_with('/') || Path::new(text).is_dir() {
            return Ok(Source::Local(PathBuf::from(text)));
        }
        let (host, namespace) = match text.split_once('/') {
            Some((h, n)) => (h, n),
            None => (text, ""),
        };
        if !crate::oci::reference::is_registry_host(host) {
            bail!("--source {text:?}: neither a directory nor HOST[:PORT]/NAMESPACE (e.g. 127.0.0.1:5000/stagex or ./out)");
        }
        Ok(Source::Registry {
            host: host.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// The repository of image `name` on a registry source.
    pub fn repository(&self, name: &str) -> Option<String> {
        match self {
            Source::Registry { namespace, .. } if namespace.is_empty() => Some(name.to_string()),
            Source::Registry { namespace, .. } => Some(format!("{namespace}/{name}")),
            Source::Local(_) => None,
        }
    }
}

/// One input, pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pinned {
    pub name: String,
    /// As asked (`core-jq`, `core-jq:1.7`, `core-jq@sha256:..`).
    pub reference: String,
    /// Where it came from (`127.0.0.1:5000/stagex/core-jq` or a directory).
    pub source: String,
    pub platform: String,
    /// The index the reference named, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// The platform manifest: the pin.
    pub manifest: Digest,
}

/// Pulled/linked byte counts, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FetchStats {
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    pub blobs_cached: u64,
}

/// Resolves items against one source into one store.
pub struct Resolver<'a> {
    store: &'a Store,
    pub source: Source,
    client: Option<RegistryClient>,
    progress: &'a dyn Progress,
    pub pinned: Vec<Pinned>,
    pub stats: FetchStats,
    /// Layer digest -> repositories holding it on the source registry
    /// (candidates for cross-repository mounts).
    pub layer_repos: BTreeMap<Digest, Vec<String>>,
}

fn parse_config(bytes: &[u8], digest: &Digest) -> Result<ImageConfig> {
    serde_json::from_slice(bytes).with_context(|| format!("invalid image config {digest}"))
}

impl<'a> Resolver<'a> {
    /// `progress` receives a task per pulled blob and the warnings.
    pub fn new(
        store: &'a Store,
        source: Source,
        progress: &'a dyn Progress,
    ) -> Result<Resolver<'a>> {
        let client = match &source {
            Source::Registry { host, .. } => Some(RegistryClient::new(host)?),
            Source::Local(_) => None,
        };
        Ok(Resolver {
            store,
            source,
            client,
            progress,
            pinned: Vec::new(),
            stats: FetchStats::default(),
            layer_repos: BTreeMap::new(),
        })
    }

    /// True when the source is a loopback registry on `host`.
    pub fn registry_host(&self) -> Option<&str> {
        match &self.source {
            Source::Registry { host, .. } => Some(host),
            Source::Local(_) => None,
        }
    }

    /// Pins `item` for `platform` and fetches its manifest and config;
    /// layers are left to `resolve_all`.
    fn resolve_head(&mut self, item: &ItemRef, platform: &Platform) -> Result<PackageImage> {
        let (top, source) = match self.source.clone() {
            Source::Registry { host, .. } => {
                let repo = self.source.repository(&item.name).expect("registry source");
                (self.remote_top(&repo, item)?, format!("{host}/{repo}"))
            }
            Source::Local(dir) => (
                self.local_top(&dir, item)?,
                dir.join(&item.name).display().to_string(),
            ),
        };
        // Down the index to the platform manifest.
        let layout = self.store.layout();
        let mut index_digest = None;
        let mut current = top;
        let manifest: ImageManifest = loop {
            let bytes = layout.read_blob(&current)?;
            match AnyManifest::parse(&bytes, None)
                .with_context(|| format!("{item}: manifest {current}"))?
            {
                AnyManifest::Image(m) => break m,
                AnyManifest::Index(index) => {
                    if index_digest.is_some() {
                        bail!("{item}: nested image indexes are not supported");
                    }
                    index_digest = Some(current.clone());
                    let chosen = select_platform(&index, Some(platform))
                        .with_context(|| format!("{item} ({source})"))?;
                    let digest = chosen.digest.clone();
                    self.fetch_manifest(item, &digest)?;
                    current = digest;
                }
            }
        };
        let manifest_digest = current;
        // Config and layers.
        self.fetch_blob(item, &manifest.config)?;
        let config_bytes = layout.read_blob(&manifest.config.digest)?;
        let config = parse_config(&config_bytes, &manifest.config.digest)?;
        if config.os != platform.os || config.architecture != platform.architecture {
            bail!(
                "{item} ({source}) is {}/{}, not {platform}: build or pull it for {platform}",
                config.os,
                config.architecture
            );
        }
        for descriptor in &manifest.layers {
            if let Some(repo) = self.source.repository(&item.name) {
                let repos = self
                    .layer_repos
                    .entry(descriptor.digest.clone())
                    .or_default();
                if !repos.contains(&repo) {
                    repos.push(repo);
                }
            }
        }
        self.pinned.push(Pinned {
            name: item.name.clone(),
            reference: item.to_string(),
            source,
            platform: platform.to_string(),
            index: index_digest,
            manifest: manifest_digest.clone(),
        });
        Ok(PackageImage {
            name: item.name.clone(),
            manifest_digest,
            manifest,
            config,
            layers: Vec::new(),
        })
    }

    /// Resolves `item` for `platform`: pins it, fetches what is missing,
    /// indexes its layers.
    pub fn resolve(&mut self, item: &ItemRef, platform: &Platform) -> Result<PackageImage> {
        Ok(self
            .resolve_all(std::slice::from_ref(item), platform)?
            .remove(0))
    }

    /// Resolves every item (manifests and configs one by one, they are
    /// small), then fetches and indexes the missing layers in parallel
    /// (`FETCH_WORKERS` threads, each with its own registry connection:
    /// the network, decompression and hashing overlap).
    pub fn resolve_all(
        &mut self,
        items: &[ItemRef],
        platform: &Platform,
    ) -> Result<Vec<PackageImage>> {
        let mut images = Vec::new();
        for item in items {
            images.push(
                self.resolve_head(item, platform)
                    .with_context(|| format!("resolving {item} for {platform}"))?,
            );
        }
        let mut jobs: Vec<(String, Descriptor)> = Vec::new();
        let mut queued = std::collections::BTreeSet::new();
        for image in &images {
            for descriptor in &image.manifest.layers {
                let ready = self.store.layout().has_blob(&descriptor.digest)
                    && self
                        .store
                        .read_meta(META_LAYER_INDEX, &descriptor.digest)
                        .is_some();
                if ready {
                    self.stats.blobs_cached += 1;
                } else if queued.insert(descriptor.digest.clone()) {
                    jobs.push((image.name.clone(), descriptor.clone()));
                }
            }
        }
        self.fetch_and_index(jobs)?;
        for image in &mut images {
            image.layers = image
                .manifest
                .layers
                .iter()
                .map(|d| layer_index(self.store, d))
                .collect::<Result<_>>()?;
        }
        Ok(images)
    }

    fn fetch_and_index(&mut self, jobs: Vec<(String, Descriptor)>) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let progress = self.progress;
        let queue = std::sync::Mutex::new(jobs.into_iter().rev().collect::<Vec<_>>());
        let fetched = std::sync::atomic::AtomicU64::new(0);
        let bytes = std::sync::atomic::AtomicU64::new(0);
        let workers = FETCH_WORKERS.min(queue.lock().expect("queue").len());
        let store = self.store;
        let source = &self.source;
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        let client = match source {
                            Source::Registry { host, .. } => Some(RegistryClient::new(host)?),
                            Source::Local(_) => None,
                        };
                        loop {
                            let Some((name, descriptor)) = queue.lock().expect("queue").pop()
                            else {
                                return Ok(());
                            };
                            if !store.layout().has_blob(&descriptor.digest) {
                                let Some(client) = &client else {
                                    bail!(
                                        "{name}: blob {} is not in the store or the source",
                                        descriptor.digest
                                    );
                                };
                                let repo = source.repository(&name).expect("registry");
                                client.pull_blob(&repo, &descriptor, store.layout(), progress)?;
                                fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                bytes.fetch_add(
                                    descriptor.size,
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                            }
                            ensure_layer_index(store, &descriptor)
                                .with_context(|| format!("{name}: layer {}", descriptor.digest))?;
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a fetch worker panicked")))
                })
                .collect()
        });
        self.stats.blobs_fetched += fetched.into_inner();
        self.stats.bytes_fetched += bytes.into_inner();
        results.into_iter().collect()
    }

    /// The digest the reference names on the registry, with its bytes in
    /// the store.
    fn remote_top(&mut self, repo: &str, item: &ItemRef) -> Result<Digest> {
        let layout = self.store.layout();
        if let Some(digest) = &item.digest {
            if !layout.has_blob(digest) {
                self.fetch_manifest(item, digest)?;
            }
            return Ok(digest.clone());
        }
        let client = self.client.as_ref().expect("registry source has a client");
        let tag = item.tag_or_latest();
        let key = Digest::of_bytes(format!("{}/{repo}:{tag}", client.host()).as_bytes());
        match client.pull_manifest(repo, tag) {
            Ok((bytes, digest)) => {
                layout.write_blob(&bytes)?;
                self.store
                    .write_meta(META_REMOTE_TAG, &key, digest.to_string().as_bytes())?;
                Ok(digest)
            }
            Err(error) => {
                let cached = self
                    .store
                    .read_meta(META_REMOTE_TAG, &key)
                    .and_then(|b| Digest::parse(std::str::from_utf8(&b).ok()?).ok())
                    .filter(|d| layout.has_blob(d));
                match cached {
                    Some(digest) if !is_not_found(&error) => {
                        progress::warn(
                            self.progress,
                            &format!(
                                "{}/{repo}:{tag} unreachable ({error:#}); using {digest} from the store",
                                client.host()
                            ),
                        );
                        Ok(digest)
                    }
                    _ => Err(error).with_context(|| format!("resolving {item}")),
                }
            }
        }
    }

    /// The digest the reference names in a local directory; its blobs are
    /// linked into the store.
    fn local_top(&mut self, dir: &Path, item: &ItemRef) -> Result<Digest> {
        let (layout, descriptor) = find_local(dir, item)?;
        // Link every blob reachable from it (all platforms: cheap links).
        let reachable = layout.reachable(&descriptor)?;
        for blob in reachable.iter().rev() {
            if self.store.layout().has_blob(&blob.digest) {
                self.stats.blobs_cached += 1;
            } else {
                self.store.layout().copy_blob_from(&layout, blob)?;
                self.stats.blobs_fetched += 1;
                self.stats.bytes_fetched += blob.size;
            }
        }
        Ok(descriptor.digest)
    }

    fn fetch_manifest(&mut self, item: &ItemRef, digest: &Digest) -> Result<()> {
        let layout = self.store.layout();
        if layout.has_blob(digest) {
            return Ok(());
        }
        let Some(client) = &self.client else {
            bail!("{item}: manifest {digest} is not in the store or the source");
        };
        let repo = self.source.repository(&item.name).expect("registry");
        let (bytes, _) = client.pull_manifest(&repo, &digest.to_string())?;
        layout.write_blob(&bytes)?;
        Ok(())
    }

    fn fetch_blob(&mut self, item: &ItemRef, descriptor: &Descriptor) -> Result<()> {
        if self.store.layout().has_blob(&descriptor.digest) {
            self.stats.blobs_cached += 1;
            return Ok(());
        }
        let Some(client) = &self.client else {
            bail!(
                "{item}: blob {} is not in the store or the source",
                descriptor.digest
            );
        };
        let repo = self.source.repository(&item.name).expect("registry");
        client.pull_blob(&repo, descriptor, self.store.layout(), self.progress)?;
        self.stats.blobs_fetched += 1;
        self.stats.bytes_fetched += descriptor.size;
        Ok(())
    }
}

/// The registry said the tag does not exist (a typed answer, never the
/// error's text: a tag like `1.404` must not turn an outage into "missing").
fn is_not_found(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<RegistryError>()
            .is_some_and(RegistryError::is_not_found)
    })
}

/// Finds the image `item` names under `dir`: `dir/<name>/` as a layout
/// (tag = its ref name, or its only image), or `dir` itself as a layout
/// tagging `name:tag` (or `name` for latest).
pub fn find_local(dir: &Path, item: &ItemRef) -> Result<(Layout, Descriptor)> {
    let per_image = dir.join(&item.name);
    let (layout, names): (Layout, Vec<String>) = if per_image.join("oci-layout").is_file() {
        let tag = item.tag_or_latest().to_string();
        (
            Layout::open(&per_image)?,
            vec![tag.clone(), format!("{}:{tag}", item.name)],
        )
    } else if dir.join("oci-layout").is_file() {
        let tag = item.tag_or_latest();
        let mut names = vec![format!("{}:{tag}", item.name)];
        if item.tag.is_none() {
            names.push(item.name.clone());
        }
        (Layout::open(dir)?, names)
    } else {
        bail!(
            "{item}: no OCI layout at {} (and {} is not a layout)",
            per_image.display(),
            dir.display()
        );
    };
    if let Some(digest) = &item.digest {
        if !layout.has_blob(digest) {
            bail!("{item}: {digest} is not in {}", layout.root().display());
        }
        let bytes = layout.read_blob(digest)?;
        let media_type = match AnyManifest::parse(&bytes, None)? {
            AnyManifest::Image(_) => media_type::OCI_MANIFEST,
            AnyManifest::Index(_) => media_type::OCI_INDEX,
        };
        return Ok((
            layout,
            Descriptor::new(media_type, digest.clone(), bytes.len() as u64),
        ));
    }
    let index = layout.read_index()?;
    let by_name = index.manifests.iter().find(|d| {
        d.annotations
            .get(ANNOTATION_REF_NAME)
            .is_some_and(|n| names.contains(n))
    });
    let descriptor = match (
        by_name,
        per_image.join("oci-layout").is_file(),
        index.manifests.as_slice(),
    ) {
        (Some(d), _, _) => d.clone(),
        (None, true, [only]) if item.tag.is_none() => only.clone(),
        _ => {
            let offered: Vec<&str> = index
                .manifests
                .iter()
                .filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str))
                .collect();
            return Err(anyhow!(
                "{item}: no image tagged {} in {} (tags: {})",
                names.join(" or "),
                layout.root().display(),
                offered.join(", ")
            ));
        }
    };
    Ok((layout, descriptor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        use crate::net::is_loopback;
        assert_eq!(
            Source::parse("127.0.0.1:5000/stagex").unwrap(),
            Source::Registry {
                host: "127.0.0.1:5000".into(),
                namespace: "stagex".into()
            }
        );
        assert_eq!(
            Source::parse("./out").unwrap(),
            Source::Local("./out".into())
        );
        assert!(Source::parse("stagex").is_err());
        let s = Source::parse("reg.example/a/b").unwrap();
        assert_eq!(s.repository("core-jq").unwrap(), "a/b/core-jq");
        assert!(!is_loopback("reg.example"));
    }
}
