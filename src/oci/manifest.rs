//! Image manifests and image indexes (OCI, and Docker v2 read compatibly).
//!
//! We parse whatever a registry or layout gives us, but we never re-serialize
//! a manifest we did not build: the exact bytes are kept next to the parsed
//! form (see `json::JsonBlob`), because the digest is over those bytes.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::descriptor::Descriptor;
use super::media_type;

/// A single-platform image manifest: one config and ordered layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// A new OCI manifest for `config` and `layers`.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_string()),
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// A list of manifests, usually one per platform (OCI index or Docker list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// A new, empty OCI index.
    pub fn new() -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

impl Default for ImageIndex {
    fn default() -> Self {
        ImageIndex::new()
    }
}

/// Either kind of manifest document, told apart by media type (or shape).
// Parsed once per document and matched immediately: boxing the larger
// variant would buy nothing but an indirection at every use.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyManifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl AnyManifest {
    /// Parses a manifest document. `declared` is the media type a registry
    /// or descriptor gave; when absent the document's own field (or shape)
    /// decides.
    pub fn parse(bytes: &[u8], declared: Option<&str>) -> anyhow::Result<AnyManifest> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("manifest is not valid JSON: {e}"))?;
        let kind = declared
            .map(str::to_string)
            .or(probe.media_type)
            .unwrap_or_else(|| {
                if probe.manifests.is_some() {
                    media_type::OCI_INDEX.to_string()
                } else {
                    media_type::OCI_MANIFEST.to_string()
                }
            });
        if media_type::is_index(&kind) {
            Ok(AnyManifest::Index(serde_json::from_slice(bytes).map_err(
                |e| anyhow::anyhow!("invalid image index: {e}"),
            )?))
        } else if media_type::is_manifest(&kind) {
            Ok(AnyManifest::Image(serde_json::from_slice(bytes).map_err(
                |e| anyhow::anyhow!("invalid image manifest: {e}"),
            )?))
        } else {
            anyhow::bail!("unsupported manifest media type {kind:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Digest;

    #[test]
    fn manifest_serializes_in_spec_order() {
        let config = Descriptor::new(media_type::OCI_CONFIG, Digest::of_bytes(b"c"), 1);
        let layer = Descriptor::new(media_type::OCI_LAYER_GZIP, Digest::of_bytes(b"l"), 2);
        let json = serde_json::to_string(&ImageManifest::new(config, vec![layer])).unwrap();
        let keys: Vec<usize> = ["schemaVersion", "mediaType", "config", "layers"]
            .iter()
            .map(|k| json.find(k).unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{json}");
    }

    #[test]
    fn parse_tells_index_from_manifest() {
        let index = serde_json::to_vec(&ImageIndex::new()).unwrap();
        assert!(matches!(
            AnyManifest::parse(&index, None).unwrap(),
            AnyManifest::Index(_)
        ));
        let docker_list = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            AnyManifest::parse(docker_list, None).unwrap(),
            AnyManifest::Index(_)
        ));
        assert!(AnyManifest::parse(b"{}", Some("text/plain")).is_err());
        assert!(AnyManifest::parse(b"not json", None).is_err());
    }
}
