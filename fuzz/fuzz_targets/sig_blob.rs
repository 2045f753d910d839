#![no_main]
//! Owns: fuzzing a signature blob (an OpenPGP signed message from a
//! `signature-N` file or a registry) through the whole check `verify` runs:
//! the message grammar, the cryptographic check against a fixed keyring,
//! then the strict payload checks, in both strictness levels.
use libfuzzer_sys::fuzz_target;
use stagex::sign::verify::{check_payload, verify_blob};

fuzz_target!(|data: &[u8]| {
    match verify_blob(stagex_fuzz::keyring(), data) {
        Ok(verified) => {
            for options in stagex_fuzz::options() {
                if let Err(rejection) =
                    check_payload(&verified.payload, &stagex_fuzz::expected(), &options)
                {
                    let _ = (rejection.code(), rejection.to_string());
                }
            }
        }
        // Every rejection must be printable and coded without panicking.
        Err(rejection) => {
            let _ = (rejection.code(), rejection.to_string());
        }
    }
});
