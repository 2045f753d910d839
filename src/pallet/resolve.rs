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

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::catalog::shorten;
use super::compose::PackageImage;
use super::expr::ItemRef;
use crate::image::{platform_manifest, DirSource, ImageSource, RegistrySource};
use crate::net::RegistryError;
use crate::oci::config::ImageConfig;
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::progress::{self, Progress};
use crate::store::{IntakeError, Store, Tee};
use rayon::prelude::*;

/// Parallel layer fetch/index workers.
pub const FETCH_WORKERS: usize = 4;

/// Store metadata: last digest a remote tag pointed at.
pub const META_REMOTE_TAG: &str = "remote-tag";

/// Where package images come from (`--source`): a registry namespace or
/// a directory of layouts. Not `package::Source`, a source archive of a
/// package definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageProvider {
    /// `host[:port][/namespace]`.
    Registry { host: String, namespace: String },
    /// A directory of layouts, or one layout.
    Local(PathBuf),
}

impl ImageProvider {
    /// An existing directory (or a path starting with `.` or `/`) is local;
    /// otherwise `HOST[:PORT][/NAMESPACE]`.
    pub fn parse(text: &str) -> Result<ImageProvider> {
        let text = text.trim_end_matches('/');
        if text.is_empty() {
            bail!("empty --source: give a registry namespace (127.0.0.1:5000/stagex) or a directory (out/)");
        }
        if text.starts_with('.') || text.starts_with('/') || Path::new(text).is_dir() {
            return Ok(ImageProvider::Local(PathBuf::from(text)));
        }
        let (host, namespace) = match text.split_once('/') {
            Some((h, n)) => (h, n),
            None => (text, ""),
        };
        if !crate::oci::reference::is_registry_host(host) {
            bail!("--source {text:?}: neither a directory nor HOST[:PORT]/NAMESPACE (e.g. 127.0.0.1:5000/stagex or ./out)");
        }
        Ok(ImageProvider::Registry {
            host: host.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// Where image `name` is on this source, for messages and reports
    /// (`127.0.0.1:5000/stagex/core-jq`, `out/core-jq`).
    pub fn locate(&self, name: &str) -> String {
        match self {
            ImageProvider::Registry { host, namespace } if namespace.is_empty() => {
                format!("{host}/{name}")
            }
            ImageProvider::Registry { host, namespace } => format!("{host}/{namespace}/{name}"),
            ImageProvider::Local(dir) => dir.join(name).display().to_string(),
        }
    }

    /// The `ImageSource` this names.
    pub fn open(&self) -> Result<Box<dyn ImageSource>> {
        Ok(match self {
            ImageProvider::Registry { host, namespace } => {
                Box::new(RegistrySource::new(host, namespace)?)
            }
            ImageProvider::Local(dir) => Box::new(DirSource::new(dir)),
        })
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

/// One item pinned, with its manifest and config (no layers yet).
struct Head {
    pinned: Pinned,
    image: PackageImage,
    /// The config was fetched (false: it was in the store).
    config_fetched: bool,
}

/// Resolves items against one source into one store.
pub struct Resolver<'a> {
    store: &'a Store,
    pub source: ImageProvider,
    images: Box<dyn ImageSource>,
    progress: &'a dyn Progress,
    pub pinned: Vec<Pinned>,
    pub stats: FetchStats,
    /// Layer digest -> repositories holding it on the source registry
    /// (candidates for cross-repository mounts).
    pub layer_repos: BTreeMap<Digest, Vec<String>>,
}

impl<'a> Resolver<'a> {
    /// `progress` receives a task per pulled blob and the warnings.
    pub fn new(
        store: &'a Store,
        source: ImageProvider,
        progress: &'a dyn Progress,
    ) -> Result<Resolver<'a>> {
        let images = source.open()?;
        Ok(Resolver {
            store,
            source,
            images,
            progress,
            pinned: Vec::new(),
            stats: FetchStats::default(),
            layer_repos: BTreeMap::new(),
        })
    }

    /// True when the source is a loopback registry on `host`.
    pub fn registry_host(&self) -> Option<&str> {
        self.images.registry_host()
    }

    /// Pins `item` for `platform` and fetches its manifest and config;
    /// layers are left to `resolve_all`. Safe to run for several items at
    /// once: what it learns is recorded by `record_head`.
    fn fetch_head(&self, item: &ItemRef, platform: &Platform) -> Result<Head> {
        let source = self.images.locate(&item.name);
        let top = self.top(item)?;
        // Down the index to the platform manifest: its bytes are read
        // (verified against the digest) and parsed once, here; the parsed
        // value and digest are what the composition uses from now on.
        let (index_digest, descriptor, manifest) = platform_manifest(
            &*self.images,
            &item.name,
            &top,
            platform,
            self.store.layout(),
        )
        .context("reading its manifest")?;
        let manifest_digest = descriptor.digest;
        let config_fetched = self.fetch_config(item, &manifest.config)?;
        let config = read_config(self.store, &manifest.config)
            .with_context(|| format!("manifest {manifest_digest}"))?;
        if config.os != platform.os || config.architecture != platform.architecture {
            bail!(
                "the image is {}/{}, not {platform}: build or pull it for {platform}",
                config.os,
                config.architecture
            );
        }
        let pinned = Pinned {
            name: item.name.clone(),
            reference: item.to_string(),
            source,
            platform: platform.to_string(),
            index: index_digest,
            manifest: manifest_digest.clone(),
        };
        let image = PackageImage {
            name: item.name.clone(),
            manifest_digest,
            manifest,
            config,
            layers: Vec::new(),
        };
        Ok(Head {
            pinned,
            image,
            config_fetched,
        })
    }

    /// Keeps what `fetch_head` learnt: the pin, the fetch counts, the
    /// repositories holding each layer.
    fn record_head(&mut self, head: Head) -> PackageImage {
        if let Some(repo) = self.images.repository(&head.image.name) {
            for descriptor in &head.image.manifest.layers {
                let repos = self
                    .layer_repos
                    .entry(descriptor.digest.clone())
                    .or_default();
                if !repos.contains(&repo) {
                    repos.push(repo.clone());
                }
            }
        }
        if head.config_fetched {
            self.stats.blobs_fetched += 1;
            self.stats.bytes_fetched += head.image.manifest.config.size;
        } else {
            self.stats.blobs_cached += 1;
        }
        self.pinned.push(head.pinned);
        head.image
    }

    /// Resolves `item` for `platform`: pins it, fetches what is missing,
    /// indexes its layers.
    pub fn resolve(&mut self, item: &ItemRef, platform: &Platform) -> Result<PackageImage> {
        Ok(self
            .resolve_all(std::slice::from_ref(item), platform)?
            .remove(0))
    }

    /// Resolves every item (manifests and configs), then fetches and
    /// indexes the missing layers, both in parallel (`FETCH_WORKERS`
    /// threads, each with its own registry connection: the round trips,
    /// the network, decompression and hashing overlap). Errors are
    /// reported in the items' order.
    pub fn resolve_all(
        &mut self,
        items: &[ItemRef],
        platform: &Platform,
    ) -> Result<Vec<PackageImage>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(FETCH_WORKERS)
            .build()
            .context("starting the fetch threads")?;
        let heads: Vec<Result<Head>> = pool.install(|| {
            items
                .par_iter()
                .with_max_len(1)
                .map(|item| {
                    self.fetch_head(item, platform).with_context(|| {
                        let at = self.images.locate(&item.name);
                        let pin = item.to_string();
                        let pin = &pin[item.name.len()..];
                        format!("resolving {}{pin} for {platform}", shorten(&at))
                    })
                })
                .collect()
        });
        let mut images = Vec::new();
        for head in heads {
            images.push(self.record_head(head?));
        }
        let mut jobs: Vec<(String, Descriptor)> = Vec::new();
        let mut queued = std::collections::BTreeSet::new();
        for image in &images {
            for descriptor in &image.manifest.layers {
                let ready = self.store.layout().has_blob(&descriptor.digest)
                    && self.store.has_layer_index(&descriptor.digest);
                if ready {
                    self.stats.blobs_cached += 1;
                } else if queued.insert(descriptor.digest.clone()) {
                    jobs.push((image.name.clone(), descriptor.clone()));
                }
            }
        }
        self.fetch_and_index(&pool, jobs)?;
        for image in &mut images {
            image.layers = image
                .manifest
                .layers
                .iter()
                .map(|d| self.store.layer_index(d))
                .collect::<Result<_, _>>()
                .with_context(|| format!("package {}", image.name))?;
        }
        Ok(images)
    }

    fn fetch_and_index(
        &mut self,
        pool: &rayon::ThreadPool,
        jobs: Vec<(String, Descriptor)>,
    ) -> Result<()> {
        let (store, images, progress) = (self.store, &*self.images, self.progress);
        // Each job: the bytes it pulled (None: the blob was in the store),
        // or its own error naming the image and layer.
        // Once one layer fails, no further layer is fetched.
        // A missing blob is indexed while it streams in (store::intake).
        let fetch = |(name, descriptor): &(String, Descriptor)| -> Result<Option<u64>> {
            if store.layout().has_blob(&descriptor.digest) {
                store
                    .ensure_layer_index(descriptor)
                    .with_context(|| format!("package {name}"))?;
                return Ok(None);
            }
            let pull = |tee: Tee<'_>| {
                images.fetch_blob_teed(name, descriptor, store.layout(), progress, tee)
            };
            match store.fetch_layer(descriptor, pull) {
                Ok(()) => Ok(Some(descriptor.size)),
                Err(IntakeError::Fetch(error)) => Err(error),
                Err(IntakeError::Index(error)) => {
                    Err(anyhow::Error::new(error).context(format!("package {name}")))
                }
            }
        };
        // One job per task: FETCH_WORKERS at once, and once one fails no
        // further job starts (collecting into a Result stops there).
        let pulled: Vec<Option<u64>> = pool.install(|| {
            jobs.par_iter()
                .with_max_len(1)
                .map(fetch)
                .collect::<Result<_>>()
        })?;
        for size in pulled.into_iter().flatten() {
            self.stats.blobs_fetched += 1;
            self.stats.bytes_fetched += size;
        }
        Ok(())
    }

    /// The digest the reference names on the source, with its bytes in
    /// the store. A digest pin found in the store needs no source; a tag
    /// the source cannot answer for falls back to the digest it had last
    /// time (registries only: `tag_cache_key`).
    fn top(&self, item: &ItemRef) -> Result<Digest> {
        let layout = self.store.layout();
        if let Some(digest) = &item.digest {
            if !layout.has_blob(digest) {
                self.fetch_manifest(item, digest)?;
            }
            return Ok(digest.clone());
        }
        let tag = item.tag_or_latest();
        let key = self
            .images
            .tag_cache_key(&item.name, tag)
            .map(|k| Digest::of_bytes(k.as_bytes()));
        match self.images.resolve_tag(&item.name, item.tag.as_deref()) {
            Ok((digest, bytes)) => {
                layout.write_blob(&bytes)?;
                if let Some(key) = &key {
                    self.store
                        .write_meta(META_REMOTE_TAG, key, digest.to_string().as_bytes())?;
                }
                Ok(digest)
            }
            Err(error) => {
                let cached = key
                    .and_then(|key| self.store.read_meta(META_REMOTE_TAG, &key))
                    .and_then(|b| Digest::parse(std::str::from_utf8(&b).ok()?).ok())
                    .filter(|d| layout.has_blob(d));
                match cached {
                    Some(digest) if !is_not_found(error.as_ref()) => {
                        progress::warn(
                            self.progress,
                            &format!(
                                "{}:{tag} unreachable ({error:#}); using {digest} from the store",
                                self.images.locate(&item.name)
                            ),
                        );
                        Ok(digest)
                    }
                    _ => Err(error).with_context(|| format!("reading tag {tag}")),
                }
            }
        }
    }

    fn fetch_manifest(&self, item: &ItemRef, digest: &Digest) -> Result<()> {
        let layout = self.store.layout();
        if layout.has_blob(digest) {
            return Ok(());
        }
        let bytes = self.images.manifest(&item.name, digest)?;
        layout.write_blob(&bytes)?;
        Ok(())
    }

    /// Fetches a config blob unless the store has it: true when fetched.
    fn fetch_config(&self, item: &ItemRef, descriptor: &Descriptor) -> Result<bool> {
        if self.store.layout().has_blob(&descriptor.digest) {
            return Ok(false);
        }
        self.images
            .fetch_blob(&item.name, descriptor, self.store.layout(), self.progress)?;
        Ok(true)
    }
}

/// The config `descriptor` names, read from the store (verified against
/// its digest and size) and parsed. Not `Image::load`: it would read, hash
/// and parse the manifest `platform_manifest` just parsed, twice more; the
/// checks it adds are made by `compose` (diff_ids against the layers) and
/// by the layer indexing (layer media types).
fn read_config(store: &Store, descriptor: &Descriptor) -> Result<ImageConfig> {
    let bytes = store.layout().read_blob(&descriptor.digest)?;
    if bytes.len() as u64 != descriptor.size {
        bail!(
            "config {} is {} bytes but its manifest says {}: the manifest is inconsistent (republish the image)",
            descriptor.digest,
            bytes.len(),
            descriptor.size
        );
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("config {} is not a valid image config", descriptor.digest))
}

/// The registry said the tag does not exist (a typed answer, never the
/// error's text: a tag like `1.404` must not turn an outage into "missing").
fn is_not_found(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<RegistryError>()
            .is_some_and(RegistryError::is_not_found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        use crate::net::is_loopback;
        assert_eq!(
            ImageProvider::parse("127.0.0.1:5000/stagex").unwrap(),
            ImageProvider::Registry {
                host: "127.0.0.1:5000".into(),
                namespace: "stagex".into()
            }
        );
        assert_eq!(
            ImageProvider::parse("./out").unwrap(),
            ImageProvider::Local("./out".into())
        );
        assert!(ImageProvider::parse("stagex").is_err());
        assert_eq!(
            ImageProvider::parse("reg.example/a/b").unwrap(),
            ImageProvider::Registry {
                host: "reg.example".into(),
                namespace: "a/b".into()
            }
        );
        assert!(!is_loopback("reg.example"));
    }
}
