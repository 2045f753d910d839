//! Owns: what an integrity check of `out/` walked, kept so that a command
//! signs, records or publishes exactly what was hashed: per image, the
//! entries of `index.json` as read and every index and manifest reached
//! (its exact bytes, their parsed form), the configs and layers checked;
//! and the answers those commands read from it alone (the single entry,
//! the per-platform manifests with their versions, the manifest a digests
//! file lists, the `ref.name`, everything reachable from a root). A
//! `stagex build` rewriting `out/<id>/` after the check changes nothing
//! here: nothing in this module reads a file.
//!
//! Built by `image::integrity`; must not read `out/` or decide what a
//! command does with an image.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use thiserror::Error;

use super::integrity::IntegrityReport;
use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::layout::select_platform;
use crate::oci::manifest::{AnyManifest, ImageManifest};
use crate::oci::media_type::{self, ANNOTATION_REF_NAME, ANNOTATION_VERSION};

/// Deepest index nesting followed (by the check's walk and by the
/// answers read from what it kept).
pub(super) const MAX_DEPTH: usize = 8;

/// Every image one check walked, in the order asked, and what it did.
#[derive(Clone, Debug, Default)]
pub struct CheckedImages {
    pub report: IntegrityReport,
    pub images: Vec<CheckedImage>,
}

impl CheckedImages {
    /// The snapshot of image `id`, when it was checked.
    pub fn get(&self, id: &str) -> Option<&CheckedImage> {
        self.images.iter().find(|image| image.id == id)
    }
}

/// One image of `out/` as the check saw it.
#[derive(Clone, Debug)]
pub struct CheckedImage {
    /// `<stage>-<name>`.
    pub id: String,
    /// `out/<id>`, for messages.
    pub path: PathBuf,
    /// The entries of `index.json`, as read.
    pub entries: Vec<Descriptor>,
    /// Every index and manifest reached, by digest.
    pub documents: BTreeMap<Digest, CheckedDocument>,
    /// Configs, layers and other blobs reached, each once, in walk order.
    pub blobs: Vec<Descriptor>,
}

/// An index or manifest whose bytes hashed to its digest.
#[derive(Clone, Debug)]
pub struct CheckedDocument {
    /// The descriptor it was first reached by.
    pub descriptor: Descriptor,
    /// The exact bytes hashed (what a signature covers, what a push sends).
    pub bytes: Vec<u8>,
    pub parsed: AnyManifest,
    /// The platform its config declares, read when the descriptor it was
    /// first reached by has none (skopeo/umoci layouts), and only from a
    /// config whose bytes hash to its name.
    pub config_platform: Option<Platform>,
}

/// One per-platform manifest of a built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutManifest {
    /// The manifest; its platform filled from the config when the layout's
    /// descriptor has none (skopeo/umoci layouts).
    pub descriptor: Descriptor,
    /// The nearest `org.opencontainers.image.version` annotation (manifest,
    /// else the index entry or index that leads to it).
    pub version: Option<String>,
}

/// Why a checked image does not give what was asked.
#[derive(Debug, Error)]
pub enum CheckedError {
    #[error("{}: index.json lists no image", path.display())]
    NoImage { path: PathBuf },
    #[error("{} holds no image", path.display())]
    Empty { path: PathBuf },
    #[error("{} holds several images: name one with :TAG", path.display())]
    SeveralImages { path: PathBuf },
    #[error("{}: manifest {digest} was not read by the check", path.display())]
    NotChecked { path: PathBuf, digest: Digest },
    #[error("{}: image index nesting deeper than {MAX_DEPTH} levels at {digest}", path.display())]
    TooDeep { path: PathBuf, digest: Digest },
    #[error("{}: {reason:#}", path.display())]
    Platform {
        path: PathBuf,
        reason: anyhow::Error,
    },
}

impl CheckedImage {
    /// The single entry of `index.json` (an index or a manifest).
    pub fn top(&self) -> Result<&Descriptor, CheckedError> {
        match self.entries.as_slice() {
            [one] => Ok(one),
            [] => Err(CheckedError::Empty {
                path: self.path.clone(),
            }),
            _ => Err(CheckedError::SeveralImages {
                path: self.path.clone(),
            }),
        }
    }

    /// The document the check read for `descriptor`.
    pub fn document(&self, descriptor: &Descriptor) -> Result<&CheckedDocument, CheckedError> {
        self.documents
            .get(&descriptor.digest)
            .ok_or_else(|| CheckedError::NotChecked {
                path: self.path.clone(),
                digest: descriptor.digest.clone(),
            })
    }

