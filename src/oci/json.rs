//! "Exact bytes" JSON blobs: a serialized document together with the digest
//! of precisely those bytes. Everything we store or push goes through here,
//! so nothing is ever hashed in one form and written in another.
use anyhow::{Context, Result};
use serde::Serialize;

use super::descriptor::Descriptor;
use super::digest::Digest;

/// A document's exact bytes and their digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonBlob {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl JsonBlob {
    /// Serializes compactly. Key order is the struct field order, and every
    /// map in our types is a BTreeMap, so the bytes are a pure function of
    /// the value.
    pub fn of<T: Serialize>(value: &T) -> Result<JsonBlob> {
        let bytes = serde_json::to_vec(value).context("serializing JSON document")?;
        Ok(JsonBlob::from_bytes(bytes))
    }

    /// Wraps bytes received from elsewhere, hashing them as they are.
    pub fn from_bytes(bytes: Vec<u8>) -> JsonBlob {
        let digest = Digest::of_bytes(&bytes);
        JsonBlob { bytes, digest }
    }

    /// A descriptor of this blob with the given media type.
    pub fn descriptor(&self, media_type: &str) -> Descriptor {
        Descriptor::new(media_type, self.digest.clone(), self.bytes.len() as u64)
    }
}
