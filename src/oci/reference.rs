//! Owns: the ONE image reference type. Docker references normalized the
//! way docker and containers/image do it (`stagex/x:1` is
//! `docker.io/stagex/x:1`, `busybox` is `docker.io/library/busybox`), the
//! explicit-host form the registry client and `--source` take
//! (`HOST[:PORT]/REPO[:TAG|@DIGEST]`, nothing implied), and the
//! `matchRepoDigestOrExact` identity rule of containers-policy.json.
//! Pure: no I/O.
use std::fmt;

use anyhow::{bail, Result};

use crate::oci::digest::Digest;

const DEFAULT_DOMAIN: &str = "docker.io";

/// A parsed, normalized reference: `domain/path[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DockerReference {
    /// Registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub domain: String,
    /// Repository path inside the registry, e.g. `stagex/core-busybox`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl DockerReference {
    /// Parses and normalizes a reference; fails with the rule it broke.
    pub fn parse(text: &str) -> Result<DockerReference> {
        let (name_tag, digest) = match text.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|e| {
                    anyhow::anyhow!("invalid digest in image reference {text:?}: {e:#}")
                })?),
            ),
            None => (text, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(name_tag[last_slash + i + 1..].to_string()),
            ),
            None => (name_tag, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-'))
                });
            if !valid {
                bail!("invalid tag {tag:?} in image reference {text:?}");
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if domain.is_empty() || path.is_empty() || !path.split('/').all(valid_component) {
            bail!(
                "invalid image reference {text:?}: repository path components must be lowercase letters, digits and separators (. _ -)"
            );
        }
        Ok(DockerReference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// A reference that names its registry host (`127.0.0.1:5000/a/b:1`,
    /// `reg.example/a@sha256:..`), never normalized: a first component that
    /// is not a host is an error telling how to write one. The result has
    /// exactly the host and path written; tag and digest as written.
    pub fn parse_explicit(text: &str) -> Result<DockerReference> {
        let (first, rest) = text
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("{text:?}: expected HOST[:PORT]/REPOSITORY"))?;
        if !is_registry_host(first) {
            bail!("{text:?}: the first component {first:?} is not a registry host (write e.g. 127.0.0.1:5000/{text})");
        }
        if rest.is_empty() || rest.ends_with('/') {
            bail!("{text:?}: empty repository name");
        }
        let parsed = DockerReference::parse(text)?;
        if parsed.domain != first {
            bail!("{text:?}: the registry host {first:?} is not valid");
        }
        Ok(parsed)
    }

    /// The tag, else the digest, else `latest`: what to ask a registry for.
    pub fn tag_or_digest(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(digest)) => digest.to_string(),
            (Some(tag), None) => tag.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `domain/path`, without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The same reference without its digest.
    pub fn without_digest(&self) -> DockerReference {
        DockerReference {
            digest: None,
            ..self.clone()
        }
    }

    /// containers/image's default `matchRepoDigestOrExact`: `self` is the
    /// reference the image is looked up by, `signed` the one in the payload.
    /// A signed reference without tag or digest never matches.
    pub fn matches_signed(&self, signed: &DockerReference) -> bool {
        if signed.tag.is_none() && signed.digest.is_none() {
            return false;
        }
        match (&self.tag, &self.digest) {
            // By tag (with or without a digest, which the payload check
            // compares on its own): exactly that repo:tag was signed. A
            // signature for `:1.0` never covers `:latest@sha256:...`.
            (Some(_), _) => &self.without_digest() == signed,
            (None, Some(_)) => self.repository() == signed.repository(),
            (None, None) => false,
        }
    }
}

/// True when the first component of a reference names a registry host:
/// it holds a '.' or a ':' (a domain, a port) or is `localhost`.
pub fn is_registry_host(first: &str) -> bool {
    !first.is_empty() && (first.contains(['.', ':']) || first == "localhost")
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl fmt::Display for DockerReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> DockerReference {
        DockerReference::parse(s).unwrap()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(r("stagex/x:1"), r("docker.io/stagex/x:1"));
        assert_eq!(r("index.docker.io/stagex/x:1"), r("docker.io/stagex/x:1"));
        assert_eq!(r("busybox").to_string(), "docker.io/library/busybox");
        assert_eq!(r("127.0.0.1:5000/a/b:t").domain, "127.0.0.1:5000");
        assert_eq!(r("127.0.0.1:5000/a/b:t").tag.as_deref(), Some("t"));
        assert_eq!(r("localhost/a").domain, "localhost");
        assert_eq!(
            r("quay.io/stagex/core-busybox:1.37.0").path,
            "stagex/core-busybox"
        );
        assert_ne!(r("quay.io/stagex/x:1"), r("docker.io/stagex/x:1"));
        let hex = "ab".repeat(32);
        let d = r(&format!("stagex/x:1@sha256:{hex}"));
        assert_eq!(d.digest.unwrap().hex(), hex);
        for bad in [
            "stagex/X",
            "stagex/x:",
            "stagex/-x",
            "stagex/x@sha256:zz",
            "",
            "a//b",
        ] {
            assert!(DockerReference::parse(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn explicit_references_name_their_host() {
        let e = DockerReference::parse_explicit("127.0.0.1:5000/me/rust-jq:1").unwrap();
        assert_eq!(
            (e.domain.as_str(), e.path.as_str(), e.tag_or_digest()),
            ("127.0.0.1:5000", "me/rust-jq", "1".to_string())
        );
        let one = DockerReference::parse_explicit("h.example/x").unwrap();
        assert_eq!(
            (one.path.as_str(), one.tag_or_digest()),
            ("x", "latest".into())
        );
        let hex = "ab".repeat(32);
        let pinned = DockerReference::parse_explicit(&format!("localhost/a@sha256:{hex}")).unwrap();
        assert_eq!(pinned.tag_or_digest(), format!("sha256:{hex}"));
        for bad in [
            "x",
            "stagex/core",
            "host.example",
            "host.example/",
            "h.example/X",
        ] {
            assert!(
                DockerReference::parse_explicit(bad).is_err(),
                "accepted {bad}"
            );
        }
    }

    #[test]
    fn identity_rule_is_match_repo_digest_or_exact() {
        let hex = "ab".repeat(32);
        let by_tag = r("stagex/x:1");
        assert!(by_tag.matches_signed(&r("docker.io/stagex/x:1")));
        assert!(!by_tag.matches_signed(&r("stagex/x:2")));
        assert!(!by_tag.matches_signed(&r("stagex/y:1")));
        let by_digest = r(&format!("stagex/x@sha256:{hex}"));
        assert!(by_digest.matches_signed(&r("stagex/x:anything")));
        assert!(!by_digest.matches_signed(&r("stagex/y:1")));
        assert!(!by_digest.matches_signed(&r("stagex/x")));
        // A tag next to the digest is what was asked for: it must match.
        let both = r(&format!("stagex/x:1@sha256:{hex}"));
        assert!(both.matches_signed(&r("docker.io/stagex/x:1")));
        assert!(!both.matches_signed(&r("stagex/x:latest")));
        assert!(!both.matches_signed(&r("stagex/y:1")));
    }
}
