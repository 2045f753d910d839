//! Owns: what one side of `stagex diff` names and bringing it into the
//! store. Every source an image can come from today: a name in `out/`,
//! `oci:DIR[:TAG|@DIGEST]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE`, `docker://HOST/REPO[:TAG|@DIGEST]`, a registry
//! namespace + name (`HOST[:PORT]/NS/NAME[:TAG|@DIGEST]`), `DIR/NAME`
//! (an `out/`-shaped directory or one layout tagging `NAME`), a layout
//! directory itself, and `NAME@sha256:...` from the store.
//!
//! Reading goes through `image::source` (`ImageSource`); archives are read
//! blob by blob straight into the store (no path of the archive is ever
//! created on disk). Every blob lands in the store verified against its
//! digest, so the comparison reads one layout and the store's caches.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;

use crate::image::{DirSource, ImageSource, OutDir, RegistrySource};
use crate::oci::descriptor::Descriptor;
use crate::oci::digest::Digest;
use crate::oci::json::JsonBlob;
use crate::oci::layout::Layout;
use crate::oci::manifest::{AnyManifest, ImageManifest};
use crate::oci::media_type::{self, ANNOTATION_REF_NAME};
use crate::oci::reference::{is_registry_host, DockerReference};
use crate::progress::NoProgress;
use crate::store::Store;

use super::{scan, DiffError};

/// Largest JSON document read from an archive (index.json, manifest.json).
const MAX_ARCHIVE_JSON: u64 = 16 << 20;

/// Which image of a source: its default tag, a tag, or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pick {
    Default,
    Tag(String),
    Digest(Digest),
}

/// One side, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SideSpec {
    Registry {
        host: String,
        namespace: String,
        name: String,
        pick: Pick,
    },
    Layout {
        dir: PathBuf,
        pick: Pick,
    },
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    DockerArchive {
        file: PathBuf,
    },
    Dir {
        dir: PathBuf,
        name: String,
        pick: Pick,
    },
    Out {
        name: String,
        pick: Pick,
    },
    Store {
        digest: Digest,
    },
}

/// A side whose blobs are all in the store.
#[derive(Clone, Debug)]
pub struct ResolvedSide {
    /// As the user gave it.
    pub label: String,
    /// The index or manifest it names.
    pub top: Descriptor,
}

/// Splits `NAME[:TAG|@DIGEST]` (the tag after the last `/`).
fn split_pick(text: &str) -> Result<(&str, Pick)> {
    if let Some((name, digest)) = text.split_once('@') {
        return Ok((name, Pick::Digest(Digest::parse(digest)?)));
    }
    let slash = text.rfind('/').map_or(0, |i| i + 1);
    match text[slash..].rfind(':') {
        Some(i) => Ok((&text[..slash + i], Pick::Tag(text[slash + i + 1..].into()))),
        None => Ok((text, Pick::Default)),
    }
}

impl SideSpec {
    /// Parses one side (see the module doc for the forms).
    /// `out` is the project's `out/` (a bare name is looked up there).
    pub fn parse(text: &str, out: &Path) -> Result<SideSpec> {
        if text.is_empty() {
            bail!("empty");
        }
        if let Some(reference) = text.strip_prefix("docker://") {
            let parsed = DockerReference::parse_explicit(reference)?;
            return Ok(registry_spec(&parsed));
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, pick) = match rest.split_once('@') {
                Some((dir, d)) => (dir, Pick::Digest(Digest::parse(d)?)),
                None => match split_tag(rest) {
                    (dir, Some(tag)) => (dir, Pick::Tag(tag)),
                    (dir, None) => (dir, Pick::Default),
                },
            };
            let dir = PathBuf::from(dir);
            return Ok(SideSpec::Layout { dir, pick });
        }
        if let Some(rest) = text.strip_prefix("oci-archive:") {
            let (file, tag) = split_tag(rest);
            let file = PathBuf::from(file);
            return Ok(SideSpec::OciArchive { file, tag });
        }
        if let Some(rest) = text.strip_prefix("docker-archive:") {
            let file = PathBuf::from(rest.split(':').next().unwrap_or(rest));
            return Ok(SideSpec::DockerArchive { file });
        }
        if Path::new(text).join("oci-layout").is_file() {
            let dir = PathBuf::from(text);
            return Ok(SideSpec::Layout {
                dir,
                pick: Pick::Default,
            });
        }
        let (name, pick) = split_pick(text)?;
        parse_named(text, name, pick, out)
    }
}

