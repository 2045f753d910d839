//! Checking one signature blob, in containers/image's order: the OpenPGP
//! format (a binary signed message, first byte rules of simple-signing.md),
//! the cryptographic check against the trusted keyring, the signer (the
//! PRIMARY fingerprint; the key judged at the signature's time, see
//! `validity`), then the strict payload (current, or legacy StageX with
//! `allow_legacy`), the manifest digest and the identity rule.
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
use openpgp::policy::{Policy, StandardPolicy};
use openpgp::{Cert, Fingerprint, KeyHandle, Packet, PacketPile};

use super::identity::IdentityRule;
use super::keyring::Keyring;
use super::payload::{Payload, PayloadError, PayloadFormat};
use super::validity::{key_verdict_at, KeyVerdict};
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
    /// The packets are readable but not in a signed message's order (or
    /// the file ends early), said in words (`message_shape`).
    Shape(String),
    Encrypted,
    SignatureCount(usize),
    NotV4(u8),
    UnknownKey(String),
    /// Signed after the certificate or the signing subkey expired.
    KeyExpired {
        key: Fingerprint,
        subkey: bool,
        expired: Option<SystemTime>,
        signed: SystemTime,
    },
    /// Signed before the key existed (or before the subkey was bound).
    KeyNotYetValid {
        key: Fingerprint,
        created: SystemTime,
        signed: SystemTime,
    },
    /// Hard revocation (compromised, or no reason): every signature.
    KeyRevoked {
        key: Fingerprint,
        subkey: bool,
        reason: String,
        revoked: Option<SystemTime>,
    },
    /// Soft revocation (superseded, retired) before the signature was made.
    KeyRevokedSoft {
        key: Fingerprint,
        subkey: bool,
        reason: String,
        revoked: Option<SystemTime>,
        signed: SystemTime,
    },
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
    /// A valid legacy StageX payload (see `payload`), not counted unless
    /// `allow_legacy`.
    LegacyFormat {
        signed: String,
    },
    /// An HTTP 200 with an HTML page where a signature should be.
    SoftNotFound,
}

impl Rejection {
    /// The trusted primary or subkey the rejected signature was made by,
    /// when the rejection names one (for a per-maintainer status).
    pub fn key(&self) -> Option<&Fingerprint> {
        match self {
            Rejection::KeyExpired { key, .. }
            | Rejection::KeyNotYetValid { key, .. }
            | Rejection::KeyRevoked { key, .. }
            | Rejection::KeyRevokedSoft { key, .. }
            | Rejection::BadKey(key, _) => Some(key),
            _ => None,
        }
    }

    /// A stable machine-readable code (used in `--json`).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty",
            Rejection::TooLarge(_) => "too-large",
            Rejection::Armored => "armored",
            Rejection::NotOpenPgp(_) => "not-openpgp",
            Rejection::Detached => "detached",
            Rejection::Malformed(_) | Rejection::Shape(_) => "malformed",
            Rejection::Encrypted => "encrypted",
            Rejection::SignatureCount(_) => "signature-count",
            Rejection::NotV4(_) => "not-v4",
            Rejection::UnknownKey(_) => "unknown-key",
            Rejection::KeyExpired { .. } => "key-expired",
            Rejection::KeyNotYetValid { .. } => "key-not-yet-valid",
            Rejection::KeyRevoked { .. } => "key-revoked",
            Rejection::KeyRevokedSoft { .. } => "key-revoked-soft",
            Rejection::BadKey(..) => "bad-key",
            Rejection::BadSignature(_) => "bad-signature",
            Rejection::Payload(_) => "payload",
            Rejection::DigestMismatch { .. } => "digest-mismatch",
            Rejection::InvalidIdentity(_) => "invalid-identity",
            Rejection::IdentityMismatch { .. } => "identity-mismatch",
            Rejection::LegacyFormat { .. } => "legacy-format",
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
            Rejection::Shape(words) => write!(f, "{words}"),
            Rejection::Encrypted => write!(f, "encrypted message: signatures must not be encrypted"),
            Rejection::SignatureCount(n) => {
                write!(f, "holds {n} signatures: exactly one per file is allowed")
            }
            Rejection::NotV4(v) => write!(f, "version {v} signature: only v4 is accepted"),
            Rejection::UnknownKey(k) => write!(
                f,
                "signed by key {k}, which is not in the trusted keys directory: if it is a new subkey of a trusted maintainer, run `stagex keys refresh`; to trust a new maintainer, `stagex keys add {k}` after comparing the fingerprint out of band"
            ),
            Rejection::KeyExpired {
                key,
                subkey,
                expired,
                signed,
            } => write!(
                f,
                "signature made {}, after {} {key} expired ({}); if the key was extended before that, refresh its certificate: `stagex keys refresh {key}`",
                date(*signed),
                key_kind(*subkey),
                expired.map_or("date unknown".to_string(), date)
            ),
            Rejection::KeyNotYetValid {
                key,
                created,
                signed,
            } => write!(
                f,
                "signature made {}, before key {key} existed or was bound ({})",
                date(*signed),
                date(*created)
            ),
            Rejection::KeyRevoked {
                key,
                subkey,
                reason,
                revoked,
            } => write!(
                f,
                "{} {key} was revoked {} ({reason}): a hard revocation invalidates every signature it made",
                key_kind(*subkey),
                revoked.map_or("at an unknown date".to_string(), |t| format!("on {}", date(t)))
            ),
            Rejection::KeyRevokedSoft {
                key,
                subkey,
                reason,
                revoked,
                signed,
            } => write!(
                f,
                "signature made {}, after {} {key} was retired {} ({reason})",
                date(*signed),
                key_kind(*subkey),
                revoked.map_or("at an unknown date".to_string(), |t| format!("on {}", date(t)))
            ),
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
            Rejection::LegacyFormat { signed } => write!(
                f,
                "legacy StageX payload (\"pgp container image signature\", identity {signed}): valid, but counted only with --allow-legacy"
            ),
            Rejection::SoftNotFound => write!(
                f,
                "HTML page served with status 200 (a \"soft 404\"): mirror misconfiguration, it must answer 404 for missing signatures"
            ),
        }
    }
}

