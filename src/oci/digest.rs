//! SHA-256 content digests: parsing, validation, and computing them while
//! bytes stream past (so no blob is ever read twice just to hash it).
//!
//! Only `sha256` is accepted: it is the one algorithm every registry, skopeo
//! and podman speak, and refusing others keeps verification total.
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>`; rejects other algorithms, upper case and bad length.
    pub fn parse(text: &str) -> Result<Digest> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            bail!("invalid digest {text:?}: expected \"sha256:<64 hex digits>\"");
        };
        Digest::from_hex(hex).map_err(|_| {
            anyhow::anyhow!(
                "invalid digest {text:?}: expected \"sha256:<64 lowercase hex digits>\""
            )
        })
    }

    /// Builds a digest from its 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Result<Digest> {
        let valid = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            bail!("invalid sha256 hex {hex:?}: expected 64 lowercase hex digits");
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of a byte string.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of everything a reader yields, and the byte count.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
        let mut hashing = HashingWriter::new(io::sink());
        let size = io::copy(&mut reader, &mut hashing)?;
        Ok((hashing.finish().0, size))
    }

    /// The digest a finished SHA-256 state holds.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 hex digits, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts every byte it passes on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Returns the digest and size of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (Digest::from_hasher(self.hasher), self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that checks, when it reaches the end, that what it read has the
/// expected digest and size. A mismatch is an `InvalidData` error at EOF, so a
/// consumer that reads to the end can never accept tampered bytes.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected: Digest,
    expected_size: Option<u64>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            expected,
            expected_size,
            verified: false,
        }
    }

    /// True once the whole stream was read and matched.
    pub fn verified(&self) -> bool {
        self.verified
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.count += n as u64;
            if let Some(limit) = self.expected_size {
                if self.count > limit {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "blob {} is larger than its declared size {limit}",
                            self.expected
                        ),
                    ));
                }
            }
            return Ok(n);
        }
        if !self.verified && !buf.is_empty() {
            let actual = Digest::from_hasher(self.hasher.clone());
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "content does not match its digest: expected {}, got {actual}",
                        self.expected
                    ),
                ));
            }
            if let Some(size) = self.expected_size {
                if size != self.count {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "blob {} has {} bytes, its descriptor says {size}",
                            self.expected, self.count
                        ),
                    ));
                }
            }
            self.verified = true;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(Digest::of_bytes(b"").hex(), EMPTY);
        assert_eq!(Digest::of_bytes(b"").to_string(), format!("sha256:{EMPTY}"));
    }

    #[test]
    fn parse_rejects_other_algorithms_case_and_length() {
        assert!(Digest::parse(&format!("sha256:{EMPTY}")).is_ok());
        assert!(Digest::parse(&format!("sha512:{EMPTY}")).is_err());
        assert!(Digest::parse(&format!("sha256:{}", EMPTY.to_uppercase())).is_err());
        assert!(Digest::parse(&format!("sha256:{}", &EMPTY[1..])).is_err());
        assert!(Digest::parse(EMPTY).is_err());
    }

    #[test]
    fn serde_round_trip_is_a_plain_string() {
        let d = Digest::of_bytes(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn hashing_writer_matches_of_bytes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (d, n, inner) = w.finish();
        assert_eq!(d, Digest::of_bytes(b"hello world"));
        assert_eq!(n, 11);
        assert_eq!(inner, b"hello world");
    }

    #[test]
    fn verifying_reader_accepts_match_and_rejects_tamper() {
        let good = Digest::of_bytes(b"payload");
        let mut out = Vec::new();
        let mut r = VerifyingReader::new(&b"payload"[..], good.clone(), Some(7));
        r.read_to_end(&mut out).unwrap();
        assert!(r.verified());

        let mut r = VerifyingReader::new(&b"paylOad"[..], good.clone(), None);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let mut r = VerifyingReader::new(&b"payload"[..], good, Some(6));
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