/// `NAME`, `DIR/NAME`, `HOST/NS/NAME` and `NAME@DIGEST` (store).
fn parse_named(text: &str, name: &str, pick: Pick, out: &Path) -> Result<SideSpec> {
    if let Some((parent, base)) = name.rsplit_once('/') {
        if Path::new(parent).is_dir() || parent.starts_with('.') || parent.starts_with('/') {
            let (dir, name) = (PathBuf::from(parent), base.to_string());
            return Ok(SideSpec::Dir { dir, name, pick });
        }
        let host = name.split('/').next().unwrap_or_default();
        if !is_registry_host(host) {
            bail!(
                "neither a directory nor HOST[:PORT]/NAMESPACE/NAME; give oci:DIR, \
                 oci-archive:FILE, docker-archive:FILE, docker://HOST/REPO, a name in out/ \
                 or NAME@sha256:... from the store"
            );
        }
        let parsed = DockerReference::parse_explicit(text)?;
        return Ok(registry_spec(&parsed));
    }
    match pick {
        Pick::Digest(digest) if !OutDir::open(out).is_built(name) => Ok(SideSpec::Store { digest }),
        pick => Ok(SideSpec::Out {
            name: name.to_string(),
            pick,
        }),
    }
}

/// `PATH[:TAG]` where the tag has no `/`.
fn split_tag(rest: &str) -> (&str, Option<String>) {
    match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.is_empty() && !tag.contains('/') => (path, Some(tag.into())),
        _ => (rest, None),
    }
}

fn registry_spec(reference: &DockerReference) -> SideSpec {
    let (namespace, name) = match reference.path.rsplit_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), reference.path.clone()),
    };
    let pick = match (&reference.digest, &reference.tag) {
        (Some(digest), _) => Pick::Digest(digest.clone()),
        (None, Some(tag)) => Pick::Tag(tag.clone()),
        (None, None) => Pick::Default,
    };
    SideSpec::Registry {
        host: reference.domain.clone(),
        namespace,
        name,
        pick,
    }
}

/// Parses and fetches one side (`which`: "A" or "B") into `store`;
/// `out` is the project's `out/` directory.
pub fn resolve(
    which: &'static str,
    text: &str,
    out: &Path,
    store: &Store,
) -> Result<ResolvedSide, DiffError> {
    let spec = SideSpec::parse(text, out).map_err(|e| DiffError::BadSpec {
        side: which,
        spec: text.to_string(),
        reason: format!("{e:#}"),
    })?;
    let top = fetch(&spec, out, store).map_err(|source| DiffError::Side {
        side: which,
        spec: text.to_string(),
        source,
    })?;
    Ok(ResolvedSide {
        label: text.to_string(),
        top,
    })
}

/// `resolve` of both sides, A first (its error first).
pub fn resolve_both(
    (a, b): (&str, &str),
    out: &Path,
    store: &Store,
) -> Result<(ResolvedSide, ResolvedSide), DiffError> {
    // One side after the other (each side's blobs in parallel): a blob
    // both share is then fetched and scanned once, the second side finding
    // it in the store.
    let side_a = resolve("A", a, out, store)?;
    Ok((side_a, resolve("B", b, out, store)?))
}

fn fetch(spec: &SideSpec, out: &Path, store: &Store) -> Result<Descriptor> {
    match spec {
        SideSpec::Registry {
            host,
            namespace,
            name,
            pick,
        } => fetch_from(&RegistrySource::new(host, namespace)?, name, pick, store),
        SideSpec::Layout { dir, pick } => {
            let layout = Layout::open(dir)?;
            let digest = match pick {
                Pick::Digest(digest) => digest.clone(),
                Pick::Tag(tag) => layout.resolve(Some(tag))?.digest,
                Pick::Default => layout.resolve(None)?.digest,
            };
            fetch_from(&layout, "", &Pick::Digest(digest), store)
        }
        SideSpec::OciArchive { file, tag } => read_oci_archive(file, tag.as_deref(), store),
        SideSpec::DockerArchive { file } => read_docker_archive(file, store),
        SideSpec::Dir { dir, name, pick } => fetch_from(&DirSource::new(dir), name, pick, store),
        SideSpec::Out { name, pick } => fetch_from(&OutDir::open(out), name, pick, store),
        SideSpec::Store { digest } => {
            if !store.layout().has_blob(digest) {
                bail!(
                    "{digest} is not in the store ({}) nor is the name built in out/",
                    store.root().display()
                );
            }
            fetch_tree(store.layout(), "", digest, store)
        }
    }
}

/// Resolves `pick` of `name` in `source` and brings the whole tree in.
fn fetch_from(
    source: &dyn ImageSource,
    name: &str,
    pick: &Pick,
    store: &Store,
) -> Result<Descriptor> {
    let digest = match pick {
        Pick::Digest(digest) => digest.clone(),
        Pick::Tag(tag) => source.resolve_tag(name, Some(tag))?.0,
        Pick::Default => source.resolve_tag(name, None)?.0,
    };
    fetch_tree(source, name, &digest, store)
}