/// A moment as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn key_kind(subkey: bool) -> &'static str {
    if subkey {
        "signing subkey"
    } else {
        "key"
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
                        self.results.push(classify(result));
                    }
                }
            }
        }
        Ok(())
    }
}

fn classify(result: Result<GoodChecksum, VerificationError>) -> Result<Good, Rejection> {
    match result {
        Ok(GoodChecksum { sig, ka }) => {
            if sig.version() != 4 {
                return Err(Rejection::NotV4(sig.version()));
            }
            Ok((
                ka.cert().fingerprint(),
                ka.key().fingerprint(),
                sig.signature_creation_time(),
            ))
        }
        Err(VerificationError::MissingKey { sig }) => Err(Rejection::UnknownKey(
            sig.get_issuers()
                .first()
                .map(|h| h.to_string())
                .unwrap_or_else(|| "(no issuer)".to_string()),
        )),
        // sequoia judges the key (at the signature's time) BEFORE the
        // cryptographic check: do the check first, as containers/image
        // does, so a forgery is never reported as a key problem. Then judge
        // the key ourselves (`validity`: it also reads extended keys as gpg).
        Err(VerificationError::BadKey { sig, ka, error }) => {
            if let Err(e) = sig.verify_document(ka.key()) {
                return Err(Rejection::BadSignature(format!("{e}")));
            }
            judge(
                ka.cert(),
                &ka.key().fingerprint(),
                sig,
                format!("{error:#}"),
            )
        }
        Err(VerificationError::UnboundKey { sig, cert, error }) => {
            let Some(key) = cert.keys().key_handles(sig.get_issuers()).next() else {
                return Err(Rejection::BadKey(cert.fingerprint(), format!("{error:#}")));
            };
            if let Err(e) = sig.verify_document(key.key()) {
                return Err(Rejection::BadSignature(format!("{e}")));
            }
            judge(cert, &key.key().fingerprint(), sig, format!("{error:#}"))
        }
        Err(VerificationError::BadSignature { error, .. }) => {
            Err(Rejection::BadSignature(format!("{error}")))
        }
        Err(e) => Err(Rejection::Malformed(e.to_string())),
    }
}

