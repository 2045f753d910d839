//! Owns: `Image`, one single-platform image read ONCE with every check
//! (manifest digest, manifest media type, config digest and size, config
//! parse, diff_id count == layer count, layer media types), holding the
//! exact bytes of its manifest and config beside their parsed forms, and
//! the layout its blobs live in (blob access).
//!
//! It must not fetch anything: sources (`image::source`) bring the bytes
//! into a layout first, then `Image::load` reads them from there.
use std::fs::File;
use std::io::{BufReader, Read};

use thiserror::Error;

use crate::oci::config::{History, ImageConfig, RunConfig};
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::{Digest, VerifyingReader};
use crate::oci::image::ImageLayer;
use crate::oci::json::JsonBlob;
use crate::oci::layout::Layout;
use crate::oci::manifest::{AnyManifest, ImageManifest};
use crate::oci::media_type;

/// Why an image was rejected.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("manifest {digest}: {reason}")]
    Manifest { digest: Digest, reason: String },
    #[error("manifest {digest} is an image index, not a single-platform image")]
    IsIndex { digest: Digest },
    #[error("manifest {manifest}: config {config} {reason}")]
    Config {
        manifest: Digest,
        config: Digest,
        reason: String,
    },
    #[error("manifest {manifest}: config {config} lists {diff_ids} diff_ids for {layers} layers")]
    DiffIdCount {
        manifest: Digest,
        config: Digest,
        diff_ids: usize,
        layers: usize,
    },
    #[error("manifest {manifest}: layer {layer} has media type {media_type:?}, which is not a layer type")]
    LayerMediaType {
        manifest: Digest,
        layer: Digest,
        media_type: String,
    },
    #[error("reading image blobs: {0:#}")]
    Blob(#[from] anyhow::Error),
}

/// One image, checked.
#[derive(Clone, Debug)]
pub struct Image {
    layout: Layout,
    media_type: String,
    manifest_bytes: JsonBlob,
    manifest: ImageManifest,
    config_bytes: JsonBlob,
    config: ImageConfig,
}

impl Image {
    /// Reads the image `descriptor` names from `layout` (manifest and
    /// config verified against their digests) and checks it.
    pub fn load(layout: &Layout, descriptor: &Descriptor) -> Result<Image, ImageError> {
        let manifest = layout.read_blob(&descriptor.digest)?;
        let media_type = Some(descriptor.media_type.as_str()).filter(|m| !m.is_empty());
        let (parsed_type, parsed) = parse_manifest(&manifest, media_type, &descriptor.digest)?;
        let config = layout.read_blob(&parsed.config.digest)?;
        Image::from_parts(layout, parsed_type, manifest, config)
    }

