//! Owns: proving the pre-verification pass (`sign::preverify`) hands
//! sequoia exactly the cache entry sequoia itself inserts for the same
//! signature (a guard against a change of sequoia's entry format), on
//! gpg-made RSA-4096 (OpenSSL step, `rsa_fast`) and Ed25519 (batch step,
//! `ed25519_batch`) primary-key and signing-subkey signatures, and that it
//! gives no entry for a tampered signature, even hidden in a large batch.
//! The CLI side (a tampered RSA signature still rejected with its reason)
//! is in sign_keys.rs.
use crate::peers;
use crate::sign_support;

use std::path::Path;

use peers::gpg::GpgHome;
use sequoia_openpgp::packet::signature::cache::SignatureVerificationCache;
use sign_support::payload;
use stagex::oci::digest::Digest;
use stagex::sign::keyring::Keyring;
use stagex::sign::preverify::{verified_entries, CacheEntry};
use stagex::sign::verify::{verify_blob, Rejection};

/// The pass's entry for one blob, if it gives one.
fn entry_for(keyring: &Keyring, blob: &[u8]) -> Option<CacheEntry> {
    let entries = verified_entries(keyring, &[blob]);
    assert!(entries.len() <= 1, "one blob, one signature");
    entries.into_iter().next()
}

fn keyring_of(homes: &[&GpgHome]) -> Keyring {
    let mut keyring = Keyring::default();
    for home in homes {
        keyring
            .add_bytes(&home.export(), Path::new(&home.fingerprint))
            .unwrap();
    }
    keyring
}

/// Entries sequoia inserted itself (not restored) in this process.
fn inserted_by_sequoia() -> Vec<Vec<u8>> {
    SignatureVerificationCache::dump()
        .into_iter()
        .filter(|e| e.inserted())
        .map(|e| e.value().to_vec())
        .collect()
}

#[test]
fn the_pass_computes_the_entry_sequoia_inserts_for_primary_and_subkey_signatures() {
    let Some(primary) = GpgHome::generate("primary", "rsa4096", "sign", "never", None) else {
        return;
    };
    let carded = GpgHome::generate("carded", "rsa4096", "cert", "never", None).unwrap();
    carded.add_subkey("rsa4096", "sign", "never", None);
    let keyring = keyring_of(&[&primary, &carded]);
    let p = payload("stagex/core-x:1.0", &Digest::of_bytes(b"rsa fast image"));
    for (who, blob) in [("primary", primary.sign(&p)), ("subkey", carded.sign(&p))] {
        let entry = entry_for(&keyring, &blob).unwrap_or_else(|| panic!("{who}: no entry"));
        assert!(
            !inserted_by_sequoia().contains(&entry.to_vec()),
            "{who}: not verified by sequoia yet"
        );
        // The pass did not touch the cache: sequoia does the math itself
        // and inserts its own entry, which must be ours.
        verify_blob(&keyring, &blob).unwrap_or_else(|e| panic!("{who}: {e}"));
        assert!(
            inserted_by_sequoia().contains(&entry.to_vec()),
            "{who}: sequoia inserted another entry than the pass computes: its format changed?"
        );
    }
}

