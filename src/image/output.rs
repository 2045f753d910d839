//! Image destinations (`--output`): parsing the transport strings users
//! know from skopeo, and the `ImageSink` of each (`oci:`, `oci-archive:`,
//! `docker-archive:`, `docker://`), every one returning a `WriteReport`.
//! The registry sink is a thin wrapper over `registry::push`.
//!
//! Archives are written deterministically (sorted entries, fixed owners,
//! modes and mtime) to a temp file beside the target and renamed into
//! place, so a failed write never leaves a half archive.
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use super::{Image, ImageSink};
use crate::oci::blob_writer::sync_and_rename;
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::{Digest, HashingWriter};
use crate::oci::json::JsonBlob;
use crate::oci::layout::Layout;
use crate::oci::manifest::ImageIndex;
use crate::oci::media_type::{self, ANNOTATION_REF_NAME};
use crate::oci::WriteReport;
use crate::progress::Progress;
use crate::registry::push;

/// Where an image goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `oci:DIR[:TAG]` — an OCI image layout directory.
    OciLayout { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]` — a tar of an OCI image layout.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE[:NAME:TAG]` — what `docker load`/`podman load` read.
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// `docker://HOST/REPO:TAG` — a registry.
    Registry { reference: String },
}

impl Destination {
    /// Parses a destination string (transport prefix required).
    pub fn parse(text: &str) -> Result<Destination> {
        let usage = "expected oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] or docker://HOST/REPO:TAG";
        if let Some(reference) = text.strip_prefix("docker://") {
            ensure!(
                !reference.is_empty(),
                "invalid destination {text:?}: {usage}"
            );
            return Ok(Destination::Registry {
                reference: reference.to_string(),
            });
        }
        let Some((transport, rest)) = text.split_once(':') else {
            bail!("invalid destination {text:?}: {usage}");
        };
        ensure!(
            !rest.is_empty(),
            "invalid destination {text:?}: missing path; {usage}"
        );
        match transport {
            "oci" => {
                let (dir, tag) = split_path_tag(rest);
                Ok(Destination::OciLayout { dir, tag })
            }
            "oci-archive" => {
                let (file, tag) = split_path_tag(rest);
                Ok(Destination::OciArchive { file, tag })
            }
            "docker-archive" => {
                let (file, reference) = match rest.split_once(':') {
                    Some((file, reference)) if !reference.is_empty() => {
                        ensure!(
                            reference.contains(':') || reference.contains('@'),
                            "invalid destination {text:?}: docker-archive wants FILE:NAME:TAG"
                        );
                        (PathBuf::from(file), Some(reference.to_string()))
                    }
                    _ => (PathBuf::from(rest.trim_end_matches(':')), None),
                };
                Ok(Destination::DockerArchive { file, reference })
            }
            other => bail!("unknown transport {other:?} in {text:?}: {usage}"),
        }
    }
}

fn split_path_tag(rest: &str) -> (PathBuf, Option<String>) {
    match rest.rsplit_once(':') {
        Some((path, tag)) if !tag.is_empty() && !tag.contains('/') => {
            (PathBuf::from(path), Some(tag.to_string()))
        }
        _ => (PathBuf::from(rest), None),
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tagged =
            |f: &mut fmt::Formatter<'_>, prefix: &str, path: &Path, tag: &Option<String>| {
                write!(f, "{prefix}:{}", path.display())?;
                match tag {
                    Some(tag) => write!(f, ":{tag}"),
                    None => Ok(()),
                }
            };
        match self {
            Destination::OciLayout { dir, tag } => tagged(f, "oci", dir, tag),
            Destination::OciArchive { file, tag } => tagged(f, "oci-archive", file, tag),
            Destination::DockerArchive { file, reference } => {
                tagged(f, "docker-archive", file, reference)
            }
            Destination::Registry { reference } => write!(f, "docker://{reference}"),
        }
    }
}

/// Layers that can be mounted on a push instead of uploaded: digest ->
/// repositories holding it on `host` (the registry images came from).
#[derive(Clone, Debug, Default)]
pub struct Mounts {
    pub host: Option<String>,
    pub repos: BTreeMap<Digest, Vec<String>>,
}

impl Destination {
    /// The sink that writes here. `mounts` matter only for a registry
    /// (and only when it is the registry they name).
    pub fn sink(&self, mounts: Mounts) -> Box<dyn ImageSink> {
        match self.clone() {
            Destination::OciLayout { dir, tag } => Box::new(OciLayoutSink { dir, tag }),
            archive @ (Destination::OciArchive { .. } | Destination::DockerArchive { .. }) => {
                Box::new(ArchiveSink(archive))
            }
            Destination::Registry { reference } => Box::new(RegistrySink { reference, mounts }),
        }
    }
}

/// Writes the image at `root` (held in `source`) to `destination`, with no
/// mounts. `platform` picks the manifest for single-image formats
/// (docker-archive); `progress` hears about uploads.
pub fn write(
    destination: &Destination,
    source: &Layout,
    root: &Descriptor,
    platform: Option<&Platform>,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    destination
        .sink(Mounts::default())
        .write(source, root, platform, progress)
        .with_context(|| format!("writing {destination}"))
}