/// A cryptographically good signature that sequoia found unusable at its
/// time: our verdict (see `validity`), with dates when it is a rejection.
fn judge(
    cert: &Cert,
    key: &Fingerprint,
    sig: &openpgp::packet::Signature,
    fallback: String,
) -> Result<Good, Rejection> {
    if sig.version() != 4 {
        return Err(Rejection::NotV4(sig.version()));
    }
    let signer = cert.fingerprint();
    let Some(signed) = sig.signature_creation_time() else {
        return Err(Rejection::BadKey(signer, fallback));
    };
    if sig.signature_alive(None, None).is_err() {
        return Err(Rejection::BadKey(signer, fallback));
    }
    // The check sequoia makes after a good checksum (e.g. no SHA-1).
    if let Err(e) = StandardPolicy::new().signature(sig, Default::default()) {
        return Err(Rejection::BadSignature(format!("{e:#}")));
    }
    Err(match key_verdict_at(cert, key, signed) {
        KeyVerdict::Valid => return Ok((signer, key.clone(), Some(signed))),
        KeyVerdict::Expired {
            key,
            subkey,
            expired,
            signed,
        } => Rejection::KeyExpired {
            key,
            subkey,
            expired,
            signed,
        },
        KeyVerdict::NotYetValid {
            key,
            created,
            signed,
        } => Rejection::KeyNotYetValid {
            key,
            created,
            signed,
        },
        KeyVerdict::Revoked {
            key,
            subkey,
            hard: true,
            reason,
            revoked,
            ..
        } => Rejection::KeyRevoked {
            key,
            subkey,
            reason,
            revoked,
        },
        KeyVerdict::Revoked {
            key,
            subkey,
            reason,
            revoked,
            signed,
            ..
        } => Rejection::KeyRevokedSoft {
            key,
            subkey,
            reason,
            revoked,
            signed,
        },
        KeyVerdict::Invalid(e) => Rejection::BadKey(signer, e),
    })
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
        return Err(explain_parse_failure(blob, e.into()));
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
/// signature packets is a detached signature; any other wrong packet
/// sequence is said in words (`message_shape`), never in sequoia's
/// grammar tokens.
fn explain_parse_failure(blob: &[u8], error: anyhow::Error) -> Rejection {
    if let Ok(pile) = PacketPile::from_bytes(blob) {
        let packets: Vec<&Packet> = pile.children().collect();
        if !packets.is_empty() && packets.iter().all(|p| matches!(p, Packet::Signature(_))) {
            return Rejection::Detached;
        }
    }
    if let Some(words) = super::message_shape::describe(blob) {
        return Rejection::Shape(words);
    }
    Rejection::Malformed(format!("{error:#}"))
}

/// What a signature must say to count for an image.
#[derive(Clone, Debug)]
pub struct Expected {
    pub digest: Digest,
    /// The reference the image is known by (tag => exact match, digest =>
    /// same repository, under the default rule).
    pub reference: DockerReference,
}

/// How strict the payload checks are (the default is containers/image's:
/// current format only, `matchRepoDigestOrExact`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Count legacy StageX payloads (crypto, bare-hex digest and
    /// repository identity still checked); otherwise they are rejected as
    /// `legacy-format`.
    pub allow_legacy: bool,
    /// The `signedIdentity` rule.
    pub identity: IdentityRule,
}

/// Steps 3–5: strict payload, digest equality, identity match.
pub fn check_payload(
    bytes: &[u8],
    expected: &Expected,
    options: &VerifyOptions,
) -> Result<Payload, Rejection> {
    let (payload, format) = Payload::parse_any(bytes).map_err(Rejection::Payload)?;
    if payload.manifest_digest != expected.digest {
        return Err(Rejection::DigestMismatch {
            signed: payload.manifest_digest,
            expected: expected.digest.clone(),
        });
    }
    let signed = DockerReference::parse(&payload.docker_reference)
        .map_err(|e| Rejection::InvalidIdentity(format!("{e:#}")))?;
    let matches = match format {
        PayloadFormat::Current => options.identity.matches(&expected.reference, &signed),
        // The legacy form signs a bare repository.
        PayloadFormat::Legacy => {
            signed.tag.is_none()
                && signed.digest.is_none()
                && options
                    .identity
                    .matches_repository(&expected.reference, &signed)
        }
    };
    if !matches {
        return Err(Rejection::IdentityMismatch {
            signed: payload.docker_reference,
            expected: expected.reference.to_string(),
        });
    }
    if format == PayloadFormat::Legacy && !options.allow_legacy {
        return Err(Rejection::LegacyFormat {
            signed: payload.docker_reference,
        });
    }
    Ok(payload)
}

/// The whole check of one blob for one image.
pub fn verify_signature(
    keyring: &Keyring,
    blob: &[u8],
    expected: &Expected,
    options: &VerifyOptions,
) -> Result<(VerifiedSignature, Payload), Rejection> {
    let verified = verify_blob(keyring, blob)?;
    let payload = check_payload(&verified.payload, expected, options)?;
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
        let broken = verify_blob(&keyring, &[0xA3, 0x01, 0xff]).unwrap_err();
        assert_eq!(broken.code(), "malformed");
        // Said in words, never in sequoia's grammar tokens.
        let words = broken.to_string();
        assert!(
            !words.contains("token") && !words.contains("Expected one of"),
            "{words}"
        );
    }
}
