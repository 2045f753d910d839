//! Content descriptors and platforms, as in the OCI image spec.
//!
//! Field order in these structs IS the JSON key order we write; maps are
//! `BTreeMap`s so annotations always serialize sorted.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// Points at a blob: media type, digest, size, and optional extras.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// An OS/architecture pair (plus variant), e.g. `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant: None,
        }
    }

    /// The platform this binary runs on, in OCI terms.
    pub fn host() -> Platform {
        let arch = oci_architecture(std::env::consts::ARCH);
        let mut platform = Platform::new("linux", arch);
        if arch == "arm64" {
            platform.variant = Some("v8".to_string());
        }
        platform
    }

    /// True when `self` (a wanted platform) accepts `other` (an offered one).
    /// A wanted platform without a variant accepts any variant; `arm64`
    /// treats a missing variant as `v8`.
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != other.architecture {
            return false;
        }
        let normalize = |p: &Platform| match (&p.variant, p.architecture.as_str()) {
            (None, "arm64") => Some("v8".to_string()),
            (v, _) => v.clone(),
        };
        match (&self.variant, normalize(other)) {
            (None, _) => true,
            (Some(_), offered) => normalize(self) == offered,
        }
    }

    /// The machine name `uname -m` prints on this platform (for `{arch}`).
    pub fn uname_machine(&self) -> &str {
        match self.architecture.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "386" => "i386",
            "arm" => "armv7l",
            other => other,
        }
    }
}

/// Maps a Rust/uname architecture name to the OCI one.
pub fn oci_architecture(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "arm" => "arm",
        other => other,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = anyhow::Error;
    /// Parses `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
    fn from_str(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            bail!("invalid platform {text:?}: expected os/arch[/variant], e.g. linux/amd64");
        }
        let mut platform = Platform::new(parts[0], oci_architecture(parts[1]));
        platform.variant = parts.get(2).map(|v| v.to_string());
        Ok(platform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parses_and_prints() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.architecture, "arm64");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(
            "linux/x86_64".parse::<Platform>().unwrap().architecture,
            "amd64"
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v8".parse::<Platform>().is_err());
    }

    #[test]
    fn platform_matching_handles_variants() {
        let want: Platform = "linux/arm64".parse().unwrap();
        let offered: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(want.matches(&offered));
        assert!(offered.matches(&"linux/arm64".parse().unwrap()));
        assert!(!want.matches(&"linux/amd64".parse().unwrap()));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&"linux/arm/v6".parse().unwrap()));
    }

    #[test]
    fn descriptor_json_has_fixed_key_order() {
        let mut d = Descriptor::new("m", Digest::of_bytes(b""), 0);
        d.annotations.insert("z".into(), "1".into());
        d.annotations.insert("a".into(), "2".into());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"mediaType\":\"m\",\"digest\":\"{}\",\"size\":0,\"annotations\":{{\"a\":\"2\",\"z\":\"1\"}}}}",
                Digest::of_bytes(b"")
            )
        );
    }
}