#[test]
fn no_entry_for_a_tampered_signature_or_an_untrusted_key() {
    let Some(rsa) = GpgHome::generate("rsa", "rsa4096", "sign", "never", None) else {
        return;
    };
    let stranger = GpgHome::generate("stranger", "ed25519", "sign", "never", None).unwrap();
    let keyring = keyring_of(&[&rsa]);
    let p = payload("stagex/core-x:1.0", &Digest::of_bytes(b"tampered"));
    let good = rsa.sign(&p);
    assert!(entry_for(&keyring, &good).is_some());

    // gpg compresses by default; uncompressed, the last byte of the
    // message is the low byte of the RSA value `s`, and the payload is in
    // the clear.
    let file = rsa.path().join("plain.json");
    std::fs::write(&file, &p).unwrap();
    let plain = peers::tools::run_ok(
        rsa.cmd()
            .args(["--batch", "--compress-algo", "none", "--sign", "--no-armor"])
            .args(["--local-user", &rsa.fingerprint, "--output", "-"])
            .arg(&file),
    )
    .stdout;
    assert!(entry_for(&keyring, &plain).is_some());
    let mut forged_s = plain.clone();
    *forged_s.last_mut().unwrap() ^= 0x01;
    assert_eq!(entry_for(&keyring, &forged_s), None);
    assert!(matches!(
        verify_blob(&keyring, &forged_s),
        Err(Rejection::BadSignature(_))
    ));

    // One byte of the signed payload altered: the digest no longer
    // matches the signature.
    let mut altered = plain;
    let at = altered.windows(6).position(|w| w == b"atomic").unwrap();
    altered[at] ^= 0x01;
    assert_eq!(entry_for(&keyring, &altered), None);
    assert!(matches!(
        verify_blob(&keyring, &altered),
        Err(Rejection::BadSignature(_))
    ));

    // A good signature by a key outside the keyring.
    assert_eq!(entry_for(&keyring, &stranger.sign(&p)), None);
    assert!(matches!(
        verify_blob(&keyring, &stranger.sign(&p)),
        Err(Rejection::UnknownKey(_))
    ));
}

#[test]
fn the_ed25519_batch_computes_the_entries_sequoia_inserts() {
    let Some(primary) = GpgHome::generate("ed-primary", "ed25519", "sign", "never", None) else {
        return;
    };
    let carded = GpgHome::generate("ed-carded", "ed25519", "cert", "never", None).unwrap();
    carded.add_subkey("ed25519", "sign", "never", None);
    let keyring = keyring_of(&[&primary, &carded]);
    let p = payload(
        "stagex/core-ed:1.0",
        &Digest::of_bytes(b"ed25519 batch image"),
    );
    let blobs = [primary.sign(&p), carded.sign(&p)];
    let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
    let entries = verified_entries(&keyring, &refs);
    assert_eq!(entries.len(), 2, "one entry per good signature");
    for (who, blob) in ["primary", "subkey"].iter().zip(&blobs) {
        verify_blob(&keyring, blob).unwrap_or_else(|e| panic!("{who}: {e}"));
    }
    let inserted = inserted_by_sequoia();
    for entry in &entries {
        assert!(
            inserted.contains(&entry.to_vec()),
            "sequoia inserted another entry than the batch computes: its format changed?"
        );
    }
}

#[test]
fn a_forged_ed25519_signature_in_a_large_batch_gets_no_entry_and_the_others_do() {
    let Some(ed) = GpgHome::generate("ed-many", "ed25519", "sign", "never", None) else {
        return;
    };
    let keyring = keyring_of(&[&ed]);
    // Uncompressed: the payload is in the clear, so one byte of it can be
    // altered (the signature no longer covers the data).
    let sign_plain = |p: &[u8]| {
        let file = ed.path().join("plain.json");
        std::fs::write(&file, p).unwrap();
        peers::tools::run_ok(
            ed.cmd()
                .args(["--batch", "--compress-algo", "none", "--sign", "--no-armor"])
                .args(["--local-user", &ed.fingerprint, "--output", "-"])
                .arg(&file),
        )
        .stdout
    };
    let mut blobs: Vec<Vec<u8>> = (0..40)
        .map(|i| sign_plain(&payload("stagex/many:1.0", &Digest::of_bytes(&[i]))))
        .collect();
    let forged_at = 27;
    let at = blobs[forged_at]
        .windows(6)
        .position(|w| w == b"atomic")
        .unwrap();
    blobs[forged_at][at] ^= 0x01;
    let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
    let entries = verified_entries(&keyring, &refs);
    // The failing half is split until the forgery is isolated in a group
    // of at most 8, which is left to sequoia whole.
    assert!(
        (32..=39).contains(&entries.len()),
        "{} entries for 39 good signatures",
        entries.len()
    );
    let good: Vec<&[u8]> = refs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != forged_at)
        .map(|(_, b)| *b)
        .collect();
    assert_eq!(verified_entries(&keyring, &good).len(), 39);
    assert!(verified_entries(&keyring, &[refs[forged_at]]).is_empty());
    assert!(matches!(
        verify_blob(&keyring, refs[forged_at]),
        Err(Rejection::BadSignature(_))
    ));
}