/// `oci:DIR[:TAG]`.
pub struct OciLayoutSink {
    pub dir: PathBuf,
    pub tag: Option<String>,
}

impl ImageSink for OciLayoutSink {
    /// Copies the image (children first, so the layout never references a
    /// blob it lacks), then tags it.
    fn write(
        &self,
        from: &Layout,
        root: &Descriptor,
        _: Option<&Platform>,
        _: &dyn Progress,
    ) -> Result<WriteReport> {
        let target = Layout::create(&self.dir)?;
        let mut report = report_for(
            &Destination::OciLayout {
                dir: self.dir.clone(),
                tag: self.tag.clone(),
            },
            root,
        );
        for descriptor in from.reachable(root)?.iter().rev() {
            if target.has_blob(&descriptor.digest) {
                report.blobs_existing += 1;
                continue;
            }
            target.copy_blob_from(from, descriptor)?;
            report.blobs_written += 1;
            report.bytes_written += descriptor.size;
        }
        target.set_ref(self.tag.as_deref(), root.clone())?;
        Ok(report)
    }
}

/// `oci-archive:FILE[:TAG]` and `docker-archive:FILE[:NAME:TAG]`: one
/// file, reported by its size.
pub struct ArchiveSink(pub Destination);

impl ImageSink for ArchiveSink {
    fn write(
        &self,
        from: &Layout,
        root: &Descriptor,
        platform: Option<&Platform>,
        _: &dyn Progress,
    ) -> Result<WriteReport> {
        let (file, blobs) = match &self.0 {
            Destination::OciArchive { file, tag } => {
                (file, write_oci_archive(from, root, file, tag.as_deref())?)
            }
            Destination::DockerArchive { file, reference } => (
                file,
                write_docker_archive(from, root, platform, file, reference.as_deref())?,
            ),
            other => bail!("{other} is not an archive destination"),
        };
        archive_report(&self.0, root, file, blobs)
    }
}

/// `docker://HOST/REPO:TAG`: a push through `registry::push`.
pub struct RegistrySink {
    pub reference: String,
    pub mounts: Mounts,
}

impl ImageSink for RegistrySink {
    fn write(
        &self,
        from: &Layout,
        root: &Descriptor,
        _: Option<&Platform>,
        progress: &dyn Progress,
    ) -> Result<WriteReport> {
        let (host, _, _) = push::parse_reference(&self.reference)?;
        // Mount only from repositories on the same registry.
        let no_mounts = BTreeMap::new();
        let mounts = match &self.mounts.host {
            Some(source) if *source == host => &self.mounts.repos,
            _ => &no_mounts,
        };
        push::push_image(&self.reference, from, root, mounts, progress)
    }
}

fn report_for(destination: &Destination, root: &Descriptor) -> WriteReport {
    WriteReport {
        reference: destination.to_string(),
        digest: Some(root.digest.clone()),
        ..WriteReport::default()
    }
}

/// The report of an archive sink: `blobs` in one file.
fn archive_report(
    destination: &Destination,
    root: &Descriptor,
    file: &Path,
    blobs: u64,
) -> Result<WriteReport> {
    let mut report = report_for(destination, root);
    report.blobs_written = blobs;
    report.bytes_written = std::fs::metadata(file)
        .with_context(|| format!("reading back {}", file.display()))?
        .len();
    Ok(report)
}

/// Writes a tar of an OCI layout holding just this image; returns the
/// number of blobs in it.
pub fn write_oci_archive(
    source: &Layout,
    root: &Descriptor,
    file: &Path,
    tag: Option<&str>,
) -> Result<u64> {
    let mut entry = root.clone();
    if let Some(tag) = tag {
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.to_string(), tag.to_string());
    }
    let mut index = ImageIndex::new();
    index.manifests.push(entry);
    let index = JsonBlob::of(&index)?;
    let mut blobs = source.reachable(root)?;
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    write_tar_atomic(file, |builder| {
        append_dir(builder, "blobs/")?;
        append_dir(builder, "blobs/sha256/")?;
        for blob in &blobs {
            let reader = source.open_blob(&blob.digest, Some(blob.size))?;
            append_file(
                builder,
                &format!("blobs/sha256/{}", blob.digest.hex()),
                blob.size,
                reader,
            )?;
        }
        append_bytes(builder, "index.json", &index.bytes)?;
        append_bytes(builder, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
    })?;
    Ok(blobs.len() as u64)
}

