#![no_main]
//! Owns: fuzzing the crate's one Containerfile reader
//! (`package::graph::instructions`: continuations, comments, heredocs) and
//! the dependency scan over it (`containerfile_refs`: FROM, COPY --from,
//! RUN --mount=from, ARG substitution).
use libfuzzer_sys::fuzz_target;
use stagex::package::graph::{containerfile_refs, instructions};

fuzz_target!(|data: &[u8]| {
    let Some(text) = stagex_fuzz::text(data) else {
        return;
    };
    let lines = text.lines().count();
    let mut last = 0;
    for instruction in instructions(text) {
        assert!(
            instruction.line > last && instruction.line <= lines,
            "instruction lines must increase within the file: {instruction:?}"
        );
        last = instruction.line;
        assert_eq!(
            instruction.keyword,
            instruction.keyword.to_ascii_uppercase()
        );
    }
    let refs = containerfile_refs(text);
    assert!(refs.packages.iter().all(|p| !p.is_empty()));
});