    /// The `ref.name` of the first index.json entry (a tag or a reference).
    pub fn ref_name(&self) -> Option<String> {
        self.entries
            .iter()
            .find_map(|d| d.annotations.get(ANNOTATION_REF_NAME).cloned())
    }

    /// Every per-platform manifest (attestations skipped), each once,
    /// sorted by digest.
    pub fn manifests(&self) -> Result<Vec<OutManifest>, CheckedError> {
        if self.entries.is_empty() {
            return Err(CheckedError::NoImage {
                path: self.path.clone(),
            });
        }
        let mut found = BTreeMap::new();
        for top in &self.entries {
            let version = top.annotations.get(ANNOTATION_VERSION).cloned();
            self.collect(top, version, 0, &mut found)?;
        }
        Ok(found.into_values().collect())
    }

    fn collect(
        &self,
        descriptor: &Descriptor,
        version: Option<String>,
        depth: usize,
        found: &mut BTreeMap<Digest, OutManifest>,
    ) -> Result<(), CheckedError> {
        if depth > MAX_DEPTH {
            return Err(self.too_deep(descriptor));
        }
        let document = self.document(descriptor)?;
        match &document.parsed {
            AnyManifest::Image(image) => {
                let version = nearest_version(&image.annotations, version);
                let mut descriptor = descriptor.clone();
                if descriptor.platform.is_none() {
                    descriptor.platform = document.config_platform.clone();
                }
                let entry = found
                    .entry(descriptor.digest.clone())
                    .or_insert_with(|| OutManifest {
                        descriptor,
                        version: None,
                    });
                if entry.version.is_none() {
                    entry.version = version;
                }
            }
            AnyManifest::Index(index) => {
                let version = nearest_version(&index.annotations, version);
                for child in &index.manifests {
                    // Attestation manifests (unknown/unknown) are not images.
                    if child.platform.as_ref().is_some_and(|p| p.os == "unknown") {
                        continue;
                    }
                    let child_version = nearest_version(&child.annotations, version.clone());
                    self.collect(child, child_version, depth + 1, found)?;
                }
            }
        }
        Ok(())
    }

    /// The per-platform manifest `digests/<stage>.txt` lists: the single
    /// entry when it is a manifest, else the index's only child, else
    /// `platform`'s manifest.
    pub fn manifest_digest(&self, platform: &Platform) -> Result<Descriptor, CheckedError> {
        let top = self.top()?;
        if media_type::is_manifest(&top.media_type) {
            return Ok(top.clone());
        }
        match &self.document(top)?.parsed {
            AnyManifest::Index(index) if index.manifests.len() == 1 => {
                Ok(index.manifests[0].clone())
            }
            _ => Ok(self.image_for_platform(top, platform)?.0.clone()),
        }
    }

    /// Follows `descriptor` down through indexes to `platform`'s manifest.
    fn image_for_platform<'s>(
        &'s self,
        descriptor: &'s Descriptor,
        platform: &Platform,
    ) -> Result<(&'s Descriptor, &'s ImageManifest), CheckedError> {
        let mut current = descriptor;
        for _ in 0..MAX_DEPTH {
            match &self.document(current)?.parsed {
                AnyManifest::Image(image) => return Ok((current, image)),
                AnyManifest::Index(index) => {
                    current = select_platform(index, Some(platform)).map_err(|reason| {
                        CheckedError::Platform {
                            path: self.path.clone(),
                            reason,
                        }
                    })?;
                }
            }
        }
        Err(self.too_deep(descriptor))
    }

    /// Every descriptor reachable from `root` (itself, nested indexes and
    /// manifests, configs, layers), each once, parents before children.
    pub fn reachable(&self, root: &Descriptor) -> Result<Vec<Descriptor>, CheckedError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut pending = vec![root.clone()];
        while let Some(descriptor) = pending.pop() {
            if !seen.insert(descriptor.digest.clone()) {
                continue;
            }
            out.push(descriptor.clone());
            if !is_document(&descriptor) {
                continue;
            }
            let mut children = match &self.document(&descriptor)?.parsed {
                AnyManifest::Image(image) => {
                    let mut c = vec![image.config.clone()];
                    c.extend(image.layers.iter().cloned());
                    c
                }
                AnyManifest::Index(index) => index.manifests.clone(),
            };
            children.reverse();
            pending.extend(children);
        }
        Ok(out)
    }

    fn too_deep(&self, descriptor: &Descriptor) -> CheckedError {
        CheckedError::TooDeep {
            path: self.path.clone(),
            digest: descriptor.digest.clone(),
        }
    }
}

