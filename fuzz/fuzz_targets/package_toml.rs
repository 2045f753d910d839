#![no_main]
//! Owns: fuzzing a `packages/<stage>/<name>/package.toml`: the TOML reader,
//! field checks, placeholder templates of file names and mirror URLs, and
//! what loading does next with a valid package (sources resolved,
//! subpackages expanded).
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stagex::package::load::{expand_subpackages, parse_package};

fuzz_target!(|data: &[u8]| {
    let Some(text) = stagex_fuzz::text(data) else {
        return;
    };
    let path = Path::new("/nonexistent/stagex-fuzz/core/x/package.toml");
    let package = match parse_package(path, text, "core", "x") {
        Ok(package) => package,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    let _ = (package.image_name(), package.version_or_latest());
    if package.version_from.is_none() {
        let sources = package
            .resolved_sources()
            .expect("parse_package already expanded every template");
        assert_eq!(sources.len(), package.sources.len());
    }
    for image in expand_subpackages(package) {
        assert!(
            !image.deps.contains(&image.id),
            "an image never depends on itself"
        );
    }
});
