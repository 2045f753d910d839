#![no_main]
//! Owns: fuzzing a digests file (`digests/<stage>.txt`: `<64 hex>
//! <stage>-<name>` lines, comments, `sha256:` prefixes): parsing, the
//! one-digest-per-name rule, and that what parses written back in the
//! canonical form reads back to the same release.
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stagex::release::digests::{format_stage, parse_entries, parse_release};

fuzz_target!(|data: &[u8]| {
    let Some(text) = stagex_fuzz::text(data) else {
        return;
    };
    let path = Path::new("digests/fuzz.txt");
    if let Err(e) = parse_entries(path, text) {
        let _ = e.to_string();
    }
    let release = match parse_release(path, text) {
        Ok(release) => release,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let entries: Vec<_> = release
        .iter()
        .map(|(name, digest)| (name.clone(), digest.clone()))
        .collect();
    let written = format_stage(&entries);
    let again = parse_release(path, &written).expect("the canonical form parses");
    assert_eq!(again, release);
});
