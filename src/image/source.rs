//! Owns: `ImageSource`, where images come from, and its implementations:
//! a registry namespace (a thin wrapper over `registry::RegistryClient`),
//! one OCI layout directory (images tagged `name:tag`), `out/` (one layout
//! per image), a directory that is either of those, and the local store.
//! Plus `platform_manifest`, which follows a name down an index to the
//! manifest of one platform, the same way for every source.
//!
//! Every byte a source hands over is verified against its digest; the
//! caller's cache (the store) is where bytes land. A source must not keep
//! state about what was fetched (the store does) nor draw progress.
use crate::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

use super::model::Image;
use super::out_dir::OutDir;
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::layout::{select_platform, Layout};
use crate::oci::manifest::{AnyManifest, ImageManifest};
use crate::oci::media_type::{self, ANNOTATION_REF_NAME};
use crate::registry::RegistryClient;
use crate::store::Store;

/// A place images are read from, by name (`core-jq`) and tag or digest.
pub trait ImageSource: Send + Sync {
    /// Where image `name` lives, for messages and reports
    /// (`127.0.0.1:5000/stagex/core-jq`, `out/core-jq`).
    fn locate(&self, name: &str) -> String;

    /// The manifest or index `name:tag` names (`None`: the default tag, or
    /// for a local layout its only image): digest and exact bytes.
    fn resolve_tag(&self, name: &str, tag: Option<&str>) -> Result<(Digest, Vec<u8>)>;

    /// The exact bytes of manifest or index `digest` of `name`, verified.
    fn manifest(&self, name: &str, digest: &Digest) -> Result<Vec<u8>>;

    /// Puts blob `descriptor` of `name` into `into` (verified; a no-op if
    /// it is there already).
    fn fetch_blob(
        &self,
        name: &str,
        blob: &Descriptor,
        into: &Layout,
        progress: &dyn Progress,
    ) -> Result<()>;

    /// `fetch_blob` that also hands every chunk of the blob to `tee` as it
    /// streams in (the store indexes a layer from them): true when it did,
    /// false when the source stored the blob without streaming it (a
    /// local layout links it). On `Ok(true)` the chunks were exactly the
    /// verified blob's bytes; on an error nothing is stored.
    fn fetch_blob_teed(
        &self,
        name: &str,
        blob: &Descriptor,
        into: &Layout,
        progress: &dyn Progress,
        _tee: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        self.fetch_blob(name, blob, into, progress)?;
        Ok(false)
    }

    /// The registry repository of `name`, when the source is a registry
    /// (layers can then be mounted from it on a push to the same host).
    fn repository(&self, _name: &str) -> Option<String> {
        None
    }

    /// The registry host, when the source is a registry.
    fn registry_host(&self) -> Option<&str> {
        None
    }

    /// A key under which the digest `name:tag` resolved to may be
    /// remembered (sources whose tags can be unreachable: registries).
    fn tag_cache_key(&self, _name: &str, _tag: &str) -> Option<String> {
        None
    }
}

/// Follows `top` (a manifest or index of `name`) to the image manifest for
/// `platform`, fetching what `cache` lacks from `source`. Returns the index
/// digest (when `top` is one), the manifest's descriptor and its parsed form.
pub fn platform_manifest(
    source: &dyn ImageSource,
    name: &str,
    top: &Digest,
    platform: &Platform,
    cache: &Layout,
) -> Result<(Option<Digest>, Descriptor, ImageManifest)> {
    let mut index_digest = None;
    let mut current = top.clone();
    loop {
        if !cache.has_blob(&current) {
            cache.write_blob(&source.manifest(name, &current)?)?;
        }
        let bytes = cache.read_blob(&current)?;
        match AnyManifest::parse(&bytes, None).with_context(|| format!("manifest {current}"))? {
            AnyManifest::Image(m) => {
                let media_type = m
                    .media_type
                    .clone()
                    .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string());
                let descriptor = Descriptor::new(media_type, current, bytes.len() as u64);
                return Ok((index_digest, descriptor, m));
            }
            AnyManifest::Index(index) => {
                if index_digest.is_some() {
                    bail!("nested image indexes are not supported");
                }
                index_digest = Some(current);
                current = select_platform(&index, Some(platform))
                    .with_context(|| source.locate(name))?
                    .digest
                    .clone();
            }
        }
    }
}

/// The whole image `top` names for `platform`: manifests, config and
/// layers fetched into `into` (what it already holds is kept), read and
/// checked as an `Image`. For callers that want every blob at once
/// (preseeding `out/`, copying); the pallet resolver fetches layers itself,
/// in parallel.
pub fn fetch_image(
    source: &dyn ImageSource,
    name: &str,
    top: &Digest,
    platform: &Platform,
    into: &Layout,
    progress: &dyn Progress,
) -> Result<Image> {
    let (_, descriptor, manifest) = platform_manifest(source, name, top, platform, into)?;
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        source.fetch_blob(name, blob, into, progress)?;
    }
    Image::load(into, &descriptor).with_context(|| source.locate(name))
}

