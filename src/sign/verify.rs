//! Checking one signature blob, in containers/image's order: the OpenPGP
//! format (a binary signed message, first byte rules of simple-signing.md),
//! the cryptographic check against the trusted keyring, the signer (the
//! PRIMARY fingerprint, with key state now), then the strict payload, the
//! manifest digest and the identity.
//!
//! Owns the reasons a signature does not count (`Rejection`). Pure apart
//! from the clock: no file or network I/O.
use std::fmt;
use std::io::Read;
use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::parse::stream::{
    GoodChecksum, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
    VerifierBuilder,
};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::{Cert, Fingerprint, KeyHandle, Packet, PacketPile};

use super::keyring::{key_state_now, KeyState, Keyring};
use super::payload::{Payload, PayloadError};
use crate::oci::digest::Digest;
use crate::oci::reference::DockerReference;

/// Largest signature blob accepted (as containers/image).
pub const MAX_SIGNATURE_SIZE: usize = 4 * 1024 * 1024;

/// A cryptographically valid signature by a trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The primary key of the signer (what a quorum counts).
    pub signer: Fingerprint,
    /// The key that made the signature (the primary or a subkey).
    pub signing_key: Fingerprint,
    pub created: Option<SystemTime>,
    /// The signed literal data (the JSON payload).
    pub payload: Vec<u8>,
}

/// Why a signature file does not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    Empty,
    TooLarge(usize),
    Armored,
    NotOpenPgp(u8),
    Detached,
    Malformed(String),
    Encrypted,
    SignatureCount(usize),
    NotV4(u8),
    UnknownKey(String),
    KeyExpired(Fingerprint),
    KeyRevoked(Fingerprint),
    BadKey(Fingerprint, String),
    BadSignature(String),
    Payload(PayloadError),
    DigestMismatch {
        signed: Digest,
        expected: Digest,
    },
    InvalidIdentity(String),
    IdentityMismatch {
        signed: String,
        expected: String,
    },
    /// An HTTP 200 with an HTML page where a signature should be.
    SoftNotFound,
}

impl Rejection {
    /// A stable machine-readable code (used in `--json`).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::TooLarge(_) => "too-large",
            Rejection::Armored => "armored",
            Rejection::NotOpenPgp(_) => "not-openpgp",
            Rejection::Detached => "detached",
            Rejection::Malformed(_) => "malformed",
            Rejection::Encrypted => "encrypted",
            Rejection::SignatureCount(_) => "signature-count",
            Rejection::NotV4(_) => "not-v4",
            Rejection::UnknownKey(_) => "unknown-key",
            Rejection::KeyExpired(_) => "key-expired",
            Rejection::KeyRevoked(_) => "key-revoked",
            Rejection::BadKey(..) => "bad-key",
            Rejection::BadSignature(_) => "bad-signature",
            Rejection::Payload(_) => "payload",
            Rejection::DigestMismatch { .. } => "digest-mismatch",
            Rejection::InvalidIdentity(_) => "invalid-identity",
            Rejection::IdentityMismatch { .. } => "identity-mismatch",
            Rejection::SoftNotFound => "soft-404",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Empty => write!(f, "empty file"),
            Rejection::TooLarge(n) => write!(f, "{n} bytes: larger than the 4 MiB limit"),
            Rejection::Armored => write!(
                f,
                "ASCII-armored: signatures must be binary (gpg --sign --no-armor)"
            ),
            Rejection::NotOpenPgp(b) => write!(
                f,
                "not an OpenPGP signed message (first byte 0x{b:02x})"
            ),
            Rejection::Detached => write!(
                f,
                "detached signature: must be a signed message holding the payload (gpg --sign, not --detach-sign)"
            ),
            Rejection::Malformed(e) => write!(f, "malformed OpenPGP message: {e}"),
            Rejection::Encrypted => write!(f, "encrypted message: signatures must not be encrypted"),
            Rejection::SignatureCount(n) => {
                write!(f, "holds {n} signatures: exactly one per file is allowed")
            }
            Rejection::NotV4(v) => write!(f, "version {v} signature: only v4 is accepted"),
            Rejection::UnknownKey(k) => write!(
                f,
                "signed by key {k}, which is not in the trusted keys directory"
            ),
            Rejection::KeyExpired(k) => write!(f, "signing key of {k} is expired"),
            Rejection::KeyRevoked(k) => write!(f, "signing key of {k} is revoked"),
            Rejection::BadKey(k, e) => write!(f, "key of {k} not usable: {e}"),
            Rejection::BadSignature(e) => write!(f, "bad signature (content altered?): {e}"),
            Rejection::Payload(e) => write!(f, "{e}"),
            Rejection::DigestMismatch { signed, expected } => write!(
                f,
                "signs manifest {signed}, not this image ({expected})"
            ),
            Rejection::InvalidIdentity(e) => write!(f, "invalid signed identity: {e}"),
            Rejection::IdentityMismatch { signed, expected } => write!(
                f,
                "signs identity {signed}, not {expected}"
            ),
            Rejection::SoftNotFound => write!(
                f,
                "HTML page served with status 200 (a \"soft 404\"): mirror misconfiguration, it must answer 404 for missing signatures"
            ),
        }
    }
}

