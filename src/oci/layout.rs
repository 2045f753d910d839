//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/`).
//!
//! Owns: reading blobs with verification (every byte read is checked against
//! its digest), writing blobs and index.json atomically (temp file in the
//! same directory, fsync, rename: a crash leaves no half-written file; or,
//! for a file that must be new, a rename that never replaces), and tag lookup through the `org.opencontainers.image.ref.name` annotation.
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::blob_writer::BlobWriter;
use super::descriptor::{Descriptor, Platform};
use super::digest::{Digest, VerifyingReader};
use super::json::JsonBlob;
use super::manifest::{AnyManifest, ImageIndex, ImageManifest};
use super::media_type::{self, ANNOTATION_REF_NAME};

const OCI_LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutMarker {
    image_layout_version: String,
}

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens an existing layout; fails with a clear message if `root` is not one.
    pub fn open(root: impl AsRef<Path>) -> Result<Layout> {
        let root = root.as_ref().to_path_buf();
        let marker_path = root.join(OCI_LAYOUT_FILE);
        let text = fs::read(&marker_path).with_context(|| {
            format!(
                "{} is not an OCI image layout (no readable oci-layout file)",
                root.display()
            )
        })?;
        let marker: LayoutMarker = serde_json::from_slice(&text)
            .with_context(|| format!("{}: invalid oci-layout file", marker_path.display()))?;
        if !marker.image_layout_version.starts_with("1.") {
            bail!(
                "{}: unsupported imageLayoutVersion {:?}",
                marker_path.display(),
                marker.image_layout_version
            );
        }
        Ok(Layout { root })
    }

    /// Opens `root` as a layout, creating an empty one if it does not exist.
    pub fn create(root: impl AsRef<Path>) -> Result<Layout> {
        let root = root.as_ref().to_path_buf();
        if root.join(OCI_LAYOUT_FILE).exists() {
            return Layout::open(&root);
        }
        fs::create_dir_all(root.join("blobs").join("sha256"))
            .with_context(|| format!("creating OCI layout at {}", root.display()))?;
        let layout = Layout { root };
        let marker = serde_json::to_vec(&LayoutMarker {
            image_layout_version: media_type::OCI_LAYOUT_VERSION.to_string(),
        })?;
        // index.json first: the marker is what `create` and `open` take as
        // "a complete layout", so a crash in between must not leave a
        // marker without an index.
        if !layout.root.join(INDEX_FILE).exists() {
            layout.write_index(&ImageIndex::new())?;
        }
        write_atomic(&layout.root.join(OCI_LAYOUT_FILE), &marker)?;
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for streaming; the reader fails at EOF if the bytes do
    /// not match `digest` (and `size`, when given).
    pub fn open_blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<VerifyingReader<BufReader<File>>> {
        let path = self.blob_path(digest);
        let file = File::open(&path).with_context(|| {
            format!("blob {digest} missing from layout {}", self.root.display())
        })?;
        Ok(VerifyingReader::new(
            BufReader::new(file),
            digest.clone(),
            size,
        ))
    }

    /// Reads a whole blob, verified against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_blob(digest, None)?
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading blob {digest} from {}", self.root.display()))?;
        Ok(bytes)
    }

    /// Stores bytes as a blob (no-op if already present) and returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if !self.has_blob(&digest) {
            self.write_blob_from_reader(bytes, Some(&digest))?;
        }
        Ok(digest)
    }

    /// Stores a serialized JSON document as a blob and describes it.
    pub fn write_json(&self, blob: &JsonBlob, media_type: &str) -> Result<Descriptor> {
        self.write_blob(&blob.bytes)?;
        Ok(blob.descriptor(media_type))
    }

    /// A writer for a new blob of this layout (see `BlobWriter`).
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        Ok(BlobWriter::new(&self.root.join("blobs").join("sha256"))?)
    }

    /// Streams a blob in from a reader. With `expected`, the content must
    /// match it or nothing is stored. Returns the digest and size.
    pub fn write_blob_from_reader(
        &self,
        mut reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            if self.has_blob(d) {
                return Ok((d.clone(), fs::metadata(self.blob_path(d))?.len()));
            }
        }
        let mut writer = self.blob_writer()?;
        if let Some(d) = expected {
            writer = writer.expecting(d, None);
        }
        io::copy(&mut reader, &mut writer)
            .with_context(|| format!("copying a blob into the layout {}", self.root.display()))?;
        Ok(writer.commit()?)
    }

    /// Hard-links (or, across file systems, copies) a blob from another layout.
    pub fn copy_blob_from(&self, other: &Layout, descriptor: &Descriptor) -> Result<()> {
        if self.has_blob(&descriptor.digest) {
            return Ok(());
        }
        let source = other.blob_path(&descriptor.digest);
        let dest = self.blob_path(&descriptor.digest);
        fs::create_dir_all(dest.parent().expect("blob path has a parent"))?;
        if fs::hard_link(&source, &dest).is_ok() {
            // A link is only as good as the source file: check it like any
            // other incoming bytes, and leave nothing behind if it is wrong.
            let verified = self
                .open_blob(&descriptor.digest, Some(descriptor.size))
                .and_then(|mut r| io::copy(&mut r, &mut io::sink()).map_err(anyhow::Error::from));
            if let Err(e) = verified {
                let _ = fs::remove_file(&dest);
                return Err(e).with_context(|| {
                    format!(
                        "blob {} in {} does not match its digest or size (nothing was copied)",
                        descriptor.digest,
                        other.root.display()
                    )
                });
            }
            return Ok(());
        }
        let reader = other.open_blob(&descriptor.digest, Some(descriptor.size))?;
        self.write_blob_from_reader(reader, Some(&descriptor.digest))?;
        Ok(())
    }

    /// The top-level index.json.
    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.root.join(INDEX_FILE);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: invalid image index", path.display()))
    }

    /// Replaces index.json atomically.
    pub fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let blob = JsonBlob::of(index)?;
        write_atomic(&self.root.join(INDEX_FILE), &blob.bytes)
    }

    /// Points `tag` at `descriptor` in index.json (replacing an older entry
    /// with that tag). Without a tag, adds the descriptor untagged.
    pub fn set_ref(&self, tag: Option<&str>, mut descriptor: Descriptor) -> Result<()> {
        let mut index = self.read_index()?;
        match tag {
            Some(tag) => {
                index.manifests.retain(|d| {
                    d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(tag)
                });
                descriptor
                    .annotations
                    .insert(ANNOTATION_REF_NAME.to_string(), tag.to_string());
            }
            None => index.manifests.retain(|d| d != &descriptor),
        }
        index.manifests.push(descriptor);
        self.write_index(&index)
    }

    /// Finds the index.json entry for `tag`; without a tag, the single entry
    /// (an error if there are none or several).
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor> {
        let index = self.read_index()?;
        let found: Vec<&Descriptor> = match tag {
            Some(tag) => index
                .manifests
                .iter()
                .filter(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(tag))
                .collect(),
            None => index.manifests.iter().collect(),
        };
        match (found.as_slice(), tag) {
            ([one], _) => Ok((*one).clone()),
            ([], Some(tag)) => bail!("no image tagged {tag:?} in {}", self.root.display()),
            ([], None) => bail!("{} holds no image", self.root.display()),
            (_, Some(tag)) => bail!("several images tagged {tag:?} in {}", self.root.display()),
            (_, None) => bail!(
                "{} holds several images: name one with :TAG",
                self.root.display()
            ),
        }
    }

    /// Reads and parses the manifest or index a descriptor points at.
    pub fn read_manifest(&self, descriptor: &Descriptor) -> Result<(AnyManifest, Vec<u8>)> {
        let bytes = self.read_blob(&descriptor.digest)?;
        let parsed =
            AnyManifest::parse(&bytes, Some(&descriptor.media_type)).with_context(|| {
                format!("manifest {} in {}", descriptor.digest, self.root.display())
            })?;
        Ok((parsed, bytes))
    }

    /// Every descriptor reachable from `root` (itself, nested indexes and
    /// manifests, configs, layers), each once, parents before children.
    pub fn reachable(&self, root: &Descriptor) -> Result<Vec<Descriptor>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let mut pending = vec![root.clone()];
        while let Some(descriptor) = pending.pop() {
            if !seen.insert(descriptor.digest.clone()) {
                continue;
            }
            let is_manifest = media_type::is_manifest(&descriptor.media_type)
                || media_type::is_index(&descriptor.media_type);
            out.push(descriptor.clone());
            if !is_manifest {
                continue;
            }
            let mut children = match self.read_manifest(&descriptor)?.0 {
                AnyManifest::Image(image) => {
                    let mut c = vec![image.config];
                    c.extend(image.layers);
                    c
                }
                AnyManifest::Index(index) => index.manifests,
            };
            children.reverse();
            pending.extend(children);
        }
        Ok(out)
    }

    /// Follows a descriptor down through indexes to the image manifest for
    /// `platform` (any platform if the chain has a single manifest and no
    /// platform is given). Returns the manifest's descriptor, parsed form and
    /// exact bytes.
    pub fn image_for_platform(
        &self,
        descriptor: &Descriptor,
        platform: Option<&Platform>,
    ) -> Result<(Descriptor, ImageManifest, Vec<u8>)> {
        let mut current = descriptor.clone();
        for _ in 0..8 {
            let (manifest, bytes) = self.read_manifest(&current)?;
            match manifest {
                AnyManifest::Image(image) => return Ok((current, image, bytes)),
                AnyManifest::Index(index) => current = select_platform(&index, platform)?.clone(),
            }
        }
        bail!(
            "index nesting deeper than 8 levels at {}",
            descriptor.digest
        )
    }
}