    /// Checks already read bytes; `layout` is where the layers are.
    pub fn from_parts(
        layout: &Layout,
        media_type: String,
        manifest: Vec<u8>,
        config: Vec<u8>,
    ) -> Result<Image, ImageError> {
        let manifest_bytes = JsonBlob::from_bytes(manifest);
        let (media_type, manifest) = parse_manifest(
            &manifest_bytes.bytes,
            Some(&media_type),
            &manifest_bytes.digest,
        )?;
        let config_bytes = JsonBlob::from_bytes(config);
        let digest = &manifest_bytes.digest;
        let config_error = |reason: String| ImageError::Config {
            manifest: digest.clone(),
            config: manifest.config.digest.clone(),
            reason,
        };
        if config_bytes.digest != manifest.config.digest
            || config_bytes.bytes.len() as u64 != manifest.config.size
        {
            return Err(config_error(format!(
                "does not match its bytes ({}, {} bytes)",
                config_bytes.digest,
                config_bytes.bytes.len()
            )));
        }
        let config: ImageConfig = serde_json::from_slice(&config_bytes.bytes)
            .map_err(|e| config_error(format!("is not a valid image config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::DiffIdCount {
                manifest: digest.clone(),
                config: manifest.config.digest.clone(),
                diff_ids: config.rootfs.diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        if let Some(bad) = manifest
            .layers
            .iter()
            .find(|l| media_type::layer_compression(&l.media_type).is_none())
        {
            return Err(ImageError::LayerMediaType {
                manifest: digest.clone(),
                layer: bad.digest.clone(),
                media_type: bad.media_type.clone(),
            });
        }
        Ok(Image {
            layout: layout.clone(),
            media_type,
            manifest_bytes,
            manifest,
            config_bytes,
            config,
        })
    }

    /// The manifest's digest (what signatures and digests files name).
    pub fn digest(&self) -> &Digest {
        &self.manifest_bytes.digest
    }

    /// Describes the manifest (no platform: see `platform`).
    pub fn descriptor(&self) -> Descriptor {
        self.manifest_bytes.descriptor(&self.media_type)
    }

    /// The manifest's exact bytes and digest.
    pub fn manifest_blob(&self) -> &JsonBlob {
        &self.manifest_bytes
    }

    pub fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    /// The config's exact bytes and digest.
    pub fn config_blob(&self) -> &JsonBlob {
        &self.config_bytes
    }

    pub fn config(&self) -> &ImageConfig {
        &self.config
    }

    pub fn run_config(&self) -> &RunConfig {
        &self.config.config
    }

    /// The platform the config declares.
    pub fn platform(&self) -> Platform {
        let mut platform = Platform::new(&self.config.os, &self.config.architecture);
        platform.variant = self.config.variant.clone();
        platform
    }

    /// The layer descriptors, in order.
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }

    /// The diff_ids, one per layer (checked at load).
    pub fn diff_ids(&self) -> &[Digest] {
        &self.config.rootfs.diff_ids
    }

    /// The layout holding this image's blobs.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Opens layer `descriptor`'s blob; reading it to the end verifies it.
    pub fn open_blob(
        &self,
        descriptor: &Descriptor,
    ) -> anyhow::Result<VerifyingReader<BufReader<File>>> {
        self.layout
            .open_blob(&descriptor.digest, Some(descriptor.size))
    }

    /// The layers as building blocks of a new image: descriptor (without
    /// annotations), diff_id, and the history entry of each non-empty layer
    /// (`fallback` where the config has none).
    pub fn image_layers(&self, fallback: &History) -> Vec<ImageLayer> {
        let mut history = self.config.history.iter().filter(|h| !h.empty_layer);
        self.manifest
            .layers
            .iter()
            .zip(&self.config.rootfs.diff_ids)
            .map(|(d, diff_id)| ImageLayer {
                descriptor: Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size),
                diff_id: diff_id.clone(),
                history: history.next().cloned().unwrap_or_else(|| fallback.clone()),
            })
            .collect()
    }

    /// Reads a whole (small) blob of this image, verified.
    pub fn read_blob(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.layout
            .open_blob(digest, None)?
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// Parses manifest bytes that must be a single-platform image.
fn parse_manifest(
    bytes: &[u8],
    declared: Option<&str>,
    digest: &Digest,
) -> Result<(String, ImageManifest), ImageError> {
    match AnyManifest::parse(bytes, declared) {
        Ok(AnyManifest::Image(m)) => {
            let media_type = declared
                .map(str::to_string)
                .or_else(|| m.media_type.clone())
                .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string());
            Ok((media_type, m))
        }
        Ok(AnyManifest::Index(_)) => Err(ImageError::IsIndex {
            digest: digest.clone(),
        }),
        Err(e) => Err(ImageError::Manifest {
            digest: digest.clone(),
            reason: format!("{e:#}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::{build_image, ImageSpec};
    use std::collections::BTreeMap;

    fn spec(layers: usize) -> ImageSpec {
        ImageSpec {
            platform: "linux/arm64".parse().unwrap(),
            created: "1970-01-01T00:00:01Z".into(),
            run: RunConfig::default(),
            layers: (0..layers)
                .map(|i| ImageLayer {
                    descriptor: Descriptor::new(
                        media_type::OCI_LAYER_GZIP,
                        Digest::of_bytes(&[i as u8]),
                        1,
                    ),
                    diff_id: Digest::of_bytes(&[i as u8, 0]),
                    history: History::default(),
                })
                .collect(),
            empty_history: vec![],
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn a_built_image_loads_with_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let built = build_image(&spec(2)).unwrap();
        layout
            .write_json(&built.config, media_type::OCI_CONFIG)
            .unwrap();
        let desc = layout
            .write_json(&built.manifest, media_type::OCI_MANIFEST)
            .unwrap();
        let image = Image::load(&layout, &desc).unwrap();
        assert_eq!(image.digest(), &built.manifest.digest);
        assert_eq!(image.manifest_blob().bytes, built.manifest.bytes);
        assert_eq!(image.config_blob().bytes, built.config.bytes);
        assert_eq!(image.platform().to_string(), "linux/arm64");
        assert_eq!(image.layers().len(), 2);
        assert_eq!(image.image_layers(&History::default()).len(), 2);
        // Bytes changed on disk under the manifest's name are refused.
        let path = layout.blob_path(&desc.digest);
        let mut tampered = std::fs::read(&path).unwrap();
        tampered[0] = b' ';
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, tampered).unwrap();
        let err = Image::load(&layout, &desc).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn every_check_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let built = build_image(&spec(1)).unwrap();
        let manifest = built.manifest.bytes.clone();
        // Config bytes that are not the ones the manifest names.
        let err = Image::from_parts(
            &layout,
            media_type::OCI_MANIFEST.into(),
            manifest.clone(),
            b"{}".to_vec(),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::Config { .. }), "{err}");
        // diff_id count != layer count.
        let mut config: ImageConfig = serde_json::from_slice(&built.config.bytes).unwrap();
        config.rootfs.diff_ids.push(Digest::of_bytes(b"extra"));
        let config = JsonBlob::of(&config).unwrap();
        let mut m: ImageManifest = serde_json::from_slice(&manifest).unwrap();
        m.config = config.descriptor(media_type::OCI_CONFIG);
        let err = Image::from_parts(
            &layout,
            media_type::OCI_MANIFEST.into(),
            JsonBlob::of(&m).unwrap().bytes,
            config.bytes.clone(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::DiffIdCount {
                    diff_ids: 2,
                    layers: 1,
                    ..
                }
            ),
            "{err}"
        );
        // A layer that is not a layer.
        let mut m: ImageManifest = serde_json::from_slice(&manifest).unwrap();
        m.layers[0].media_type = "text/plain".into();
        let err = Image::from_parts(
            &layout,
            media_type::OCI_MANIFEST.into(),
            JsonBlob::of(&m).unwrap().bytes,
            built.config.bytes.clone(),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::LayerMediaType { .. }), "{err}");
        // An index is not an image.
        let index = crate::oci::image::build_index(
            std::slice::from_ref(&built.descriptor),
            BTreeMap::new(),
        )
        .unwrap();
        let err = Image::from_parts(&layout, media_type::OCI_INDEX.into(), index.bytes, vec![])
            .unwrap_err();
        assert!(matches!(err, ImageError::IsIndex { .. }), "{err}");
    }
}
