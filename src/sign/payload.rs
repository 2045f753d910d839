//! The `atomic container signature` JSON payload (containers-signature(5)).
//!
//! Owns: building the exact bytes we sign (compact JSON, sorted keys, as
//! skopeo writes them) and parsing a signed payload STRICTLY: `critical` and
//! its members must have exactly the documented keys, no duplicates, the
//! documented types; `optional` ignores unknown keys but checks the types of
//! `creator` (string) and `timestamp` (integer). Pure: no I/O.
use serde::{Deserialize, Serialize};

use crate::oci::digest::Digest;

/// The only accepted value of `critical.type`.
pub const SIGNATURE_TYPE: &str = "atomic container signature";

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
}
