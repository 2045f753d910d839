//! Owns: what the fuzz targets share: the fixed trusted keyring (a seed
//! signer's certificate) and the image a fuzzed signature is checked
//! against. Nothing here decides anything the library decides.
use std::path::Path;
use std::sync::OnceLock;

use stagex::oci::reference::DockerReference;
use stagex::oci::Digest;
use stagex::sign::keyring::Keyring;
use stagex::sign::verify::{Expected, VerifyOptions};

/// The certificate that signed the seed signatures (an Ed25519 key made
/// with gpg for the seeds; its secret is not kept).
const SIGNER: &[u8] = include_bytes!("../fixtures/signer.pgp");

/// The keyring every signature target verifies against, loaded once.
pub fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        let mut keyring = Keyring::default();
        keyring
            .add_bytes(SIGNER, Path::new("fuzz/fixtures/signer.pgp"))
            .expect("the fixture certificate loads");
        keyring
    })
}

/// The image the seed payloads name: `stagex/core-busybox:latest` at the
/// all-zero digest.
pub fn expected() -> Expected {
    Expected {
        digest: Digest::from_hex(&"0".repeat(64)).expect("64 hex digits"),
        reference: DockerReference::parse("stagex/core-busybox:latest").expect("a valid reference"),
    }
}

/// Both strictness levels `verify` can run with.
pub fn options() -> [VerifyOptions; 2] {
    [
        VerifyOptions::default(),
        VerifyOptions {
            allow_legacy: true,
            ..VerifyOptions::default()
        },
    ]
}

/// The input as text, or `None` when it is not UTF-8 (the readers of
/// text files refuse those before parsing).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Puts `pallet` into a catalog beside two real pallets (`gcc`, and
/// `rust`, whose base chain names `clang`, absent here), validates it and,
/// when it validates, expands it and applies its config: what `stagex
/// pallet` does with a definition before anything is fetched. Every link
/// and copy destination the plan holds must be a normalized absolute path.
pub fn exercise_pallet(pallet: stagex::pallet::definition::Pallet) {
    use stagex::pallet::definition::{Catalog, Step};
    use stagex::pallet::expr::{Expr, ItemRef};
    let name = pallet.name.clone();
    let mut catalog = Catalog::default();
    for (short, text) in [
        ("gcc", include_str!("../../pallets/gcc.toml")),
        ("rust", include_str!("../../pallets/rust.toml")),
    ] {
        let neighbour = stagex::pallet::definition::Pallet::parse(short, text).expect("shipped");
        catalog.pallets.insert(short.to_string(), neighbour);
    }
    catalog.pallets.insert(name.clone(), pallet);
    if let Err(e) = catalog.validate(None) {
        let _ = format!("{e:#}");
        return;
    }
    let expr = Expr {
        items: vec![ItemRef::named(&name), ItemRef::named("pallet-gcc")],
    };
    let plan = match catalog.expand(&expr) {
        Ok(plan) => plan,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    let _ = plan.references();
    if let Err(e) = plan.config.apply(&stagex::oci::RunConfig::default()) {
        let _ = format!("{e:#}");
    }
    for step in &plan.steps {
        match step {
            Step::Links { links, .. } => {
                for link in links {
                    assert_image_path(&link.for_arch("x86_64").path);
                }
            }
            Step::Copy { copy, .. } => {
                assert_image_path(&copy.source);
                assert_image_path(&copy.path);
            }
            Step::Package(_) => {}
        }
    }
}

/// An absolute path inside an image that normalizes to itself minus `/`.
fn assert_image_path(path: &str) {
    let relative = path.strip_prefix('/').expect("an absolute image path");
    let normalized = stagex::layer::normalize_path(path).expect("a normalized image path");
    assert_eq!(normalized, relative, "{path:?} is not normalized");
}
