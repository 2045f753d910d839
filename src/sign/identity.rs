//! Owns: the `signedIdentity` rules of containers-policy.json that
//! `stagex verify` and `stagex policy` offer: `matchRepoDigestOrExact` (the
//! default), `matchRepository` and `remapIdentity` (prefix + signedPrefix,
//! for mirrors: quay.io/stagex -> docker.io/stagex), and their policy.json
//! form. Pure: no I/O. It does not parse references (see `reference`).
use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::reference::DockerReference;

/// How the identity signed into a payload must relate to the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IdentityRule {
    /// Pulled by tag: exactly that repo:tag was signed; by digest: the
    /// same repository (any tag).
    #[default]
    MatchRepoDigestOrExact,
    /// The same repository, whatever tag was signed.
    MatchRepository,
    /// If the image's repository starts with `prefix`, that prefix is
    /// replaced by `signed_prefix`; then `matchRepoDigestOrExact`.
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

impl IdentityRule {
    /// From the containers-policy name (and, for `remapIdentity`, the
    /// prefixes).
    pub fn from_name(
        name: &str,
        prefix: Option<&str>,
        signed_prefix: Option<&str>,
    ) -> Result<IdentityRule> {
        match (name, prefix, signed_prefix) {
            ("matchRepoDigestOrExact", None, None) => Ok(IdentityRule::MatchRepoDigestOrExact),
            ("matchRepository", None, None) => Ok(IdentityRule::MatchRepository),
            ("remapIdentity", Some(p), Some(s)) => Ok(IdentityRule::RemapIdentity {
                prefix: normalize_prefix(p)?,
                signed_prefix: normalize_prefix(s)?,
            }),
            ("remapIdentity", _, _) => {
                bail!("remapIdentity needs both --prefix and --signed-prefix (e.g. quay.io/stagex and docker.io/stagex)")
            }
            ("matchRepoDigestOrExact" | "matchRepository", _, _) => {
                bail!("--prefix/--signed-prefix only go with remapIdentity")
            }
            (other, _, _) => bail!(
                "unknown identity rule {other:?}: use matchRepoDigestOrExact, matchRepository or remapIdentity"
            ),
        }
    }

    /// The containers-policy name.
    pub fn name(&self) -> &'static str {
        match self {
            IdentityRule::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            IdentityRule::MatchRepository => "matchRepository",
            IdentityRule::RemapIdentity { .. } => "remapIdentity",
        }
    }

    /// True when `signed` (from a current-format payload) covers `image`
    /// (the reference the image is known by).
    pub fn matches(&self, image: &DockerReference, signed: &DockerReference) -> bool {
        match self {
            IdentityRule::MatchRepoDigestOrExact => image.matches_signed(signed),
            IdentityRule::MatchRepository => image.repository() == signed.repository(),
            IdentityRule::RemapIdentity { .. } => self.remap(image).matches_signed(signed),
        }
    }

    /// The legacy StageX payload signs a bare repository: it covers the
    /// image when the (remapped) repositories are equal.
    pub fn matches_repository(&self, image: &DockerReference, signed: &DockerReference) -> bool {
        self.remap(image).repository() == signed.repository()
    }

    /// `image` with `prefix` replaced by `signed_prefix` when it applies.
    pub fn remap(&self, image: &DockerReference) -> DockerReference {
        let IdentityRule::RemapIdentity {
            prefix,
            signed_prefix,
        } = self
        else {
            return image.clone();
        };
        let repository = image.repository();
        let rest = if repository == *prefix {
            ""
        } else if let Some(rest) = repository.strip_prefix(&format!("{prefix}/")) {
            rest
        } else {
            return image.clone();
        };
        let mut text = signed_prefix.clone();
        if !rest.is_empty() {
            text = format!("{text}/{rest}");
        }
        match DockerReference::parse(&text) {
            Ok(mut remapped) => {
                remapped.tag = image.tag.clone();
                remapped.digest = image.digest.clone();
                remapped
            }
            Err(_) => image.clone(),
        }
    }

    /// The `signedIdentity` object of containers-policy.json.
    pub fn policy_json(&self) -> Value {
        match self {
            IdentityRule::RemapIdentity {
                prefix,
                signed_prefix,
            } => json!({"type": "remapIdentity", "prefix": prefix, "signedPrefix": signed_prefix}),
            other => json!({"type": other.name()}),
        }
    }
}

/// A prefix as containers/image compares it: fully expanded
/// (`stagex` -> `docker.io/stagex`; a bare `host[:port]` stays a host).
pub fn normalize_prefix(prefix: &str) -> Result<String> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        bail!("empty identity prefix");
    }
    if !prefix.contains('/') && prefix.contains(['.', ':']) {
        return Ok(prefix.to_string());
    }
    // Parsed as a namespace (one more component), so `stagex` is not
    // expanded like an official image (`docker.io/library/stagex`).
    let reference = DockerReference::parse(&format!("{prefix}/x"))?;
    if reference.tag.is_some() || reference.digest.is_some() {
        bail!("identity prefix {prefix:?} must be a registry, namespace or repository, without tag or digest");
    }
    let repository = reference.repository();
    Ok(repository
        .strip_suffix("/x")
        .unwrap_or(&repository)
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> DockerReference {
        DockerReference::parse(s).unwrap()
    }

    #[test]
    fn rules_as_containers_policy_states_them() {
        let hex = "ab".repeat(32);
        let by_tag = r("stagex/x:1");
        let by_digest = r(&format!("stagex/x@sha256:{hex}"));
        let exact = IdentityRule::default();
        assert!(exact.matches(&by_tag, &r("stagex/x:1")));
        assert!(!exact.matches(&by_tag, &r("stagex/x:2")));
        assert!(exact.matches(&by_digest, &r("stagex/x:2")));
        let repo = IdentityRule::MatchRepository;
        assert!(repo.matches(&by_tag, &r("stagex/x:2")));
        assert!(!repo.matches(&by_tag, &r("stagex/y:1")));
        let remap =
            IdentityRule::from_name("remapIdentity", Some("quay.io/stagex"), Some("stagex"))
                .unwrap();
        assert_eq!(remap.policy_json()["signedPrefix"], "docker.io/stagex");
        let mirror = r("quay.io/stagex/x:1");
        assert!(remap.matches(&mirror, &r("docker.io/stagex/x:1")));
        assert!(!remap.matches(&mirror, &r("docker.io/stagex/x:2")));
        assert!(!exact.matches(&mirror, &r("docker.io/stagex/x:1")));
        // Not under the prefix: unchanged.
        assert!(!remap.matches(&r("quay.io/other/x:1"), &r("docker.io/stagex/x:1")));
        // `quay.io/stagexx` is not under `quay.io/stagex`.
        assert!(!remap.matches(&r("quay.io/stagexx/x:1"), &r("docker.io/stagex/x:1")));
        assert!(remap.matches_repository(&mirror, &r("stagex/x")));
        let host =
            IdentityRule::from_name("remapIdentity", Some("127.0.0.1:5000"), Some("docker.io"))
                .unwrap();
        assert!(host.matches(&r("127.0.0.1:5000/stagex/x:1"), &r("stagex/x:1")));
        assert!(IdentityRule::from_name("remapIdentity", None, None).is_err());
        assert!(IdentityRule::from_name("matchExact", None, None).is_err());
    }
}
