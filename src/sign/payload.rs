//! The `atomic container signature` JSON payload (containers-signature(5)).
//!
//! Owns: building the exact bytes we sign (compact JSON, sorted keys, as
//! skopeo writes them) and parsing a signed payload STRICTLY: `critical` and
//! its members must have exactly the documented keys, no duplicates, the
//! documented types; `optional` ignores unknown keys but checks the types of
//! `creator` (string) and `timestamp` (integer). Pure: no I/O.
//!
//! Also recognizes (never writes) the legacy StageX payload of signatures
//! made before mid-2025: a JSON array of one object whose `critical.type`
//! is `pgp container image signature`, the digest bare hex without
//! `sha256:`, the identity a repository without tag, `optional` null.
use serde::{Deserialize, Serialize};

use crate::oci::digest::Digest;

/// The only accepted value of `critical.type`.
pub const SIGNATURE_TYPE: &str = "atomic container signature";

/// `critical.type` of the legacy StageX payload (read, never written).
pub const LEGACY_SIGNATURE_TYPE: &str = "pgp container image signature";

/// Which payload form a signature carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadFormat {
    /// containers/image's `atomic container signature` (what we write).
    Current,
    /// StageX's pre-2025.06 array form (see the module doc).
    Legacy,
}

/// A parsed (or to-be-built) payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// `critical.identity.docker-reference`, as signed (not normalized).
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`.
    pub manifest_digest: Digest,
    /// `optional.creator`.
    pub creator: Option<String>,
    /// `optional.timestamp` (seconds since the epoch).
    pub timestamp: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    critical: Critical,
    optional: Optional,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Lenient: unknown keys are ignored, known keys must have the right type.
#[derive(Serialize, Deserialize)]
struct Optional {
    #[serde(skip_serializing_if = "Option::is_none")]
    creator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
}

/// Why a payload was rejected.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is not a valid signature JSON document: {0}")]
    Json(String),
    #[error("payload type is {0:?}, expected \"atomic container signature\"")]
    WrongType(String),
    #[error("payload manifest digest {0:?} is not a sha256 digest")]
    BadDigest(String),
    #[error("legacy payload must be a JSON array of exactly one object, found {0}")]
    LegacyShape(usize),
}

/// The legacy StageX payload: `optional` may be null (or an object).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyWire {
    critical: Critical,
    #[allow(dead_code)]
    optional: Option<serde_json::Value>,
}

impl Payload {
    /// The exact bytes to sign: compact JSON with sorted keys.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            critical: Critical {
                identity: Identity {
                    docker_reference: self.docker_reference.clone(),
                },
                image: Image {
                    docker_manifest_digest: self.manifest_digest.to_string(),
                },
                kind: SIGNATURE_TYPE.to_string(),
            },
            optional: Optional {
                creator: self.creator.clone(),
                timestamp: self.timestamp,
            },
        };
        serde_json::to_vec(&wire).expect("payload serialization cannot fail")
    }

    /// Parses either form strictly: a document starting with `[` is read
    /// as the legacy StageX payload, anything else as the current one.
    pub fn parse_any(bytes: &[u8]) -> Result<(Payload, PayloadFormat), PayloadError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return Payload::parse_legacy(bytes).map(|p| (p, PayloadFormat::Legacy));
        }
        Payload::parse(bytes).map(|p| (p, PayloadFormat::Current))
    }

    /// The legacy array form: type `pgp container image signature`, the
    /// digest as bare 64-hex (a `sha256:` prefix is not that format).
    pub fn parse_legacy(bytes: &[u8]) -> Result<Payload, PayloadError> {
        let mut wires: Vec<LegacyWire> =
            serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))?;
        if wires.len() != 1 {
            return Err(PayloadError::LegacyShape(wires.len()));
        }
        let wire = wires.remove(0);
        if wire.critical.kind != LEGACY_SIGNATURE_TYPE {
            return Err(PayloadError::WrongType(wire.critical.kind));
        }
        let hex = wire.critical.image.docker_manifest_digest;
        let manifest_digest = Digest::from_hex(&hex).map_err(|_| PayloadError::BadDigest(hex))?;
        Ok(Payload {
            docker_reference: wire.critical.identity.docker_reference,
            manifest_digest,
            creator: None,
            timestamp: None,
        })
    }

    /// Parses signed bytes strictly (see the module doc).
    pub fn parse(bytes: &[u8]) -> Result<Payload, PayloadError> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))?;
        if wire.critical.kind != SIGNATURE_TYPE {
            return Err(PayloadError::WrongType(wire.critical.kind));
        }
        let digest_text = wire.critical.image.docker_manifest_digest;
        let manifest_digest =
            Digest::parse(&digest_text).map_err(|_| PayloadError::BadDigest(digest_text))?;
        Ok(Payload {
            docker_reference: wire.critical.identity.docker_reference,
            manifest_digest,
            creator: wire.optional.creator,
            timestamp: wire.optional.timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sample() -> Payload {
        Payload {
            docker_reference: "docker.io/stagex/core-busybox:1.37.0".into(),
            manifest_digest: Digest::from_hex(HEX).unwrap(),
            creator: Some("stagex 0.1.0".into()),
            timestamp: Some(1700000000),
        }
    }

    fn doc(critical_extra: &str, optional: &str) -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"stagex/x:1"}},"image":{{"docker-manifest-digest":"sha256:{HEX}"}},"type":"atomic container signature"{critical_extra}}},"optional":{optional}}}"#
        )
    }

    #[test]
    fn builds_the_bytes_skopeo_writes() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"docker.io/stagex/core-busybox:1.37.0"}},"image":{{"docker-manifest-digest":"sha256:{HEX}"}},"type":"atomic container signature"}},"optional":{{"creator":"stagex 0.1.0","timestamp":1700000000}}}}"#
            )
        );
        assert_eq!(Payload::parse(text.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn lenient_optional_strict_critical() {
        let ok = doc("", r#"{"unknown":[1,2],"timestamp":5}"#);
        assert_eq!(Payload::parse(ok.as_bytes()).unwrap().timestamp, Some(5));
        assert!(Payload::parse(doc("", "{}").as_bytes()).is_ok());
        for bad in [
            doc(r#","extra":1"#, "{}"),
            doc(r#","type":"atomic container signature""#, "{}"),
            doc("", r#"{"timestamp":1.5}"#),
            doc("", r#"{"creator":7}"#),
            doc("", r#"{"timestamp":"1"}"#),
            r#"{"critical":{}}"#.to_string(),
            format!("{} ", doc("", "{}")) + "x",
            doc("", "{}").replace("atomic container signature", "other"),
            doc("", "{}").replace(&format!("sha256:{HEX}"), "sha256:short"),
            doc("", "{}").replace("\"image\":{", "\"image\":{\"x\":1,"),
            doc("", "{}").replace("\"identity\":{", "\"identity\":{\"x\":1,"),
            doc("", "{}").replace("{\"critical\"", "{\"x\":1,\"critical\""),
        ] {
            assert!(Payload::parse(bad.as_bytes()).is_err(), "accepted {bad}");
        }
    }

    fn legacy(critical_extra: &str, digest: &str, optional: &str) -> String {
        format!(
            r#"[{{"critical":{{"identity":{{"docker-reference":"stagex/core-bash"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"pgp container image signature"{critical_extra}}},"optional":{optional}}}]"#
        )
    }

    #[test]
    fn legacy_stagex_payload_is_recognized_strictly() {
        let (p, format) = Payload::parse_any(legacy("", HEX, "null").as_bytes()).unwrap();
        assert_eq!(format, PayloadFormat::Legacy);
        assert_eq!(p.docker_reference, "stagex/core-bash");
        assert_eq!(p.manifest_digest.hex(), HEX);
        let (_, format) = Payload::parse_any(sample().to_bytes().as_slice()).unwrap();
        assert_eq!(format, PayloadFormat::Current);
        // The current parser never accepts the legacy form.
        assert!(Payload::parse(legacy("", HEX, "null").as_bytes()).is_err());
        let two = legacy("", HEX, "null").replace("}]", "},{}]");
        for bad in [
            legacy("", &format!("sha256:{HEX}"), "null"),
            legacy("", "abc", "null"),
            legacy(r#","extra":1"#, HEX, "null"),
            legacy("", HEX, "null").replace(
                "pgp container image signature",
                "atomic container signature",
            ),
            "[]".to_string(),
            two,
        ] {
            assert!(
                Payload::parse_any(bad.as_bytes()).is_err(),
                "accepted {bad}"
            );
        }
    }
}
