//! Pure image assembly: given layers (already written somewhere) and a run
//! config, produce the config blob, the manifest blob and its descriptor,
//! and image indexes. No I/O: callers store the returned exact bytes.
use std::collections::BTreeMap;

use anyhow::{ensure, Result};

use super::config::{History, ImageConfig, RootFs, RunConfig};
use super::descriptor::{Descriptor, Platform};
use super::digest::Digest;
use super::json::JsonBlob;
use super::manifest::{ImageIndex, ImageManifest};
use super::media_type;

/// One layer of an image being assembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayer {
    /// The (usually compressed) blob as the manifest lists it.
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (the config's rootfs entry).
    pub diff_id: Digest,
    /// The history entry describing where the layer came from.
    pub history: History,
}

/// Everything that determines an image, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub platform: Platform,
    /// RFC 3339 creation time (pinned, e.g. from SOURCE_DATE_EPOCH).
    pub created: String,
    pub run: RunConfig,
    pub layers: Vec<ImageLayer>,
    /// History entries that add no layer (config-only steps), appended last.
    pub empty_history: Vec<History>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The serialized config and manifest of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub config: JsonBlob,
    pub manifest: JsonBlob,
    /// Describes the manifest, with the platform set (for an index entry).
    pub descriptor: Descriptor,
}

/// Builds config and manifest. The output is a pure function of `spec`.
pub fn build_image(spec: &ImageSpec) -> Result<BuiltImage> {
    for layer in &spec.layers {
        ensure!(
            media_type::layer_compression(&layer.descriptor.media_type).is_some(),
            "layer {} has media type {:?}, which is not a layer type",
            layer.descriptor.digest,
            layer.descriptor.media_type
        );
    }
    let mut history: Vec<History> = spec
        .layers
        .iter()
        .map(|l| History {
            created: l
                .history
                .created
                .clone()
                .or_else(|| Some(spec.created.clone())),
            empty_layer: false,
            ..l.history.clone()
        })
        .collect();
    history.extend(spec.empty_history.iter().map(|h| History {
        created: h.created.clone().or_else(|| Some(spec.created.clone())),
        empty_layer: true,
        ..h.clone()
    }));
    let config = ImageConfig {
        created: Some(spec.created.clone()),
        author: None,
        architecture: spec.platform.architecture.clone(),
        os: spec.platform.os.clone(),
        variant: spec.platform.variant.clone(),
        config: spec.run.clone(),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: spec.layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        history,
    };
    let config = JsonBlob::of(&config)?;
    let mut manifest = ImageManifest::new(
        config.descriptor(media_type::OCI_CONFIG),
        spec.layers.iter().map(|l| l.descriptor.clone()).collect(),
    );
    manifest.annotations = spec.annotations.clone();
    let manifest = JsonBlob::of(&manifest)?;
    let mut descriptor = manifest.descriptor(media_type::OCI_MANIFEST);
    descriptor.platform = Some(spec.platform.clone());
    Ok(BuiltImage {
        config,
        manifest,
        descriptor,
    })
}

/// Builds an OCI image index over `manifests`, in the given order.
pub fn build_index(
    manifests: &[Descriptor],
    annotations: BTreeMap<String, String>,
) -> Result<JsonBlob> {
    let mut index = ImageIndex::new();
    index.manifests = manifests.to_vec();
    index.annotations = annotations;
    JsonBlob::of(&index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::config::rfc3339_utc;

    fn spec() -> ImageSpec {
        let mut run = RunConfig::default();
        run.set_env_var("PATH", "/bin");
        run.entrypoint = Some(vec!["/bin/sh".into()]);
        ImageSpec {
            platform: "linux/amd64".parse().unwrap(),
            created: rfc3339_utc(1),
            run,
            layers: vec![ImageLayer {
                descriptor: Descriptor::new(media_type::OCI_LAYER_GZIP, Digest::of_bytes(b"gz"), 2),
                diff_id: Digest::of_bytes(b"tar"),
                history: History {
                    created_by: Some("test".into()),
                    ..History::default()
                },
            }],
            empty_history: vec![],
            annotations: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        }
    }

    #[test]
    fn same_spec_same_bytes_and_config_matches_layers() {
        let one = build_image(&spec()).unwrap();
        let two = build_image(&spec()).unwrap();
        assert_eq!(one, two);
        let config: ImageConfig = serde_json::from_slice(&one.config.bytes).unwrap();
        assert_eq!(config.rootfs.diff_ids, vec![Digest::of_bytes(b"tar")]);
        assert_eq!(
            config.history[0].created.as_deref(),
            Some("1970-01-01T00:00:01Z")
        );
        let manifest: ImageManifest = serde_json::from_slice(&one.manifest.bytes).unwrap();
        assert_eq!(manifest.config.digest, one.config.digest);
        assert_eq!(one.descriptor.digest, Digest::of_bytes(&one.manifest.bytes));
        assert_eq!(
            one.descriptor.platform.as_ref().unwrap().architecture,
            "amd64"
        );
    }

    #[test]
    fn golden_manifest_digest_for_a_fixed_spec() {
        // Pins the exact JSON shape: a change here changes every image digest.
        let built = build_image(&spec()).unwrap();
        let text = String::from_utf8(built.config.bytes.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"created\":\"1970-01-01T00:00:01Z\",\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Env\":[\"PATH=/bin\"],\"Entrypoint\":[\"/bin/sh\"]}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{}\"]}},\"history\":[{{\"created\":\"1970-01-01T00:00:01Z\",\"created_by\":\"test\"}}]}}",
                Digest::of_bytes(b"tar")
            )
        );
    }

    #[test]
    fn non_layer_media_type_is_rejected() {
        let mut s = spec();
        s.layers[0].descriptor.media_type = media_type::OCI_CONFIG.into();
        assert!(build_image(&s).is_err());
    }
}
