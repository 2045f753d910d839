#![no_main]
//! Owns: fuzzing the short texts users and registries hand in as names:
//! pallet expressions (`rust+clang`, items with `:tag` and `@sha256:`),
//! image references (as a signature payload's identity and as written on
//! the command line), digests and platforms. What parses prints back to
//! text that parses to the same value.
use libfuzzer_sys::fuzz_target;
use stagex::oci::reference::DockerReference;
use stagex::oci::{Digest, Platform};
use stagex::pallet::expr::{Expr, ItemRef};

fuzz_target!(|data: &[u8]| {
    let Some(text) = stagex_fuzz::text(data) else {
        return;
    };
    if let Ok(expr) = text.parse::<Expr>() {
        assert!(!expr.items.is_empty());
        for item in &expr.items {
            let again: ItemRef = item.to_string().parse().expect("an item prints parseably");
            assert_eq!(&again, item);
        }
    }
    for parse in [DockerReference::parse, DockerReference::parse_explicit] {
        if let Ok(reference) = parse(text) {
            let printed = reference.to_string();
            let again = DockerReference::parse(&printed)
                .unwrap_or_else(|e| panic!("{reference:?} printed as {printed:?}: {e:#}"));
            assert_eq!(again, reference, "printed as {printed:?}");
        }
    }
    if let Ok(digest) = Digest::parse(text) {
        assert_eq!(digest.to_string(), text);
    }
    if let Ok(platform) = text.parse::<Platform>() {
        let again: Platform = platform
            .to_string()
            .parse()
            .expect("a platform prints parseably");
        assert_eq!(again, platform);
    }
});
