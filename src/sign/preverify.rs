//! Owns: the pre-verification pass, which only ever saves time. Before a
//! batch of signature blobs is verified, each blob is parsed once as
//! sequoia's verifier parses it, and the public-key arithmetic of its one
//! signature is done the fast way: RSA keys through OpenSSL (`rsa_fast`),
//! Ed25519 keys in batches (`ed25519_batch`). Each signature that verifies
//! is handed to sequoia's `SignatureVerificationCache` as the exact entry
//! sequoia would insert after checking it itself.
//!
//! Sequoia then verifies every signature normally (grammar, policy, key
//! binding, validity at signing time, payload...) and only finds the
//! arithmetic done. Correctness never depends on this pass: a signature it
//! rejects or skips, or an entry it gets wrong (e.g. if sequoia changes its
//! entry format: tests guard that for both algorithms), just means sequoia
//! does the math itself. It must not report verdicts or touch files.
use sequoia_openpgp as openpgp;
use sha2::{Digest as _, Sha512};

use std::collections::BTreeMap;

use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::packet::{Key, Signature};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::serialize::MarshalInto;
use openpgp::{Fingerprint, KeyHandle, KeyID, Packet};

use super::cache;
use super::ed25519_batch::{self, EdKeys, Queued};
use super::keyring::Keyring;
use super::rsa_fast::{self, RsaKeys};
use super::verify::MAX_SIGNATURE_SIZE;
use rayon::prelude::*;

/// One sequoia cache entry (SHA-512 truncated to 256 bits).
pub type CacheEntry = [u8; 32];

/// A blob's one signature, with the digest sequoia computed over the data
/// it signs (the literal data, then the signature's trailer).
pub struct Parsed {
    pub sig: Signature,
    pub digest: Vec<u8>,
}

impl Parsed {
    /// Parses `blob` as sequoia's verifier does (descending into compressed
    /// data, hashing the literal data for a one-pass signature); `None`
    /// unless it holds exactly one signature with a computed digest.
    pub fn from_blob(blob: &[u8]) -> Option<Parsed> {
        if blob.len() > MAX_SIGNATURE_SIZE {
            return None;
        }
        let mut ppr = PacketParser::from_bytes(blob).ok()?;
        let mut found = None;
        let mut count = 0;
        while let PacketParserResult::Some(pp) = ppr {
            let (packet, next) = pp.recurse().ok()?;
            if let Packet::Signature(sig) = packet {
                count += 1;
                found = Some(sig);
            }
            ppr = next;
        }
        let sig = found.filter(|_| count == 1)?;
        let digest = sig.computed_digest()?.to_vec();
        Some(Parsed { sig, digest })
    }

    /// sequoia's `cache::Entry::new` (sequoia-openpgp 2.4): SHA-512 over
    /// version 0 || LE32(len of the signature MPIs) || signature MPIs ||
    /// hash algorithm || computed digest || key MPIs, truncated to 32 bytes.
    pub fn entry(&self, key_mpis: &[u8]) -> Option<CacheEntry> {
        let sig_mpis = self.sig.mpis().export_to_vec().ok()?;
        let len = u32::try_from(sig_mpis.len()).ok()?;
        let mut hasher = Sha512::new();
        hasher.update([0u8]);
        hasher.update(len.to_le_bytes());
        hasher.update(&sig_mpis);
        hasher.update([u8::from(self.sig.hash_algo())]);
        hasher.update(&self.digest);
        hasher.update(key_mpis);
        let full = hasher.finalize();
        let mut entry = [0u8; 32];
        entry.copy_from_slice(&full[..32]);
        Some(entry)
    }
}

/// The keys of a keyring (primaries and subkeys) one fast path can use,
/// built once per run, found by any handle a signature names.
pub struct KeyIndex<K> {
    by_fingerprint: BTreeMap<Fingerprint, K>,
    by_keyid: BTreeMap<KeyID, Fingerprint>,
}

impl<K> KeyIndex<K> {
    /// Every key of `keyring` that `build` accepts.
    pub fn from_keyring(
        keyring: &Keyring,
        build: impl Fn(&Key<PublicParts, UnspecifiedRole>) -> Option<K>,
    ) -> KeyIndex<K> {
        let mut index = KeyIndex {
            by_fingerprint: BTreeMap::new(),
            by_keyid: BTreeMap::new(),
        };
        for key in keyring.certs().iter().flat_map(|c| c.keys()) {
            let key = key.key();
            if let Some(built) = build(key) {
                index.by_keyid.insert(key.keyid(), key.fingerprint());
                index.by_fingerprint.insert(key.fingerprint(), built);
            }
        }
        index
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }

    /// The key a signature names as its issuer, if indexed.
    pub fn issuer_of(&self, sig: &Signature) -> Option<&K> {
        sig.get_issuers().iter().find_map(|h| self.find(h))
    }

    fn find(&self, handle: &KeyHandle) -> Option<&K> {
        match handle {
            KeyHandle::Fingerprint(f) => self.by_fingerprint.get(f),
            KeyHandle::KeyID(id) => self
                .by_keyid
                .get(id)
                .and_then(|f| self.by_fingerprint.get(f)),
        }
    }
}

/// The fast keys of a keyring, built once per run.
pub struct FastKeys {
    rsa: RsaKeys,
    ed: EdKeys,
}

impl FastKeys {
    pub fn from_keyring(keyring: &Keyring) -> FastKeys {
        FastKeys {
            rsa: rsa_fast::keys(keyring),
            ed: ed25519_batch::keys(keyring),
        }
    }

    fn is_empty(&self) -> bool {
        self.rsa.is_empty() && self.ed.is_empty()
    }
}

/// What the per-blob step found.
enum Step {
    /// Verified already (RSA).
    Done(CacheEntry),
    /// Ed25519: verified with the others, in batches.
    Batch(Queued),
}

/// The cache entries of every signature among `blobs` the fast paths
/// verify (none for those sequoia's cache already holds from disk). Leaves
/// sequoia's cache alone.
pub fn verified_entries(keyring: &Keyring, blobs: &[&[u8]]) -> Vec<CacheEntry> {
    let keys = FastKeys::from_keyring(keyring);
    if keys.is_empty() || blobs.is_empty() {
        return Vec::new();
    }
    let steps: Vec<_> = blobs.par_iter().map(|blob| step_for(&keys, blob)).collect();
    let mut entries = Vec::new();
    let mut queued = Vec::new();
    for step in steps.into_iter().flatten() {
        match step {
            Step::Done(entry) => entries.push(entry),
            Step::Batch(item) => queued.push(item),
        }
    }
    entries.extend(ed25519_batch::verify(queued));
    entries
}

fn step_for(keys: &FastKeys, blob: &[u8]) -> Option<Step> {
    let parsed = Parsed::from_blob(blob)?;
    if let Some(entry) = rsa_fast::verify_parsed(&keys.rsa, &parsed) {
        return Some(Step::Done(entry));
    }
    ed25519_batch::queue(&keys.ed, &parsed).map(Step::Batch)
}

/// Runs the pass over `blobs` and hands the entries found to sequoia's
/// cache (waiting until they are in place). Returns how many were added.
/// Never fails: anything odd is left to sequoia.
pub fn preverify(keyring: &Keyring, blobs: &[&[u8]]) -> usize {
    let entries = verified_entries(keyring, blobs);
    let count = entries.len();
    if count > 0 && cache::add_verified(entries).is_err() {
        return 0;
    }
    count
}