/// Picks the manifest for `platform` in an index (attestation manifests,
/// marked `unknown/unknown`, are never picked).
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    platform: Option<&Platform>,
) -> Result<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_none_or(|p| p.os != "unknown"))
        .collect();
    match platform {
        Some(want) => candidates
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
            .or_else(|| {
                candidates
                    .iter()
                    .find(|d| d.platform.is_none() && candidates.len() == 1)
            })
            .copied()
            .ok_or_else(|| {
                let offered: Vec<String> = candidates
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                anyhow::anyhow!(
                    "no manifest for platform {want}; the index offers: {}",
                    offered.join(", ")
                )
            }),
        None => match candidates.as_slice() {
            [one] => Ok(one),
            [] => bail!("image index holds no manifests"),
            _ => {
                let host = Platform::host();
                candidates
                    .iter()
                    .find(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)))
                    .copied()
                    .ok_or_else(|| {
                        anyhow::anyhow!("no manifest for the host platform {host}; pass --platform")
                    })
            }
        },
    }
}

/// A temp file in `dir` that will be renamed into place (mode 0644).
pub fn new_temp_file(dir: &Path) -> Result<tempfile::NamedTempFile> {
    super::blob_writer::new_temp_file(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// Writes a file atomically: a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut temp = new_temp_file(dir)?;
    temp.write_all(bytes)
        .and_then(|_| super::blob_writer::sync_and_rename(temp, path))
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a NEW file atomically and never replaces one: a temp file in the
/// same directory, fsync, then tempfile's `persist_noclobber`
/// (renameat2(RENAME_NOREPLACE), else a hard link). An entry already at
/// `path` (a file, a directory, even a dangling symlink) is an
/// `io::ErrorKind::AlreadyExists` error and nothing is written; the caller
/// names the file and the fix.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut temp = super::blob_writer::new_temp_file(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::descriptor::Descriptor;

    #[test]
    fn write_new_never_replaces_an_entry_not_even_a_dangling_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/new.txt");
        write_new(&path, b"first").unwrap();
        let again = write_new(&path, b"second").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists, "{again}");
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let link = dir.path().join("sub/link.txt");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let refused = write_new(&link, b"x").unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists, "{refused}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let names: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 2, "no temp file is left behind");
    }

    #[test]
    fn blobs_round_trip_and_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("l")).unwrap();
        let digest = layout.write_blob(b"hello").unwrap();
        assert_eq!(layout.read_blob(&digest).unwrap(), b"hello");
        fs::write(layout.blob_path(&digest), b"hellO").unwrap();
        let err = layout.read_blob(&digest).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    }

    #[test]
    fn copying_a_tampered_blob_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = Layout::create(dir.path().join("src")).unwrap();
        let target = Layout::create(dir.path().join("dst")).unwrap();
        let digest = source.write_blob(b"hello").unwrap();
        let desc = Descriptor::new(media_type::OCI_LAYER_GZIP, digest.clone(), 5);
        fs::remove_file(source.blob_path(&digest)).unwrap();
        fs::write(source.blob_path(&digest), b"hellO").unwrap();
        let err = target.copy_blob_from(&source, &desc).unwrap_err();
        assert!(format!("{err:#}").contains(&digest.to_string()), "{err:#}");
        assert!(!target.has_blob(&digest), "a bad blob was linked in");
        // An intact blob is copied.
        let good = source.write_blob(b"good").unwrap();
        let desc = Descriptor::new(media_type::OCI_LAYER_GZIP, good.clone(), 4);
        target.copy_blob_from(&source, &desc).unwrap();
        assert_eq!(target.read_blob(&good).unwrap(), b"good");
    }

    #[test]
    fn streamed_write_with_wrong_digest_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let wrong = Digest::of_bytes(b"other");
        assert!(layout
            .write_blob_from_reader(&b"data"[..], Some(&wrong))
            .is_err());
        let left: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "temp files left behind: {left:?}");
    }

    #[test]
    fn tags_resolve_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let a = Descriptor::new(media_type::OCI_MANIFEST, Digest::of_bytes(b"a"), 1);
        let b = Descriptor::new(media_type::OCI_MANIFEST, Digest::of_bytes(b"b"), 1);
        layout.set_ref(Some("x"), a).unwrap();
        layout.set_ref(Some("x"), b.clone()).unwrap();
        assert_eq!(layout.resolve(Some("x")).unwrap().digest, b.digest);
        assert!(layout.resolve(Some("y")).is_err());
        assert_eq!(layout.read_index().unwrap().manifests.len(), 1);
        assert!(Layout::open(dir.path().join("nope")).is_err());
    }
}