/// True for an index or a manifest (a document the check reads whole).
pub fn is_document(descriptor: &Descriptor) -> bool {
    media_type::is_manifest(&descriptor.media_type) || media_type::is_index(&descriptor.media_type)
}

/// The version annotation in `annotations`, else the one from further up.
fn nearest_version(
    annotations: &BTreeMap<String, String>,
    outer: Option<String>,
) -> Option<String> {
    annotations.get(ANNOTATION_VERSION).cloned().or(outer)
}

/// The platform an image config's bytes declare (for display when the
/// layout's descriptor has none).
pub fn config_platform(bytes: &[u8]) -> Option<Platform> {
    // Loosely typed on purpose: only os/architecture/variant matter here.
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let mut platform = Platform::new(&text("os")?, &text("architecture")?);
    platform.variant = text("variant");
    Some(platform)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::json::JsonBlob;
    use crate::oci::manifest::ImageIndex;

    /// A document of `image` as the check would keep it.
    fn keep(image: &mut CheckedImage, descriptor: &Descriptor, parsed: AnyManifest) {
        let bytes = match &parsed {
            AnyManifest::Image(m) => JsonBlob::of(m).unwrap().bytes,
            AnyManifest::Index(i) => JsonBlob::of(i).unwrap().bytes,
        };
        let document = CheckedDocument {
            descriptor: descriptor.clone(),
            bytes,
            parsed,
            config_platform: Some(Platform::new("linux", "riscv64")),
        };
        image.documents.insert(descriptor.digest.clone(), document);
    }

    /// index.json -> index (version 1.0) -> amd64, arm64, an attestation
    /// and one manifest without a platform (its config says riscv64).
    fn image() -> (CheckedImage, Vec<Descriptor>) {
        let blob = |s: &str| {
            Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                Digest::of_bytes(s.as_bytes()),
                1,
            )
        };
        let mut image = CheckedImage {
            id: "core-x".into(),
            path: PathBuf::from("out/core-x"),
            entries: Vec::new(),
            documents: BTreeMap::new(),
            blobs: Vec::new(),
        };
        let mut children = Vec::new();
        for (n, platform) in ["linux/amd64", "linux/arm64", "unknown/unknown", ""]
            .iter()
            .enumerate()
        {
            let manifest = ImageManifest::new(
                blob(&format!("config{n}")),
                vec![blob(&format!("layer{n}"))],
            );
            let mut descriptor = JsonBlob::of(&manifest)
                .unwrap()
                .descriptor(media_type::OCI_MANIFEST);
            descriptor.platform = platform
                .split_once('/')
                .map(|(os, arch)| Platform::new(os, arch));
            keep(&mut image, &descriptor, AnyManifest::Image(manifest));
            children.push(descriptor);
        }
        let mut index = ImageIndex::new();
        index.manifests = children.clone();
        index
            .annotations
            .insert(ANNOTATION_VERSION.into(), "1.0".into());
        let top = JsonBlob::of(&index)
            .unwrap()
            .descriptor(media_type::OCI_INDEX);
        keep(&mut image, &top, AnyManifest::Index(index));
        image.entries.push(top);
        (image, children)
    }

    #[test]
    fn answers_come_from_the_documents_kept() {
        let (mut image, children) = image();
        let found = image.manifests().unwrap();
        // The attestation is skipped; a platform-less manifest gets its config's.
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|m| m.version.as_deref() == Some("1.0")));
        let riscv = found
            .iter()
            .find(|m| m.descriptor.digest == children[3].digest)
            .unwrap();
        assert_eq!(
            riscv.descriptor.platform,
            Some(Platform::new("linux", "riscv64"))
        );
        let arm = image
            .manifest_digest(&Platform::new("linux", "arm64"))
            .unwrap();
        assert_eq!(arm.digest, children[1].digest);
        // Parents before children, configs and layers included, each once.
        let reachable = image.reachable(&image.entries[0].clone()).unwrap();
        assert_eq!(reachable.len(), 1 + 4 * 3);
        assert_eq!(reachable[1].digest, children[0].digest);
        // index.json with no entry or two is named as such.
        image.entries.push(children[0].clone());
        assert!(matches!(
            image.top(),
            Err(CheckedError::SeveralImages { .. })
        ));
        image.entries.clear();
        assert!(matches!(image.top(), Err(CheckedError::Empty { .. })));
        assert!(matches!(
            image.manifests(),
            Err(CheckedError::NoImage { .. })
        ));
    }
}
