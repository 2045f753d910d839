//! Owns: the top of the walk: index against index (media type,
//! annotations, and platform by platform: descriptors' media type, size,
//! digest, annotations), manifest against manifest (media type,
//! annotations, config descriptor, layer count), then hands each image
//! pair's config to `config` and each layer pair to `layer`. A manifest
//! that differs though nothing below it does differs in its JSON encoding,
//! and says so.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::config::{config_causes, json_changes};
use super::layer::{compare_layer, LayerSide};
use super::{Cause, DiffError, DiffOptions, Findings, Level};
use crate::image::Image;
use crate::oci::descriptor::Descriptor;
use crate::oci::layout::select_platform;
use crate::oci::manifest::{AnyManifest, ImageIndex};
use crate::store::Store;

/// The walk over two sides whose blobs are in `store`.
pub struct Walk<'a> {
    pub store: &'a Store,
    pub options: DiffOptions,
}

fn image_error(descriptor: &Descriptor) -> impl Fn(anyhow::Error) -> DiffError + '_ {
    move |source| DiffError::Image {
        digest: descriptor.digest.clone(),
        source,
    }
}

/// Annotations (or any string map) as causes of `level`.
fn map_causes(
    level: Level,
    scope: &str,
    what: &str,
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<Cause> {
    let mut changes = Vec::new();
    json_changes("", Some(&json!(a)), Some(&json!(b)), &mut changes);
    changes
        .into_iter()
        .map(|(key, va, vb)| {
            let detail = format!("{what} annotation {key}: {} -> {}", show(&va), show(&vb));
            Cause::new(level, scope, "annotation", detail)
                .path(key)
                .values(va, vb)
        })
        .collect()
}

fn show(value: &Option<Value>) -> String {
    value
        .as_ref()
        .map_or("(absent)".to_string(), Value::to_string)
}

fn scoped(scope: &str, what: &str) -> String {
    if scope.is_empty() {
        what.to_string()
    } else {
        format!("{scope} {what}")
    }
}

impl Walk<'_> {
    fn read(&self, descriptor: &Descriptor) -> Result<AnyManifest, DiffError> {
        let bytes = self
            .store
            .layout()
            .read_blob(&descriptor.digest)
            .map_err(image_error(descriptor))?;
        AnyManifest::parse(&bytes, None).map_err(image_error(descriptor))
    }

    /// Compares the two tops (indexes or manifests).
    pub fn compare_tops(
        &self,
        a: &Descriptor,
        b: &Descriptor,
        findings: &mut Findings,
    ) -> Result<(), DiffError> {
        let before = findings.causes.len();
        match (self.read(a)?, self.read(b)?) {
            (AnyManifest::Index(ia), AnyManifest::Index(ib)) => {
                self.compare_indexes(&ia, &ib, findings)?
            }
            (AnyManifest::Image(_), AnyManifest::Image(_)) => {
                return self.compare_images(a, b, "", findings)
            }
            (AnyManifest::Index(index), AnyManifest::Image(_)) => {
                self.index_vs_image(&index, b, true, findings)?
            }
            (AnyManifest::Image(_), AnyManifest::Index(index)) => {
                self.index_vs_image(&index, a, false, findings)?
            }
        }
        let top = Cause::new(
            Level::Index,
            "",
            "digest",
            format!("top digest {} -> {}", a.digest, b.digest),
        )
        .path("index")
        .values(Some(json!(a.digest)), Some(json!(b.digest)));
        let explained = findings.causes[before..].iter().any(|c| !c.consequence);
        findings.causes.push(if explained {
            top.consequence()
        } else {
            encoding_only(top)
        });
        Ok(())
    }

    /// An index on one side, a single manifest on the other: that, and
    /// the manifest against the index's image of the same platform.
    fn index_vs_image(
        &self,
        index: &ImageIndex,
        image: &Descriptor,
        index_is_a: bool,
        findings: &mut Findings,
    ) -> Result<(), DiffError> {
        let (sa, sb) = if index_is_a {
            ("an image index", "a single manifest")
        } else {
            ("a single manifest", "an image index")
        };
        findings.causes.push(
            Cause::new(Level::Index, "", "kind", format!("A is {sa}, B is {sb}"))
                .values(Some(json!(sa)), Some(json!(sb))),
        );
        let loaded =
            Image::load(self.store.layout(), image).map_err(|e| image_error(image)(e.into()))?;
        let platform = loaded.platform();
        let Ok(arm) = select_platform(index, Some(&platform)) else {
            let detail = format!("the index has no {platform} manifest to compare with");
            findings.causes.push(Cause::new(
                Level::Index,
                &platform.to_string(),
                "platform",
                detail,
            ));
            return Ok(());
        };
        let scope = platform.to_string();
        match index_is_a {
            true => self.compare_images(arm, image, &scope, findings),
            false => self.compare_images(image, arm, &scope, findings),
        }
    }

    fn compare_indexes(
        &self,
        a: &ImageIndex,
        b: &ImageIndex,
        findings: &mut Findings,
    ) -> Result<(), DiffError> {
        if a.media_type != b.media_type {
            let detail = format!("index media type {:?} -> {:?}", a.media_type, b.media_type);
            findings.causes.push(
                Cause::new(Level::Index, "", "media_type", detail)
                    .values(Some(json!(a.media_type)), Some(json!(b.media_type))),
            );
        }
        findings.causes.extend(map_causes(
            Level::Index,
            "",
            "index",
            &a.annotations,
            &b.annotations,
        ));
        let arms = |index: &ImageIndex| -> BTreeMap<String, Descriptor> {
            index
                .manifests
                .iter()
                .map(|d| {
                    (
                        d.platform
                            .as_ref()
                            .map_or("(no platform)".to_string(), |p| p.to_string()),
                        d.clone(),
                    )
                })
                .collect()
        };
        let (arms_a, arms_b) = (arms(a), arms(b));
        for (platform, da) in &arms_a {
            match arms_b.get(platform) {
                Some(db) => self.compare_arm(platform, da, db, findings)?,
                None => findings.causes.push(
                    Cause::new(
                        Level::Index,
                        platform,
                        "platform",
                        format!("platform {platform} only in A"),
                    )
                    .values(Some(json!(da.digest)), None),
                ),
            }
        }
        for (platform, db) in &arms_b {
            if !arms_a.contains_key(platform) {
                findings.causes.push(
                    Cause::new(
                        Level::Index,
                        platform,
                        "platform",
                        format!("platform {platform} only in B"),
                    )
                    .values(None, Some(json!(db.digest))),
                );
            }
        }
        Ok(())
    }

    /// One platform of two indexes: its descriptors, then its images.
    fn compare_arm(
        &self,
        scope: &str,
        a: &Descriptor,
        b: &Descriptor,
        findings: &mut Findings,
    ) -> Result<(), DiffError> {
        if a.media_type != b.media_type {
            let detail = format!(
                "{scope} descriptor media type {} -> {}",
                a.media_type, b.media_type
            );
            findings.causes.push(
                Cause::new(Level::Index, scope, "media_type", detail)
                    .values(Some(json!(a.media_type)), Some(json!(b.media_type))),
            );
        }
        findings.causes.extend(map_causes(
            Level::Index,
            scope,
            "descriptor",
            &a.annotations,
            &b.annotations,
        ));
        if a.platform != b.platform {
            let detail = format!(
                "{scope} descriptor platform {} -> {}",
                json!(a.platform),
                json!(b.platform)
            );
            findings.causes.push(
                Cause::new(Level::Index, scope, "platform", detail)
                    .values(Some(json!(a.platform)), Some(json!(b.platform))),
            );
        }
        if a.digest != b.digest || a.size != b.size {
            let detail = format!(
                "{scope} descriptor: {} ({} bytes) -> {} ({} bytes)",
                a.digest, a.size, b.digest, b.size
            );
            findings.causes.push(
                Cause::new(Level::Index, scope, "descriptor", detail)
                    .values(
                        Some(json!({"digest": a.digest, "size": a.size})),
                        Some(json!({"digest": b.digest, "size": b.size})),
                    )
                    .consequence(),
            );
        }
        if crate::oci::media_type::is_index(&a.media_type)
            || crate::oci::media_type::is_index(&b.media_type)
        {
            return Ok(());
        }
        self.compare_images(a, b, scope, findings)
    }

    /// Two single-platform images: manifest fields, config, layers.
    fn compare_images(
        &self,
        a: &Descriptor,
        b: &Descriptor,
        scope: &str,
        findings: &mut Findings,
    ) -> Result<(), DiffError> {
        if a.digest == b.digest {
            return Ok(());
        }
        let load = |d: &Descriptor| {
            Image::load(self.store.layout(), d).map_err(|e| image_error(d)(e.into()))
        };
        let (ia, ib) = (load(a)?, load(b)?);
        let before = findings.causes.len();
        self.manifest_fields(&ia, &ib, scope, findings);
        if ia.config_blob().digest != ib.config_blob().digest {
            findings.causes.extend(config_causes(
                scope,
                &ia.config_blob().bytes,
                &ib.config_blob().bytes,
            ));
        }
        let count = ia.layers().len().max(ib.layers().len());
        for i in 0..count {
            let layer_scope = scoped(scope, &format!("layer {i}"));
            match (ia.layers().get(i), ib.layers().get(i)) {
                (Some(la), Some(lb)) => {
                    let side_a = LayerSide {
                        descriptor: la,
                        diff_id: &ia.diff_ids()[i],
                    };
                    let side_b = LayerSide {
                        descriptor: lb,
                        diff_id: &ib.diff_ids()[i],
                    };
                    compare_layer(
                        self.store,
                        &layer_scope,
                        side_a,
                        side_b,
                        self.options.all,
                        findings,
                    )?;
                }
                (la, lb) => {
                    let (side, d) = if la.is_some() { ("A", la) } else { ("B", lb) };
                    let detail = format!(
                        "layer {i} only in {side} ({})",
                        d.map(|d| d.digest.to_string()).unwrap_or_default()
                    );
                    findings.causes.push(
                        Cause::new(Level::Manifest, &layer_scope, "layer_count", detail)
                            .values(la.map(|d| json!(d.digest)), lb.map(|d| json!(d.digest))),
                    );
                }
            }
        }
        if !findings.causes[before..].iter().any(|c| !c.consequence) {
            let digests = Cause::new(
                Level::Manifest,
                scope,
                "digest",
                format!("manifest {} -> {}", a.digest, b.digest),
            )
            .values(Some(json!(a.digest)), Some(json!(b.digest)));
            findings.causes.push(encoding_only(digests));
        }
        Ok(())
    }

    fn manifest_fields(&self, a: &Image, b: &Image, scope: &str, findings: &mut Findings) {
        let (da, db) = (a.descriptor(), b.descriptor());
        if da.media_type != db.media_type {
            let detail = format!("manifest media type {} -> {}", da.media_type, db.media_type);
            findings.causes.push(
                Cause::new(Level::Manifest, scope, "media_type", detail)
                    .values(Some(json!(da.media_type)), Some(json!(db.media_type))),
            );
        }
        let (ma, mb) = (a.manifest(), b.manifest());
        findings.causes.extend(map_causes(
            Level::Manifest,
            scope,
            "manifest",
            &ma.annotations,
            &mb.annotations,
        ));
        if ma.config.media_type != mb.config.media_type {
            let detail = format!(
                "config media type {} -> {}",
                ma.config.media_type, mb.config.media_type
            );
            findings.causes.push(
                Cause::new(Level::Manifest, scope, "media_type", detail)
                    .path("config.mediaType")
                    .values(
                        Some(json!(ma.config.media_type)),
                        Some(json!(mb.config.media_type)),
                    ),
            );
        }
        if ma.config.digest != mb.config.digest {
            let detail = format!("config {} -> {}", ma.config.digest, mb.config.digest);
            findings.causes.push(
                Cause::new(Level::Manifest, scope, "digest", detail)
                    .path("config")
                    .values(Some(json!(ma.config.digest)), Some(json!(mb.config.digest)))
                    .consequence(),
            );
        }
    }
}

/// A digest that differs though every field is the same: the JSON bytes
/// (key order, whitespace) differ.
fn encoding_only(mut cause: Cause) -> Cause {
    cause.kind = "json_encoding".to_string();
    cause.detail = format!(
        "{}: same fields, different JSON bytes (key order or whitespace)",
        cause.detail
    );
    cause
}