/// Brings manifest or index `digest` and everything below it into the
/// store (verified; what the store holds already is kept); returns its
/// descriptor.
fn fetch_tree(
    source: &dyn ImageSource,
    name: &str,
    digest: &Digest,
    store: &Store,
) -> Result<Descriptor> {
    let layout = store.layout();
    if !layout.has_blob(digest) {
        let bytes = source.manifest(name, digest)?;
        let got = Digest::of_bytes(&bytes);
        if &got != digest {
            bail!(
                "manifest {digest} from {}: its bytes hash to {got}",
                source.locate(name)
            );
        }
        layout.write_blob(&bytes)?;
    }
    let bytes = layout.read_blob(digest)?;
    let parsed = AnyManifest::parse(&bytes, None).with_context(|| format!("manifest {digest}"))?;
    let media_type = match &parsed {
        AnyManifest::Image(m) => m
            .media_type
            .clone()
            .unwrap_or(media_type::OCI_MANIFEST.into()),
        AnyManifest::Index(i) => i.media_type.clone().unwrap_or(media_type::OCI_INDEX.into()),
    };
    match parsed {
        AnyManifest::Index(index) => {
            for child in &index.manifests {
                if media_type::is_manifest(&child.media_type)
                    || media_type::is_index(&child.media_type)
                {
                    fetch_tree(source, name, &child.digest, store)?;
                } else {
                    source.fetch_blob(name, child, layout, &NoProgress)?;
                }
            }
        }
        AnyManifest::Image(manifest) => fetch_image_blobs(source, name, &manifest, store)?,
    }
    Ok(Descriptor::new(
        media_type,
        digest.clone(),
        bytes.len() as u64,
    ))
}

/// The config and the layers of one image, the layers in parallel (the
/// global rayon pool: one per core).
fn fetch_image_blobs(
    source: &dyn ImageSource,
    name: &str,
    manifest: &ImageManifest,
    store: &Store,
) -> Result<()> {
    let context = |blob: &Descriptor| format!("blob {} of {}", blob.digest, source.locate(name));
    let config = &manifest.config;
    source
        .fetch_blob(name, config, store.layout(), &NoProgress)
        .with_context(|| context(config))?;
    manifest.layers.par_iter().try_for_each(|layer| {
        fetch_layer_scanned(source, name, layer, store).with_context(|| context(layer))
    })
}

/// Brings layer `layer` into the store; when the source streams it, the
/// diff scan is made from the same bytes as they are hashed and stored
/// (`Store::fetch_teed`) and cached only once the blob is verified. A
/// source that does not stream (a local layout links the blob) leaves
/// the scan to `scan::scan_layer`, from the store, as does a scan that
/// failed (it then names the error itself).
fn fetch_layer_scanned(
    source: &dyn ImageSource,
    name: &str,
    layer: &Descriptor,
    store: &Store,
) -> Result<()> {
    let layout = store.layout();
    if layout.has_blob(&layer.digest) {
        return Ok(());
    }
    let Ok(compression) = scan::compression_of(layer) else {
        return source.fetch_blob(name, layer, layout, &NoProgress);
    };
    let streamed = store.fetch_teed(
        |bytes| scan::scan_stream(bytes, compression, None),
        |tee| source.fetch_blob_teed(name, layer, layout, &NoProgress, tee),
    )?;
    if let Some(Ok(scanned)) = streamed {
        scan::record_scan(store, &layer.digest, &scanned)?;
    }
    Ok(())
}

/// An archive's small JSON files (path -> bytes) and its blobs (path ->
/// digest and size, in the store).
type ArchiveFiles = (BTreeMap<String, Vec<u8>>, BTreeMap<String, (Digest, u64)>);

/// Reads every regular file of an image archive: `keep` decides which
/// are kept in memory (small JSON), the rest go into the store as blobs
/// (`expect` gives the digest a path must have, when its name says so).
fn read_archive(
    file: &Path,
    store: &Store,
    mut keep: impl FnMut(&str) -> bool,
) -> Result<ArchiveFiles> {
    let reader = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(reader));
    let mut kept = BTreeMap::new();
    let mut blobs = BTreeMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", file.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", file.display()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        if keep(&path) {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_ARCHIVE_JSON)
                .read_to_end(&mut bytes)?;
            kept.insert(path, bytes);
            continue;
        }
        let expected = path
            .strip_prefix("blobs/sha256/")
            .map(Digest::from_hex)
            .transpose()
            .with_context(|| {
                format!("{}: {path} is not named by a sha256 digest", file.display())
            })?;
        let written = store
            .layout()
            .write_blob_from_reader(&mut entry, expected.as_ref())
            .with_context(|| format!("{}: blob {path}", file.display()))?;
        blobs.insert(path, written);
    }
    Ok((kept, blobs))
}

