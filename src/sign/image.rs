//! Which manifests to sign or verify, and under which identity.
//!
//! A package name `<stage>-<name>` resolves through `out/<stage>-<name>/`
//! (an OCI layout whose index.json points at a manifest, as skopeo and umoci
//! write, or at an image index, as buildx writes): every per-platform
//! manifest is one target, signed over its exact bytes. The identity is
//! `<namespace>/<stage>-<name>:<version>`, the version taken from the
//! `org.opencontainers.image.version` annotation, else the layout's
//! `ref.name` tag, else `packages/<stage>/<name>/package.toml`.
//! An image reference `repo:tag@sha256:<hex>` names one manifest directly.
//! `out/` is read through `image::OutDir` only, and every blob of a
//! package image is checked against its name (`OutDir::check_blobs`)
//! before the image becomes a target; targets are taken from what that
//! check read (`image::checked`), never from a second read of `out/`.
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::reference::DockerReference;
use crate::image::{CheckedImage, CheckedImages, OutDir, OutManifest};
use crate::oci::digest::Digest;
use crate::release::digests::ReleaseEntry;

/// One manifest to sign or verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageTarget {
    /// What the user named (package name or reference).
    pub name: String,
    /// The per-platform manifest digest (what a signature covers).
    pub digest: Digest,
    /// `os/arch[/variant]` when known.
    pub platform: Option<String>,
    /// The identity written into new signatures (`stagex/core-x:1.0`).
    pub identity: String,
    /// What a signature's identity must match (tag: exactly; digest: repository).
    pub reference: DockerReference,
    /// The lookaside directory prefix (repository path, no registry host).
    pub repository_path: String,
}

impl ImageTarget {
    /// A manifest known only by repository and digest (no platform, no
    /// tag): the one builder of such targets (release digests files for
    /// `verify --digests`, `stagex sigs` image sets, `repo@sha256:..`
    /// arguments). A signature counts for it when it signs any tag of the
    /// repository (containers/image's pull-by-digest rule), so the identity
    /// a new signature would carry is the repository itself.
    pub fn by_digest(name: &str, digest: Digest, reference: DockerReference) -> ImageTarget {
        ImageTarget {
            name: name.to_string(),
            digest,
            platform: None,
            identity: reference.repository(),
            repository_path: reference.path.clone(),
            reference,
        }
    }

    /// `name` (a package name `core-x`, or a repository path under the
    /// namespace) at `digest`, as `<namespace>/<name>@<digest>`.
    pub fn in_namespace(namespace: &str, name: &str, digest: Digest) -> Result<ImageTarget> {
        let namespace = namespace.trim_end_matches('/');
        let text = format!("{namespace}/{name}@{digest}");
        let reference = DockerReference::parse(&text)
            .with_context(|| format!("image {name:?} in namespace {namespace:?}"))?;
        Ok(ImageTarget::by_digest(name, digest, reference))
    }

    /// One target per digests-file entry, in `namespace`; an error names
    /// the entry's file and line. Used by `verify --digests` and `sigs`.
    pub fn from_entries<'e>(
        namespace: &str,
        entries: impl IntoIterator<Item = &'e ReleaseEntry>,
    ) -> Result<Vec<ImageTarget>> {
        entries
            .into_iter()
            .map(|e| {
                ImageTarget::in_namespace(namespace, &e.name, e.digest.clone())
                    .with_context(|| e.source.clone())
            })
            .collect()
    }
}

/// Where names are resolved.
#[derive(Clone, Debug)]
pub struct Resolver<'a> {
    pub out: &'a Path,
    pub packages: &'a Path,
    /// `stagex`, or with a host: `127.0.0.1:5000/stagex`.
    pub namespace: &'a str,
}

/// True for an argument that is an image reference rather than a package name.
pub fn is_reference(arg: &str) -> bool {
    arg.contains(['/', ':', '@'])
}

