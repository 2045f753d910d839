//! Owns: the Ed25519 step of the pre-verification pass (`preverify`):
//! signatures by Ed25519 keys of the keyring are verified together, in
//! batches (ed25519-zebra), cheaper than one-at-a-time verification,
//! which also decompresses the public key on every call. Measured once,
//! when this came in (commit e514337): a whole cold `stagex verify` of 500
//! images x 2 Ed25519 signers went from 69 ms to 42 ms on the shared
//! 2-core machine (the whole-process timing of the verify bench's Ed25519
//! workload; no per-signature figure is measured). A batch
//! that fails is split in halves until the bad signatures are isolated;
//! those are left to sequoia, which rejects them with their reason.
//!
//! What a batch accepts (ZIP215's cofactored equation) can differ from
//! sequoia's one-at-a-time check (ed25519-dalek's cofactorless one) only
//! for a signature whose R has a small-order component or a non-canonical
//! encoding. The second is excluded here (left to sequoia); the first can
//! only be made with the trusted secret key itself, so it still proves that
//! key signed. Weak (small-order) or non-canonical public keys are never
//! batched. Must not: report verdicts, touch files or the cache.
use ed25519_zebra::batch::{Item, Verifier};
use ed25519_zebra::VerificationKeyBytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sequoia_openpgp as openpgp;

use openpgp::crypto::mpi;
use openpgp::serialize::MarshalInto;
use openpgp::types::{Curve, PublicKeyAlgorithm};

use super::keyring::Keyring;
use super::preverify::{CacheEntry, KeyIndex, Parsed};
use crate::sign::cache;
use rayon::prelude::*;

/// Below this many signatures a failing batch is not split further: its
/// signatures are left to sequoia (bounds the work a batch of forgeries
/// can cause).
const SMALLEST_SPLIT: usize = 8;

/// An Ed25519 key of the keyring.
pub struct EdKey {
    bytes: VerificationKeyBytes,
    /// The key's MPIs as sequoia exports them (part of the cache entry).
    mpis: Vec<u8>,
    /// v4 EdDSA (legacy OID form) or v6 Ed25519: the signature must match.
    algo: PublicKeyAlgorithm,
}

/// Every usable Ed25519 key of a keyring (primary or subkey).
pub type EdKeys = KeyIndex<EdKey>;

/// The Ed25519 keys of `keyring` (primaries and subkeys).
pub fn keys(keyring: &Keyring) -> EdKeys {
    KeyIndex::from_keyring(keyring, |key| build_key(key.pk_algo(), key.mpis()))
}

/// The key, when it is a canonical, strong Ed25519 point (what sequoia's
/// backend decodes the same way).
fn build_key(algo: PublicKeyAlgorithm, mpis: &mpi::PublicKey) -> Option<EdKey> {
    let point: [u8; 32] = match mpis {
        mpi::PublicKey::EdDSA { curve, q } if *curve == Curve::Ed25519 => {
            q.decode_point(&Curve::Ed25519).ok()?.0.try_into().ok()?
        }
        mpi::PublicKey::Ed25519 { a } => *a,
        _ => return None,
    };
    let dalek = ed25519_dalek::VerifyingKey::from_bytes(&point).ok()?;
    if dalek.is_weak() || dalek.to_bytes() != point || !is_canonical_y(&point) {
        return None;
    }
    Some(EdKey {
        bytes: VerificationKeyBytes::from(point),
        mpis: mpis.export_to_vec().ok()?,
        algo,
    })
}

/// One signature waiting for its batch, with the entry it earns.
pub struct Queued {
    entry: CacheEntry,
    item: Item,
}

/// The queued form of `parsed` when its signature is by an Ed25519 key of
/// `keys` (and not already in sequoia's cache from disk).
pub fn queue(keys: &EdKeys, parsed: &Parsed) -> Option<Queued> {
    let key = keys.issuer_of(&parsed.sig)?;
    if parsed.sig.pk_algo() != key.algo {
        return None;
    }
    let signature = signature_bytes(parsed.sig.mpis())?;
    if !is_canonical_y(signature[..32].try_into().ok()?) {
        return None;
    }
    let entry = parsed.entry(&key.mpis)?;
    if cache::is_loaded(&entry) {
        return None;
    }
    let signature = ed25519_zebra::Signature::from(signature);
    // OpenPGP signs the digest: it is the Ed25519 message.
    let item = Item::from((key.bytes, signature, &parsed.digest[..]));
    Some(Queued { entry, item })
}

/// R || S, as sequoia hands them to its backend (MPIs zero-padded).
fn signature_bytes(mpis: &mpi::Signature) -> Option<[u8; 64]> {
    match mpis {
        mpi::Signature::EdDSA { r, s } => {
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&r.value_padded(32).ok()?);
            bytes[32..].copy_from_slice(&s.value_padded(32).ok()?);
            Some(bytes)
        }
        mpi::Signature::Ed25519 { s } => Some(**s),
        _ => None,
    }
}

/// Whether a point encoding's y (the low 255 bits, little-endian) is below
/// p = 2^255 - 19, as a re-encoded point always is.
fn is_canonical_y(encoding: &[u8; 32]) -> bool {
    let mut y = *encoding;
    y[31] &= 0x7f;
    let high_all_ones = y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f;
    !(high_all_ones && y[0] >= 0xed)
}

/// The entries of the queued signatures that verify: one batch per core.
pub fn verify(queued: Vec<Queued>) -> Vec<CacheEntry> {
    // One contiguous part per thread: a batch is cheaper per signature the
    // bigger it is, so the parts are not split further.
    let part = queued.len().div_ceil(rayon::current_num_threads()).max(1);
    queued
        .par_chunks(part)
        .flat_map_iter(|part| {
            let mut out = Vec::with_capacity(part.len());
            verify_range(part, &mut out);
            out
        })
        .collect()
}

/// Verifies `items` as one batch; when it fails, each half on its own.
fn verify_range(items: &[Queued], out: &mut Vec<CacheEntry>) {
    if items.is_empty() {
        return;
    }
    let mut batch = Verifier::new();
    for queued in items {
        batch.queue(queued.item.clone());
    }
    let Ok(rng) = ChaCha20Rng::from_rng(rand_core::OsRng) else {
        return;
    };
    if batch.verify(rng).is_ok() {
        out.extend(items.iter().map(|q| q.entry));
        return;
    }
    if items.len() <= SMALLEST_SPLIT {
        return;
    }
    let (left, right) = items.split_at(items.len() / 2);
    verify_range(left, out);
    verify_range(right, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_y_is_below_the_field_prime() {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(!is_canonical_y(&p), "p itself");
        let mut below = p;
        below[0] = 0xec;
        assert!(is_canonical_y(&below), "p - 1");
        let mut signed = below;
        signed[31] |= 0x80;
        assert!(is_canonical_y(&signed), "the sign bit is not part of y");
        assert!(!is_canonical_y(&[0xff; 32]), "2^255 - 1 with the sign bit");
        assert!(is_canonical_y(&[0; 32]));
    }
}
