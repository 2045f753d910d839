#![no_main]
//! Owns: fuzzing a `pallets/<name>.toml` definition: the TOML reader and
//! its field checks, then validation, expansion and config application in
//! a catalog beside real pallets.
use libfuzzer_sys::fuzz_target;
use stagex::pallet::definition::Pallet;

fuzz_target!(|data: &[u8]| {
    let Some(text) = stagex_fuzz::text(data) else {
        return;
    };
    match Pallet::parse("fuzz", text) {
        Ok(pallet) => stagex_fuzz::exercise_pallet(pallet),
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
});