/// First-byte check of simple-signing.md.
fn check_first_byte(blob: &[u8]) -> Result<(), Rejection> {
    let Some(&first) = blob.first() else {
        return Err(Rejection::Empty);
    };
    match first {
        0xA0..=0xA3 | 0xC8 | 0x90..=0x92 | 0x3D | 0xC4 | 0x88..=0x8B | 0xC2 => Ok(()),
        0x2D => Err(Rejection::Armored),
        other => Err(Rejection::NotOpenPgp(other)),
    }
}

/// Signer primary, signing key, creation time of one good signature.
type Good = (Fingerprint, Fingerprint, Option<SystemTime>);

struct Helper<'a> {
    keyring: &'a Keyring,
    results: Vec<Result<Good, Rejection>>,
    encrypted: bool,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        let mut certs: Vec<Cert> = Vec::new();
        for id in ids {
            if let Some(cert) = self.keyring.cert_for(id) {
                if !certs.iter().any(|c| c.fingerprint() == cert.fingerprint()) {
                    certs.push(cert.clone());
                }
            }
        }
        Ok(certs)
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.into_iter() {
            match layer {
                MessageLayer::Compression { .. } => {}
                MessageLayer::Encryption { .. } => self.encrypted = true,
                MessageLayer::SignatureGroup { results } => {
                    for result in results {
                        self.results.push(classify(self.keyring, result));
                    }
                }
            }
        }
        Ok(())
    }
}

fn classify(
    keyring: &Keyring,
    result: Result<GoodChecksum, VerificationError>,
) -> Result<Good, Rejection> {
    match result {
        Ok(GoodChecksum { sig, ka }) => {
            if sig.version() != 4 {
                return Err(Rejection::NotV4(sig.version()));
            }
            let signer = ka.cert().fingerprint();
            let key = ka.key().fingerprint();
            match key_state_now(ka.cert(), &key) {
                KeyState::Usable => Ok((signer, key, sig.signature_creation_time())),
                KeyState::Expired => Err(Rejection::KeyExpired(signer)),
                KeyState::Revoked => Err(Rejection::KeyRevoked(signer)),
                KeyState::Invalid(e) => Err(Rejection::BadKey(signer, e)),
            }
        }
        Err(VerificationError::MissingKey { sig }) => Err(Rejection::UnknownKey(
            sig.get_issuers()
                .first()
                .map(|h| h.to_string())
                .unwrap_or_else(|| "(no issuer)".to_string()),
        )),
        Err(VerificationError::BadKey { ka, error, .. }) => {
            let signer = ka.cert().fingerprint();
            Err(key_rejection(keyring, signer, error))
        }
        Err(VerificationError::UnboundKey { cert, error, .. }) => {
            Err(key_rejection(keyring, cert.fingerprint(), error))
        }
        Err(VerificationError::BadSignature { error, .. }) => {
            Err(Rejection::BadSignature(format!("{error}")))
        }
        Err(e @ VerificationError::MalformedSignature { .. })
        | Err(e @ VerificationError::UnknownSignature { .. }) => {
            Err(Rejection::Malformed(e.to_string()))
        }
        Err(e) => Err(Rejection::Malformed(e.to_string())),
    }
}

/// A key that sequoia found unusable at the signature's time: say why.
fn key_rejection(keyring: &Keyring, signer: Fingerprint, error: anyhow::Error) -> Rejection {
    let cert = keyring.cert_for(&KeyHandle::from(signer.clone()));
    let revoked = cert.is_some_and(|c| {
        matches!(
            c.revocation_status(&StandardPolicy::new(), None),
            openpgp::types::RevocationStatus::Revoked(_)
        )
    });
    let text = format!("{error:#}");
    if revoked || text.contains("revoked") {
        Rejection::KeyRevoked(signer)
    } else if text.contains("xpired") || text.contains("not alive") || text.contains("not live") {
        Rejection::KeyExpired(signer)
    } else {
        Rejection::BadKey(signer, text)
    }
}

