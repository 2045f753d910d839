//! Owns: the RSA step of the pre-verification pass (`preverify`): every
//! signature made by an RSA key of the keyring (primary or subkey) is
//! checked with OpenSSL's RSA arithmetic (~64 us for RSA-4096, against
//! ~720 us in the pure-Rust backend sequoia is built with); each one that
//! verifies yields the exact cache entry sequoia would insert after
//! checking it itself.
//!
//! Correctness never depends on this step (see `preverify`). It must not:
//! report verdicts, touch files, or accept a key the pure-Rust backend
//! would refuse (moduli over 4096 bits, unusual exponents).
use openssl::bn::BigNum;
use openssl::pkey::Public;
use openssl::rsa::{Padding, Rsa};
use sequoia_openpgp as openpgp;

use openpgp::crypto::mpi;
use openpgp::packet::Signature;
use openpgp::serialize::MarshalInto;
use openpgp::types::{HashAlgorithm, PublicKeyAlgorithm};

use super::cache;
use super::keyring::Keyring;
use super::preverify::{CacheEntry, KeyIndex, Parsed};

/// Largest modulus the pure-Rust backend accepts (`rsa::RsaPublicKey::MAX_SIZE`).
const MAX_MODULUS_BITS: usize = 4096;
/// Public-exponent bounds of the pure-Rust backend (`rsa` crate).
const MAX_EXPONENT: u64 = (1 << 33) - 1;

/// An RSA key of the keyring, ready for OpenSSL.
pub struct RsaKey {
    rsa: Rsa<Public>,
    /// Modulus length in bytes.
    size: usize,
    /// The key's MPIs as sequoia exports them (part of the cache entry).
    mpis: Vec<u8>,
}

/// Every usable RSA key of a keyring, built once per key.
pub type RsaKeys = KeyIndex<RsaKey>;

/// The RSA keys of `keyring` (primaries and subkeys).
pub fn keys(keyring: &Keyring) -> RsaKeys {
    KeyIndex::from_keyring(keyring, |key| match key.mpis() {
        mpi::PublicKey::RSA { e, n } if is_rsa(key.pk_algo()) => build_key(e, n, key.mpis()),
        _ => None,
    })
}

/// RSA that may sign (RSASign, id 3, is deprecated but still verified by
/// sequoia).
#[allow(deprecated)]
fn is_rsa(algo: PublicKeyAlgorithm) -> bool {
    matches!(
        algo,
        PublicKeyAlgorithm::RSAEncryptSign | PublicKeyAlgorithm::RSASign
    )
}

/// The OpenSSL key for `n`, `e`, if the pure-Rust backend would accept it
/// too (see `rsa::key::check_public`).
fn build_key(e: &mpi::MPI, n: &mpi::MPI, mpis: &mpi::PublicKey) -> Option<RsaKey> {
    let (e_bytes, n_bytes) = (e.value(), n.value());
    if n.bits() > MAX_MODULUS_BITS || e_bytes.len() > 8 {
        return None;
    }
    let e_value = e_bytes
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let odd = |bytes: &[u8]| bytes.last().is_some_and(|b| b & 1 == 1);
    if !(2..=MAX_EXPONENT).contains(&e_value) || !odd(e_bytes) || !odd(n_bytes) {
        return None;
    }
    let e_bn = BigNum::from_slice(e_bytes).ok()?;
    let n_bn = BigNum::from_slice(n_bytes).ok()?;
    if e_bn >= n_bn {
        return None;
    }
    let rsa = Rsa::from_public_components(n_bn, e_bn).ok()?;
    Some(RsaKey {
        size: rsa.size() as usize,
        rsa,
        mpis: mpis.export_to_vec().ok()?,
    })
}

/// The RSA step for one parsed blob: its cache entry when its signature is
/// by an RSA key of `keys` and verifies.
pub fn verify_parsed(keys: &RsaKeys, parsed: &Parsed) -> Option<CacheEntry> {
    let key = keys.issuer_of(&parsed.sig)?;
    let entry = parsed.entry(&key.mpis)?;
    if cache::is_loaded(&entry) {
        return None;
    }
    verify_pkcs1(key, &parsed.sig, &parsed.digest).then_some(entry)
}

