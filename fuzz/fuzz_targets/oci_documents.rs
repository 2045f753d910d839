#![no_main]
//! Owns: fuzzing the OCI documents read from registries and layouts:
//! manifests and indexes (by their own media type, by shape, and under
//! each media type a registry may declare) and image configs. What parses
//! must serialize and parse back to the same value (the store keeps what
//! it parsed).
use libfuzzer_sys::fuzz_target;
use stagex::oci::media_type::{self, layer_compression};
use stagex::oci::{AnyManifest, ImageConfig, Platform};

const DECLARED: [Option<&str>; 5] = [
    None,
    Some(media_type::OCI_MANIFEST),
    Some(media_type::OCI_INDEX),
    Some(media_type::DOCKER_MANIFEST_LIST),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    for declared in DECLARED {
        match AnyManifest::parse(data, declared) {
            Ok(manifest) => round_trip(&manifest),
            Err(e) => {
                let _ = format!("{e:#}");
            }
        }
    }
    if let Ok(config) = serde_json::from_slice::<ImageConfig>(data) {
        let bytes = serde_json::to_vec(&config).expect("a parsed config serializes");
        let again: ImageConfig = serde_json::from_slice(&bytes).expect("and parses back");
        assert_eq!(again, config);
        let _ = config.config.env_var("PATH");
    }
});

fn round_trip(manifest: &AnyManifest) {
    let host = Platform::new("linux", "amd64");
    let bytes = match manifest {
        AnyManifest::Image(image) => {
            for layer in &image.layers {
                let _ = layer_compression(&layer.media_type);
            }
            serde_json::to_vec(image)
        }
        AnyManifest::Index(index) => {
            for entry in &index.manifests {
                if let Some(platform) = &entry.platform {
                    let _ = (platform.matches(&host), platform.to_string());
                }
            }
            serde_json::to_vec(index)
        }
    }
    .expect("a parsed manifest serializes");
    let declared = match manifest {
        AnyManifest::Image(_) => media_type::OCI_MANIFEST,
        AnyManifest::Index(_) => media_type::OCI_INDEX,
    };
    let again = AnyManifest::parse(&bytes, Some(declared)).expect("and parses back");
    assert_eq!(&again, manifest);
}
