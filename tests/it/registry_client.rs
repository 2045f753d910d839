//! The registry client against a real docker-registry on 127.0.0.1: push
//! (upload, skip, mount), pull (manifest bytes exact, blobs verified).
use crate::peers;

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

/// A fresh registry, a layout in `dir/src` holding `sample`, and a client.
struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    layout: Layout,
    layer: Descriptor,
    config: Descriptor,
    manifest: JsonBlob,
    client: RegistryClient,
}

fn setup() -> Option<Setup> {
    let registry = Registry::start()?;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(dir.path().join("src")).unwrap();
    let (layer, config, manifest) = sample(&layout);
    let client = RegistryClient::new(&registry.host()).unwrap();
    Some(Setup {
        registry,
        dir,
        layout,
        layer,
        config,
        manifest,
        client,
    })
}

impl Setup {
    /// Pushes one blob of the sample to `repo`, mounting from `mount_from`.
    fn push(&self, repo: &str, blob: &Descriptor, mount_from: &[String]) -> BlobPush {
        self.client
            .push_blob(repo, blob, &self.layout, mount_from, &NoProgress)
            .unwrap()
    }

    /// Pushes the sample's manifest to `repo` as `v1`.
    fn push_manifest(&self, repo: &str) {
        self.client
            .push_manifest(repo, "v1", &self.manifest.bytes, media_type::OCI_MANIFEST)
            .unwrap();
    }
}

#[test]
fn push_pull_mount_round_trip() {
    let Some(setup) = setup() else {
        return;
    };
    let Setup {
        registry,
        dir,
        layer,
        config,
        manifest,
        client,
        ..
    } = &setup;

    assert!(!client.blob_exists("ns/a", &layer.digest).unwrap());
    assert_eq!(
        setup.push("ns/a", layer, &[]),
        BlobPush::Uploaded(layer.size)
    );
    setup.push("ns/a", config, &[]);
    setup.push_manifest("ns/a");
    assert_eq!(setup.push("ns/a", layer, &[]), BlobPush::Existed);
    // Another repository on the same registry: mounted, not uploaded.
    let mount_from = ["ns/a".to_string()];
    assert_eq!(setup.push("ns/b", layer, &mount_from), BlobPush::Mounted);
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
    client.pull_blob("ns/b", layer, &dest, &NoProgress).unwrap();
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

/// `GET /v2/` probes our client sent (the readiness poll speaks HTTP/1.0).
fn probes(registry: &Registry) -> usize {
    registry.logs().matches("\"GET /v2/ HTTP/1.1\"").count()
}

#[test]
fn one_probe_serves_every_request_and_uploads_are_one_put() {
    let Some(setup) = setup() else {
        return;
    };
    let Setup {
        registry,
        manifest,
        client,
        ..
    } = &setup;
    for repo in ["ns/a", "ns/b"] {
        for blob in [&setup.layer, &setup.config] {
            setup.push(repo, blob, &[]);
        }
        setup.push_manifest(repo);
        // The tag's digest by HEAD (Docker-Content-Digest), as pushed.
        assert_eq!(client.manifest_digest(repo, "v1").unwrap(), manifest.digest);
    }
    assert!(client
        .manifest_digest("ns/a", "nope")
        .unwrap_err()
        .is_not_found());
    let logs = registry.logs();
    assert_eq!(probes(registry), 1, "one GET /v2/ for the client:\n{logs}");
    // Four blobs, each one POST and one PUT carrying the bytes.
    assert_eq!(logs.matches("\"PATCH ").count(), 0, "{logs}");
    let puts = logs
        .lines()
        .filter(|l| l.contains("\"PUT ") && l.contains("/blobs/uploads/"))
        .count();
    assert_eq!(puts, 4, "{logs}");
    assert_eq!(logs.matches("\"HEAD /v2/ns/a/manifests/v1").count(), 1);
}

#[test]
fn a_blob_changed_on_disk_is_not_uploaded() {
    let Some(setup) = setup() else {
        return;
    };
    let Setup {
        registry,
        layout,
        layer,
        config,
        client,
        ..
    } = &setup;
    // Same size, one byte flipped: the registry's digest check refuses it
    // and the error names the local file.
    let path = layout.blob_path(&layer.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let before = registry.stored_blobs();
    let error = client
        .upload_blob("ns/a", layer, layout, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("does not match its digest")
            && error.contains(&layer.digest.to_string())
            && error.contains(&path.display().to_string()),
        "{error}"
    );
    assert!(!client.blob_exists("ns/a", &layer.digest).unwrap());
    assert_eq!(registry.stored_blobs(), before, "nothing committed");
    // A truncated file fails the same way; an honest blob still goes.
    std::fs::write(&path, &bytes[..10]).unwrap();
    let error = client
        .upload_blob("ns/a", layer, layout, &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(error.contains("descriptor says"), "{error}");
    client
        .upload_blob("ns/a", config, layout, &NoProgress)
        .unwrap();
    assert!(client.blob_exists("ns/a", &config.digest).unwrap());
}
