#![no_main]
//! Owns: fuzzing a key file of `keys/` (armored or binary OpenPGP
//! certificates): loading, the self-signature check done on load, and the
//! lookups `verify` makes by every key handle a loaded certificate holds.
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stagex::sign::keyring::Keyring;

fuzz_target!(|data: &[u8]| {
    let mut keyring = Keyring::default();
    if let Err(e) = keyring.add_bytes(data, Path::new("keys/fuzz.asc")) {
        let _ = format!("{e:#}");
        return;
    }
    keyring.check_self_signatures();
    let certs = keyring.certs().to_vec();
    for cert in &certs {
        for key in cert.keys() {
            let handle = key.key().key_handle();
            let primary = keyring.primary_of(&handle);
            assert_eq!(primary.as_ref(), Some(&cert.fingerprint()));
            assert!(keyring.cert_for(&handle).is_some());
            let _ = keyring.label(&cert.fingerprint());
        }
    }
});