/// `oci-archive:FILE[:TAG]`: the layout's blobs into the store, the
/// image its index.json names (by tag, else its only image).
fn read_oci_archive(file: &Path, tag: Option<&str>, store: &Store) -> Result<Descriptor> {
    let (kept, _) = read_archive(file, store, |path| path == "index.json")?;
    let index = kept
        .get("index.json")
        .ok_or_else(|| anyhow!("{} has no index.json: not an oci-archive", file.display()))?;
    let index: crate::oci::manifest::ImageIndex =
        serde_json::from_slice(index).with_context(|| format!("{}: index.json", file.display()))?;
    let found: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            tag.is_none() || d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == tag
        })
        .collect();
    let [top] = found.as_slice() else {
        bail!(
            "{}: {} images match{}; name one with :TAG",
            file.display(),
            found.len(),
            tag.map(|t| format!(" tag {t}")).unwrap_or_default()
        );
    };
    fetch_tree(store.layout(), "", &top.digest, store)
}

/// The `manifest.json` entry of a docker-archive.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    layers: Vec<String>,
}

/// `docker-archive:FILE`: its first image, as an OCI manifest written to
/// the store over the archive's config and layers (a layer's media type
/// from its bytes: gzip or plain tar).
fn read_docker_archive(file: &Path, store: &Store) -> Result<Descriptor> {
    let (kept, blobs) = read_archive(file, store, |path| path == "manifest.json")?;
    let manifest = kept.get("manifest.json").ok_or_else(|| {
        anyhow!(
            "{} has no manifest.json: not a docker-archive",
            file.display()
        )
    })?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest)
        .with_context(|| format!("{}: manifest.json", file.display()))?;
    let entry = entries
        .first()
        .ok_or_else(|| anyhow!("{}: manifest.json lists no image", file.display()))?;
    let blob = |path: &String| {
        blobs
            .get(path.trim_start_matches("./"))
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "{}: manifest.json names {path}, which it lacks",
                    file.display()
                )
            })
    };
    let (config, config_size) = blob(&entry.config)?;
    let mut layers = Vec::new();
    for path in &entry.layers {
        let (digest, size) = blob(path)?;
        let mut magic = [0u8; 2];
        let mut reader = store.layout().open_blob(&digest, None)?;
        let gzip = reader.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        let media = if gzip {
            media_type::OCI_LAYER_GZIP
        } else {
            media_type::OCI_LAYER_TAR
        };
        layers.push(Descriptor::new(media, digest, size));
    }
    let manifest = ImageManifest::new(
        Descriptor::new(media_type::OCI_CONFIG, config, config_size),
        layers,
    );
    let written = store
        .layout()
        .write_json(&JsonBlob::of(&manifest)?, media_type::OCI_MANIFEST)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse() {
        let d = format!("sha256:{}", "a".repeat(64));
        let p = |t: &str| SideSpec::parse(t, Path::new("/nonexistent")).unwrap();
        assert_eq!(
            p("oci:/tmp/x:v1"),
            SideSpec::Layout {
                dir: "/tmp/x".into(),
                pick: Pick::Tag("v1".into())
            }
        );
        assert!(matches!(
            p(&format!("127.0.0.1:5000/stagex/core-jq@{d}")),
            SideSpec::Registry { ref host, ref namespace, ref name, pick: Pick::Digest(_) }
                if host == "127.0.0.1:5000" && namespace == "stagex" && name == "core-jq"
        ));
        assert!(matches!(
            p("docker://127.0.0.1:5000/core-jq:1"),
            SideSpec::Registry { ref namespace, pick: Pick::Tag(_), .. } if namespace.is_empty()
        ));
        assert!(matches!(
            p(&format!("core-zzz-none@{d}")),
            SideSpec::Store { .. }
        ));
        assert!(matches!(
            p("core-jq"),
            SideSpec::Out {
                pick: Pick::Default,
                ..
            }
        ));
        assert!(matches!(
            p("/tmp/core-jq:2"),
            SideSpec::Dir {
                pick: Pick::Tag(_),
                ..
            }
        ));
        let none = Path::new("/nonexistent");
        assert!(SideSpec::parse("what/ever", none).is_err());
        assert!(SideSpec::parse("", none).is_err());
    }
}