/// A registry namespace: image `core-jq` is `<host>/<namespace>/core-jq`.
pub struct RegistrySource {
    host: String,
    namespace: String,
    /// Idle clients: each call takes one (or makes one), so parallel
    /// fetches each have their own connection.
    clients: Mutex<Vec<RegistryClient>>,
}

impl RegistrySource {
    /// Checks the registry settings (credentials, CA) by making a client.
    pub fn new(host: &str, namespace: &str) -> Result<RegistrySource> {
        let first = RegistryClient::new(host)?;
        Ok(RegistrySource {
            host: host.to_string(),
            namespace: namespace.trim_matches('/').to_string(),
            clients: Mutex::new(vec![first]),
        })
    }

    fn repo(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.namespace)
        }
    }

    /// Runs `call` with an idle client. The client's error is passed on
    /// as it is (typed errors stay downcastable for the caller).
    fn with_client<T, E: Into<anyhow::Error>>(
        &self,
        call: impl FnOnce(&RegistryClient) -> std::result::Result<T, E>,
    ) -> Result<T> {
        let idle = self.clients.lock().expect("client pool").pop();
        let client = match idle {
            Some(client) => client,
            None => RegistryClient::new(&self.host)?,
        };
        let result = call(&client).map_err(Into::into);
        self.clients.lock().expect("client pool").push(client);
        result
    }
}

impl ImageSource for RegistrySource {
    fn locate(&self, name: &str) -> String {
        format!("{}/{}", self.host, self.repo(name))
    }

    fn resolve_tag(&self, name: &str, tag: Option<&str>) -> Result<(Digest, Vec<u8>)> {
        let tag = tag.unwrap_or("latest");
        let (bytes, digest) = self.with_client(|c| c.pull_manifest(&self.repo(name), tag))?;
        Ok((digest, bytes))
    }

    fn manifest(&self, name: &str, digest: &Digest) -> Result<Vec<u8>> {
        let (bytes, _) =
            self.with_client(|c| c.pull_manifest(&self.repo(name), &digest.to_string()))?;
        Ok(bytes)
    }

    fn fetch_blob(
        &self,
        name: &str,
        blob: &Descriptor,
        into: &Layout,
        progress: &dyn Progress,
    ) -> Result<()> {
        if into.has_blob(&blob.digest) {
            return Ok(());
        }
        self.with_client(|c| c.pull_blob(&self.repo(name), blob, into, progress))
    }

    fn fetch_blob_teed(
        &self,
        name: &str,
        blob: &Descriptor,
        into: &Layout,
        progress: &dyn Progress,
        tee: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        self.with_client(|c| c.pull_blob_teed(&self.repo(name), blob, into, progress, tee))?;
        Ok(true)
    }

    fn repository(&self, name: &str) -> Option<String> {
        Some(self.repo(name))
    }

    fn registry_host(&self) -> Option<&str> {
        Some(&self.host)
    }

    fn tag_cache_key(&self, name: &str, tag: &str) -> Option<String> {
        Some(format!("{}/{}:{tag}", self.host, self.repo(name)))
    }
}

/// Finds the index.json entry of `layout` whose `ref.name` is one of
/// `names`; with `only_fallback`, the single entry when none is named.
fn find_tagged(
    layout: &Layout,
    names: &[String],
    only_fallback: bool,
    item: &str,
) -> Result<Descriptor> {
    let index = layout.read_index()?;
    let by_name = index.manifests.iter().find(|d| {
        d.annotations
            .get(ANNOTATION_REF_NAME)
            .is_some_and(|n| names.contains(n))
    });
    match (by_name, index.manifests.as_slice()) {
        (Some(d), _) => Ok(d.clone()),
        (None, [only]) if only_fallback => Ok(only.clone()),
        _ => {
            let offered: Vec<&str> = index
                .manifests
                .iter()
                .filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str))
                .collect();
            Err(anyhow!(
                "{item}: no image tagged {} in {} (tags: {})",
                names.join(" or "),
                layout.root().display(),
                offered.join(", ")
            ))
        }
    }
}

fn item_text(name: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{name}:{tag}"),
        None => name.to_string(),
    }
}

fn read_tagged(layout: &Layout, descriptor: Descriptor) -> Result<(Digest, Vec<u8>)> {
    let bytes = layout.read_blob(&descriptor.digest)?;
    Ok((descriptor.digest, bytes))
}

fn read_manifest_of(layout: &Layout, item: &str, digest: &Digest) -> Result<Vec<u8>> {
    if !layout.has_blob(digest) {
        bail!("{item}: {digest} is not in {}", layout.root().display());
    }
    layout.read_blob(digest)
}

