//! The registry client against a real docker-registry on 127.0.0.1: push
//! (upload, skip, mount), pull (manifest bytes exact, blobs verified).
mod peers;

use peers::registry::Registry;
use stagex::oci::descriptor::Descriptor;
use stagex::oci::digest::Digest;
use stagex::oci::json::JsonBlob;
use stagex::oci::layout::Layout;
use stagex::oci::manifest::ImageManifest;
use stagex::oci::media_type;
use stagex::progress::NoProgress;
use stagex::registry::{BlobPush, RegistryClient};

fn sample(layout: &Layout) -> (Descriptor, Descriptor, JsonBlob) {
    let layer_bytes = vec![7u8; 5 << 20]; // more than one upload chunk
    let layer = Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        layout.write_blob(&layer_bytes).unwrap(),
        layer_bytes.len() as u64,
    );
    let config = JsonBlob::from_bytes(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
    );
    let config_desc = layout.write_json(&config, media_type::OCI_CONFIG).unwrap();
    let manifest = JsonBlob::of(&ImageManifest::new(
        config_desc.clone(),
        vec![layer.clone()],
    ))
    .unwrap();
    layout
        .write_json(&manifest, media_type::OCI_MANIFEST)
        .unwrap();
    (layer, config_desc, manifest)
}

#[test]
fn push_pull_mount_round_trip() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path().join("src")).unwrap();
    let (layer, config, manifest) = sample(&layout);
    let client = RegistryClient::new(&registry.host()).unwrap();

    assert!(!client.blob_exists("ns/a", &layer.digest).unwrap());
    let pushed = client
        .push_blob("ns/a", &layer, &layout, &[], &NoProgress)
        .unwrap();
    assert_eq!(pushed, BlobPush::Uploaded(layer.size));
    client
        .push_blob("ns/a", &config, &layout, &[], &NoProgress)
        .unwrap();
    client
        .push_manifest("ns/a", "v1", &manifest.bytes, media_type::OCI_MANIFEST)
        .unwrap();
    assert_eq!(
        client
            .push_blob("ns/a", &layer, &layout, &[], &NoProgress)
            .unwrap(),
        BlobPush::Existed
    );
    // Another repository on the same registry: mounted, not uploaded.
    assert_eq!(
        client
            .push_blob("ns/b", &layer, &layout, &["ns/a".to_string()], &NoProgress)
            .unwrap(),
        BlobPush::Mounted
    );
    assert!(client.blob_exists("ns/b", &layer.digest).unwrap());

    // Pull: exact manifest bytes by tag and by digest; blobs verified.
    let (bytes, digest) = client.pull_manifest("ns/a", "v1").unwrap();
    assert_eq!(bytes, manifest.bytes);
    assert_eq!(digest, manifest.digest);
    let (bytes, _) = client
        .pull_manifest("ns/a", &manifest.digest.to_string())
        .unwrap();
    assert_eq!(bytes, manifest.bytes);
    let missing = Digest::of_bytes(b"nothing");
    let error = format!(
        "{:#}",
        client
            .pull_manifest("ns/a", &missing.to_string())
            .unwrap_err()
    );
    assert!(error.contains(&registry.host()), "{error}");

    let dest = Layout::create(dir.path().join("dest")).unwrap();
    client
        .pull_blob("ns/b", &layer, &dest, &NoProgress)
        .unwrap();
    assert_eq!(
        dest.read_blob(&layer.digest).unwrap().len() as u64,
        layer.size
    );
    // A descriptor whose size lies is refused and nothing is stored.
    let mut wrong = config.clone();
    wrong.size += 1;
    assert!(client
        .pull_blob("ns/a", &wrong, &dest, &NoProgress)
        .is_err());
    assert!(!dest.has_blob(&config.digest));
}