/// Checks a blob cryptographically against the keyring; on success returns
/// the signer's primary fingerprint and the signed payload bytes.
pub fn verify_blob(keyring: &Keyring, blob: &[u8]) -> Result<VerifiedSignature, Rejection> {
    if blob.len() > MAX_SIGNATURE_SIZE {
        return Err(Rejection::TooLarge(blob.len()));
    }
    check_first_byte(blob)?;
    let policy = StandardPolicy::new();
    let helper = Helper {
        keyring,
        results: Vec::new(),
        encrypted: false,
    };
    let mut verifier = match VerifierBuilder::from_bytes(blob)
        .and_then(|b| b.with_policy(&policy, None, helper))
    {
        Ok(v) => v,
        Err(e) => return Err(explain_parse_failure(blob, e)),
    };
    let mut payload = Vec::new();
    if let Err(e) = verifier.read_to_end(&mut payload) {
        return Err(Rejection::Malformed(e.to_string()));
    }
    let helper = verifier.into_helper();
    if helper.encrypted {
        return Err(Rejection::Encrypted);
    }
    match helper.results.len() {
        1 => {}
        n => return Err(Rejection::SignatureCount(n)),
    }
    let (signer, signing_key, created) = helper.results.into_iter().next().expect("one result")?;
    Ok(VerifiedSignature {
        signer,
        signing_key,
        created,
        payload,
    })
}

/// Turns a message-grammar failure into a reason: a blob that is only
/// signature packets is a detached signature.
fn explain_parse_failure(blob: &[u8], error: anyhow::Error) -> Rejection {
    if let Ok(pile) = PacketPile::from_bytes(blob) {
        let packets: Vec<&Packet> = pile.children().collect();
        if !packets.is_empty() && packets.iter().all(|p| matches!(p, Packet::Signature(_))) {
            return Rejection::Detached;
        }
    }
    Rejection::Malformed(format!("{error:#}"))
}

/// What a signature must say to count for an image.
#[derive(Clone, Debug)]
pub struct Expected {
    pub digest: Digest,
    /// The reference the image is known by (tag => exact match, digest =>
    /// same repository).
    pub reference: DockerReference,
}

/// Steps 3–5: strict payload, digest equality, identity match.
pub fn check_payload(bytes: &[u8], expected: &Expected) -> Result<Payload, Rejection> {
    let payload = Payload::parse(bytes).map_err(Rejection::Payload)?;
    if payload.manifest_digest != expected.digest {
        return Err(Rejection::DigestMismatch {
            signed: payload.manifest_digest,
            expected: expected.digest.clone(),
        });
    }
    let signed = DockerReference::parse(&payload.docker_reference)
        .map_err(|e| Rejection::InvalidIdentity(format!("{e:#}")))?;
    if !expected.reference.matches_signed(&signed) {
        return Err(Rejection::IdentityMismatch {
            signed: payload.docker_reference,
            expected: expected.reference.to_string(),
        });
    }
    Ok(payload)
}

/// The whole check of one blob for one image.
pub fn verify_signature(
    keyring: &Keyring,
    blob: &[u8],
    expected: &Expected,
) -> Result<(VerifiedSignature, Payload), Rejection> {
    let verified = verify_blob(keyring, blob)?;
    let payload = check_payload(&verified.payload, expected)?;
    Ok((verified, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_rules_of_simple_signing() {
        for ok in [0xA3u8, 0xC8, 0x90, 0x3D, 0xC4, 0x89, 0xC2] {
            assert_eq!(check_first_byte(&[ok, 0]), Ok(()), "0x{ok:02x}");
        }
        assert_eq!(
            check_first_byte(b"-----BEGIN PGP MESSAGE-----"),
            Err(Rejection::Armored)
        );
        assert_eq!(
            check_first_byte(b"{\"critical\""),
            Err(Rejection::NotOpenPgp(b'{'))
        );
        assert_eq!(check_first_byte(b""), Err(Rejection::Empty));
        let keyring = Keyring::default();
        assert_eq!(
            verify_blob(&keyring, &vec![0xA3; MAX_SIGNATURE_SIZE + 1]),
            Err(Rejection::TooLarge(MAX_SIGNATURE_SIZE + 1))
        );
        assert!(matches!(
            verify_blob(&keyring, &[0xA3, 0x01, 0xff]),
            Err(Rejection::Malformed(_))
        ));
    }
}