impl<'a> Resolver<'a> {
    /// The resolver of `stagex sign`/`verify`: out/ and packages/ from the
    /// settings, the namespace from `--identity` or the settings.
    pub fn from_settings(
        settings: &'a crate::settings::Settings,
        identity: Option<&'a str>,
    ) -> Resolver<'a> {
        Resolver {
            out: &settings.out,
            packages: &settings.packages,
            namespace: identity.unwrap_or(&settings.namespace),
        }
    }

    /// Every package layout in `out/` (sorted), or the named ones.
    pub fn resolve_all(&self, args: &[String]) -> Result<Vec<ImageTarget>> {
        let names: Vec<String> = if args.is_empty() {
            let names = OutDir::open(self.out)
                .images()
                .context("build images first, or name images to sign")?;
            if names.is_empty() {
                bail!("no OCI layout in {}: nothing to do", self.out.display());
            }
            names
        } else {
            args.to_vec()
        };
        let checked = self.check_blobs(&names)?;
        let mut targets = Vec::new();
        for name in &names {
            targets.extend(self.resolve_checked(name, &checked)?);
        }
        Ok(targets)
    }

    /// Nothing is signed or verified over bytes nobody looked at: every
    /// blob of the package images among `args` is checked against its name
    /// (all at once, on every core) before any of them is resolved, and
    /// they are resolved from what the check read (`image::checked`).
    fn check_blobs(&self, args: &[String]) -> Result<CheckedImages> {
        let packages: Vec<String> = args.iter().filter(|a| !is_reference(a)).cloned().collect();
        if packages.is_empty() {
            return Ok(CheckedImages::default());
        }
        Ok(OutDir::open(self.out).check_blobs(&packages)?)
    }

    fn resolve_checked(&self, arg: &str, checked: &CheckedImages) -> Result<Vec<ImageTarget>> {
        if is_reference(arg) {
            return Ok(vec![reference_target(arg)?]);
        }
        let image = checked.get(arg).with_context(|| {
            format!("image {arg}: no build output (run `stagex build {arg}` first)")
        })?;
        self.package_targets(image)
    }

    /// The targets of a checked package image, from the check's snapshot
    /// alone: what was hashed is what gets signed, whatever `out/` holds now.
    pub fn package_targets(&self, image: &CheckedImage) -> Result<Vec<ImageTarget>> {
        let package = image.id.as_str();
        let found = image.manifests()?;
        let tag_version = image.ref_name().map(|r| tag_of(&r));
        let mut package_version = None;
        let mut targets = Vec::new();
        for OutManifest {
            descriptor,
            version,
        } in found
        {
            let version = match version.or_else(|| tag_version.clone()) {
                Some(v) => v,
                None => {
                    if package_version.is_none() {
                        package_version = Some(package_toml_version(self.packages, package, 0)?);
                    }
                    package_version.clone().expect("set above")
                }
            };
            let identity = format!(
                "{}/{package}:{version}",
                self.namespace.trim_end_matches('/')
            );
            let reference = DockerReference::parse(&identity)
                .with_context(|| format!("image {package}: identity {identity:?}"))?;
            targets.push(ImageTarget {
                name: package.to_string(),
                digest: descriptor.digest.clone(),
                platform: descriptor.platform.as_ref().map(|p| p.to_string()),
                identity,
                repository_path: reference.path.clone(),
                reference,
            });
        }
        Ok(targets)
    }
}

/// `repo:tag@sha256:<hex>` (the tag is the identity to sign, and verify
/// then wants exactly that repo:tag); `repo@sha256:<hex>` verifies any
/// signed tag of the repository (containers/image's pull-by-digest rule).
fn reference_target(arg: &str) -> Result<ImageTarget> {
    let reference = DockerReference::parse(arg)?;
    let Some(digest) = reference.digest.clone() else {
        bail!("image reference {arg:?} has no digest: write it as REPO:TAG@sha256:<hex>");
    };
    let tagged = reference.tag.is_some();
    let mut target = ImageTarget::by_digest(arg, digest, reference);
    if tagged {
        // The tag is the identity to sign (and verify wants exactly it).
        target.identity = arg.split_once('@').map_or(arg, |(n, _)| n).to_string();
    }
    Ok(target)
}

/// A ref.name annotation is a tag or a full reference: take the tag.
fn tag_of(ref_name: &str) -> String {
    if ref_name.contains(['/', '@']) {
        if let Ok(r) = DockerReference::parse(ref_name) {
            if let Some(tag) = r.tag {
                return tag;
            }
        }
    }
    ref_name.rsplit(':').next().unwrap_or(ref_name).to_string()
}

/// `version` from `packages/<stage>/<name>/package.toml` (following `version_from`).
fn package_toml_version(packages: &Path, package: &str, depth: usize) -> Result<String> {
    let Some((stage, name)) = package.split_once('-') else {
        bail!("image {package:?}: no version annotation or tag, and not a <stage>-<name> package name");
    };
    let path = packages.join(stage).join(name).join("package.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "image {package}: no version annotation or tag in out/{package}, and cannot read {}",
            path.display()
        )
    })?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("{}: invalid TOML", path.display()))?;
    let section = value.get("package");
    if let Some(v) = section
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
    {
        return Ok(v.to_string());
    }
    if let Some(from) = section
        .and_then(|p| p.get("version_from"))
        .and_then(|v| v.as_str())
    {
        if depth > 8 {
            bail!("{}: version_from chain too long", path.display());
        }
        return package_toml_version(packages, from, depth + 1);
    }
    bail!("{}: [package] has no version", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_one_manifest() {
        let hex = "cd".repeat(32);
        let t =
            reference_target(&format!("127.0.0.1:5000/stagex/core-x:1.0@sha256:{hex}")).unwrap();
        assert_eq!(t.identity, "127.0.0.1:5000/stagex/core-x:1.0");
        assert_eq!(t.repository_path, "stagex/core-x");
        assert_eq!(t.digest.hex(), hex);
        assert!(reference_target("stagex/core-x:1.0").is_err());
        assert_eq!(tag_of("1.37.0"), "1.37.0");
        assert_eq!(tag_of("docker.io/stagex/x:2"), "2");
        assert!(is_reference("stagex/x") && !is_reference("core-busybox"));
    }
}