#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Writes a `docker load`-able archive of the image for `platform` (the
/// only one when `root` is a single manifest). Layers are stored
/// uncompressed under their diff_id, as `docker save` writes them, and each
/// is checked against the config's diff_id while it is decompressed.
/// Returns the number of blobs written.
pub fn write_docker_archive(
    source: &Layout,
    root: &Descriptor,
    platform: Option<&Platform>,
    file: &Path,
    reference: Option<&str>,
) -> Result<u64> {
    let (descriptor, _, _) = source.image_for_platform(root, platform)?;
    let image = Image::load(source, &descriptor)?;
    let config = image.config_blob();
    let entry = DockerManifestEntry {
        config: format!("blobs/sha256/{}", config.digest.hex()),
        repo_tags: reference.map(|r| vec![r.to_string()]).unwrap_or_default(),
        layers: image
            .diff_ids()
            .iter()
            .map(|d| format!("blobs/sha256/{}", d.hex()))
            .collect(),
    };
    let manifest_json = serde_json::to_vec(&[entry])?;
    let mut written = std::collections::BTreeSet::new();
    write_tar_atomic(file, |builder| {
        append_dir(builder, "blobs/")?;
        append_dir(builder, "blobs/sha256/")?;
        append_bytes(
            builder,
            &format!("blobs/sha256/{}", config.digest.hex()),
            &config.bytes,
        )?;
        for (layer, diff_id) in image.layers().iter().zip(image.diff_ids()) {
            if !written.insert(diff_id.clone()) {
                continue;
            }
            let mut plain = uncompressed_layer(&image, layer, diff_id)?;
            let size = plain.seek(io::SeekFrom::End(0))?;
            plain.rewind()?;
            append_file(
                builder,
                &format!("blobs/sha256/{}", diff_id.hex()),
                size,
                plain,
            )?;
        }
        append_bytes(builder, "manifest.json", &manifest_json)
    })?;
    Ok(written.len() as u64 + 1)
}

/// Decompresses a layer into a temp file, verifying its diff_id.
fn uncompressed_layer(image: &Image, layer: &Descriptor, diff_id: &Digest) -> Result<File> {
    let compression = media_type::layer_compression(&layer.media_type)
        .with_context(|| format!("{} is not a layer media type", layer.media_type))?;
    let blob = image.open_blob(layer)?;
    let mut reader = crate::layer::decompress(blob, compression)
        .with_context(|| format!("docker-archive output of layer {}", layer.digest))?;
    let mut hashing = HashingWriter::new(BufWriter::new(tempfile::tempfile()?));
    io::copy(&mut reader, &mut hashing)
        .with_context(|| format!("decompressing layer {}", layer.digest))?;
    let (actual, _, buffered) = hashing.finish();
    ensure!(
        &actual == diff_id,
        "layer {} decompresses to {actual}, but the config says its diff_id is {diff_id}",
        layer.digest
    );
    buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flushing layer")
}

type TarBuilder = tar::Builder<BufWriter<File>>;

/// Runs `fill` against a tar builder writing to a temp file beside `path`,
/// then renames it into place.
fn write_tar_atomic(path: &Path, fill: impl FnOnce(&mut TarBuilder) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = crate::oci::layout::new_temp_file(dir)?;
    let mut builder = tar::Builder::new(BufWriter::new(temp.reopen()?));
    fill(&mut builder).with_context(|| format!("writing {}", path.display()))?;
    builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    sync_and_rename(temp, path).with_context(|| format!("writing {}", path.display()))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1);
    header.set_size(size);
    header
}

fn append_dir(builder: &mut TarBuilder, path: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    builder.append_data(&mut h, path, io::empty())?;
    Ok(())
}

fn append_file(builder: &mut TarBuilder, path: &str, size: u64, reader: impl Read) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    builder.append_data(&mut h, path, reader)?;
    Ok(())
}

fn append_bytes(builder: &mut TarBuilder, path: &str, bytes: &[u8]) -> Result<()> {
    append_file(builder, path, bytes.len() as u64, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_transport() {
        assert_eq!(
            Destination::parse("oci:./out/x:latest").unwrap(),
            Destination::OciLayout {
                dir: "./out/x".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            Destination::parse("oci:/tmp/x").unwrap(),
            Destination::OciLayout {
                dir: "/tmp/x".into(),
                tag: None
            }
        );
        assert_eq!(
            Destination::parse("oci-archive:a.tar:v1").unwrap(),
            Destination::OciArchive {
                file: "a.tar".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Destination::parse("docker-archive:rust.tar").unwrap(),
            Destination::DockerArchive {
                file: "rust.tar".into(),
                reference: None
            }
        );
        assert_eq!(
            Destination::parse("docker-archive:rust.tar:me/rust:1").unwrap(),
            Destination::DockerArchive {
                file: "rust.tar".into(),
                reference: Some("me/rust:1".into())
            }
        );
        assert_eq!(
            Destination::parse("docker://127.0.0.1:5000/me/x:1").unwrap(),
            Destination::Registry {
                reference: "127.0.0.1:5000/me/x:1".into()
            }
        );
        assert!(Destination::parse("dir:/tmp").is_err());
        assert!(Destination::parse("oci:").is_err());
        assert!(Destination::parse("docker-archive:f.tar:notag").is_err());
        assert!(Destination::parse("./plain").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "oci:d:t",
            "oci-archive:f.tar",
            "docker-archive:f.tar:n:t",
            "docker://h/r:t",
        ] {
            assert_eq!(Destination::parse(text).unwrap().to_string(), text);
        }
    }
}