/// RSASSA-PKCS1-v1_5 verification (RFC 8017 8.2.2): `s^e mod n` compared
/// whole against the encoding we construct; the decrypted block is never
/// parsed. Hand-written around OpenSSL's raw RSA operation because its
/// `EVP_PKEY` verify path costs ~200 us of per-call setup on OpenSSL 3,
/// three times the arithmetic.
fn verify_pkcs1(key: &RsaKey, sig: &Signature, digest: &[u8]) -> bool {
    let mpi::Signature::RSA { s } = sig.mpis() else {
        return false;
    };
    if !is_rsa(sig.pk_algo()) {
        return false;
    }
    let Some(expected) = emsa_pkcs1_v15(sig.hash_algo(), digest, key.size) else {
        return false;
    };
    let s = s.value();
    if s.len() > key.size {
        return false;
    }
    let mut input = vec![0u8; key.size];
    input[key.size - s.len()..].copy_from_slice(s);
    let mut block = vec![0u8; key.size];
    match key.rsa.public_decrypt(&input, &mut block, Padding::NONE) {
        Ok(n) => n == key.size && block == expected,
        Err(_) => false,
    }
}

/// The DER `DigestInfo` prefix of each hash (RFC 8017 9.2, note 1). SHA-1
/// is absent on purpose: sequoia's StandardPolicy rejects it for
/// signatures anyway.
fn digest_info_prefix(hash: HashAlgorithm) -> Option<&'static [u8]> {
    Some(match hash {
        HashAlgorithm::SHA224 => &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
        HashAlgorithm::SHA256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlgorithm::SHA384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        HashAlgorithm::SHA512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        _ => return None,
    })
}

/// EMSA-PKCS1-v1_5 (RFC 8017 9.2): `00 01 FF..FF 00 || DigestInfo || H`,
/// `k` bytes long, at least 8 bytes of `FF`. `None` for an unsupported hash
/// or a digest of the wrong length.
fn emsa_pkcs1_v15(hash: HashAlgorithm, digest: &[u8], k: usize) -> Option<Vec<u8>> {
    let prefix = digest_info_prefix(hash)?;
    if Some(digest.len()) != hash.digest_size().ok() {
        return None;
    }
    let t_len = prefix.len() + digest.len();
    if k < t_len + 11 {
        return None;
    }
    let mut em = Vec::with_capacity(k);
    em.extend_from_slice(&[0x00, 0x01]);
    em.resize(k - t_len - 1, 0xFF);
    em.push(0x00);
    em.extend_from_slice(prefix);
    em.extend_from_slice(digest);
    Some(em)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emsa_encoding_matches_rfc_8017() {
        let digest = [0xAB; 32];
        let em = emsa_pkcs1_v15(HashAlgorithm::SHA256, &digest, 512).expect("sha256");
        assert_eq!(em.len(), 512);
        assert_eq!(&em[..2], &[0x00, 0x01]);
        let t_len = 19 + 32;
        assert!(em[2..512 - t_len - 1].iter().all(|b| *b == 0xFF));
        assert_eq!(em[512 - t_len - 1], 0x00);
        assert_eq!(&em[512 - 32..], &digest);
        assert!(emsa_pkcs1_v15(HashAlgorithm::SHA1, &[0; 20], 512).is_none());
        assert!(emsa_pkcs1_v15(HashAlgorithm::SHA256, &[0; 31], 512).is_none());
        assert!(emsa_pkcs1_v15(HashAlgorithm::SHA512, &[0; 64], 64).is_none());
        for (hash, len) in [
            (HashAlgorithm::SHA224, 28),
            (HashAlgorithm::SHA384, 48),
            (HashAlgorithm::SHA512, 64),
        ] {
            let em = emsa_pkcs1_v15(hash, &vec![1; len], 256).expect("supported");
            // The DigestInfo's last byte is the digest length.
            assert_eq!(em[256 - len - 1] as usize, len);
        }
    }
}
