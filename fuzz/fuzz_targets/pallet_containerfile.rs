#![no_main]
//! Owns: fuzzing a StageX pallet Containerfile
//! (`packages/pallet/<name>/Containerfile`) read as a declarative pallet:
//! the instruction reader, shell-word splitting, RUN link commands, then
//! the same validation and expansion a TOML pallet gets.
use libfuzzer_sys::fuzz_target;
use stagex::pallet::containerfile;

fuzz_target!(|data: &[u8]| {
    let Some(text) = stagex_fuzz::text(data) else {
        return;
    };
    match containerfile::parse("fuzz", "packages/pallet/fuzz/Containerfile", text) {
        Ok(pallet) => stagex_fuzz::exercise_pallet(pallet),
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
});