/// One OCI layout holding several images, tagged `name:tag` (or `name`).
impl ImageSource for Layout {
    fn locate(&self, name: &str) -> String {
        self.root().join(name).display().to_string()
    }

    fn resolve_tag(&self, name: &str, tag: Option<&str>) -> Result<(Digest, Vec<u8>)> {
        let mut names = vec![format!("{name}:{}", tag.unwrap_or("latest"))];
        if tag.is_none() {
            names.push(name.to_string());
        }
        let found = find_tagged(self, &names, false, &item_text(name, tag))?;
        read_tagged(self, found)
    }

    fn manifest(&self, name: &str, digest: &Digest) -> Result<Vec<u8>> {
        read_manifest_of(self, name, digest)
    }

    fn fetch_blob(
        &self,
        _name: &str,
        blob: &Descriptor,
        into: &Layout,
        _: &dyn Progress,
    ) -> Result<()> {
        into.copy_blob_from(self, blob)
    }
}

/// `out/`: image `name` is the layout `out/<name>/` (tag = its ref name, or
/// its only image).
impl ImageSource for OutDir {
    fn locate(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn resolve_tag(&self, name: &str, tag: Option<&str>) -> Result<(Digest, Vec<u8>)> {
        let layout = self.layout(name)?;
        let wanted = tag.unwrap_or("latest");
        let names = vec![wanted.to_string(), format!("{name}:{wanted}")];
        let found = find_tagged(&layout, &names, tag.is_none(), &item_text(name, tag))?;
        read_tagged(&layout, found)
    }

    fn manifest(&self, name: &str, digest: &Digest) -> Result<Vec<u8>> {
        read_manifest_of(&self.layout(name)?, name, digest)
    }

    fn fetch_blob(
        &self,
        name: &str,
        blob: &Descriptor,
        into: &Layout,
        _: &dyn Progress,
    ) -> Result<()> {
        into.copy_blob_from(&self.layout(name)?, blob)
    }
}

/// A source that answers through another one (the store through its
/// layout, a directory through `out/` or itself as a layout): the lookups
/// are forwarded once, in the `ImageSource` impl below.
pub trait Forwarding: Send + Sync {
    /// Where image `name` lives (see `ImageSource::locate`).
    fn locate_image(&self, name: &str) -> String;

    /// Runs `call` with the source that holds `name`.
    fn forward<T>(&self, name: &str, call: impl FnOnce(&dyn ImageSource) -> Result<T>)
        -> Result<T>;
}

impl<F: Forwarding> ImageSource for F {
    fn locate(&self, name: &str) -> String {
        self.locate_image(name)
    }

    fn resolve_tag(&self, name: &str, tag: Option<&str>) -> Result<(Digest, Vec<u8>)> {
        self.forward(name, |s| s.resolve_tag(name, tag))
    }

    fn manifest(&self, name: &str, digest: &Digest) -> Result<Vec<u8>> {
        self.forward(name, |s| s.manifest(name, digest))
    }

    fn fetch_blob(
        &self,
        name: &str,
        blob: &Descriptor,
        into: &Layout,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.forward(name, |s| s.fetch_blob(name, blob, into, progress))
    }
}

/// The local store (an OCI layout: images found by digest, or by a
/// `name:tag` ref when one was recorded).
impl Forwarding for Store {
    fn locate_image(&self, name: &str) -> String {
        self.layout().locate(name)
    }

    fn forward<T>(&self, _: &str, call: impl FnOnce(&dyn ImageSource) -> Result<T>) -> Result<T> {
        call(self.layout())
    }
}

/// A local directory given as `--source`: `out/`-shaped (`<dir>/<name>/`
/// is a layout) for names that have their own layout, else `<dir>` itself
/// as one layout tagging `name:tag`.
pub struct DirSource {
    dir: PathBuf,
    out: OutDir,
}

impl DirSource {
    pub fn new(dir: &Path) -> DirSource {
        DirSource {
            dir: dir.to_path_buf(),
            out: OutDir::open(dir),
        }
    }

    fn pick(&self, name: &str) -> Result<&dyn ImageSource> {
        if self.out.path(name).join("oci-layout").is_file() {
            return Ok(&self.out);
        }
        bail!(
            "{name}: no OCI layout at {} (and {} is not a layout)",
            self.out.path(name).display(),
            self.dir.display()
        )
    }
}

impl Forwarding for DirSource {
    fn locate_image(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn forward<T>(
        &self,
        name: &str,
        call: impl FnOnce(&dyn ImageSource) -> Result<T>,
    ) -> Result<T> {
        match self.pick(name) {
            Ok(out) => call(out),
            Err(not_out) => match Layout::open(&self.dir) {
                Ok(layout) => call(&layout),
                Err(_) => Err(not_out),
            },
        }
    }
}
