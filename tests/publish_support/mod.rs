//! Shared fixtures for the publish tests: a release in a throwaway root
//! (out/ images in StageX's buildx shape with real gzip layers, the
//! digests/<stage>.txt listing them), maintainers' keys (sequoia, or gpg
//! for skopeo) and signing them with `stagex sign`, and running
//! `stagex publish --json`.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use stagex::oci::descriptor::{Descriptor, Platform};
use stagex::oci::digest::Digest;
use stagex::oci::json::JsonBlob;
use stagex::oci::layout::Layout;
use stagex::oci::manifest::{ImageIndex, ImageManifest};
use stagex::oci::media_type;

use crate::peers::tools::stagex_in;
/// One copy in `peers::tools`; re-exported for `use publish_support::*` callers
/// (not every crate uses it, as with `dead_code` above).
#[allow(unused_imports)]
pub use crate::peers::tools::{json, text};

/// One image of a test release.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The per-platform manifest (what digests/*.txt lists and keys sign).
    pub manifest: Digest,
    /// The image index index.json points at (what tags point at).
    pub index: Digest,
    pub layer_bytes: u64,
}

/// A gzip'd tar holding one file of `size` pseudo-random bytes (stored,
/// not compressed: incompressible data, and fast for big benchmarks).
fn layer(size: usize, seed: u64) -> (Vec<u8>, Digest) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_cksum();
    tar.append_data(&mut header, "data.bin", data.as_slice())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::of_bytes(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Writes `out/<name>/`: index.json -> image index (version annotated) ->
/// one linux/amd64 manifest with one layer of `size` bytes.
pub fn make_package(out: &Path, name: &str, version: &str, size: usize, seed: u64) -> Package {
    let layout = Layout::create(out.join(name)).unwrap();
    let (gz, diff_id) = layer(size, seed);
    let layer_digest = layout.write_blob(&gz).unwrap();
    let layer_desc = Descriptor::new(media_type::OCI_LAYER_GZIP, layer_digest, gz.len() as u64);
    let config = JsonBlob::from_bytes(
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["SEED={seed}"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        )
        .into_bytes(),
    );
    let config_desc = layout.write_json(&config, media_type::OCI_CONFIG).unwrap();
    let mut manifest = ImageManifest::new(config_desc, vec![layer_desc]);
    manifest.annotations.insert(
        media_type::ANNOTATION_VERSION.to_string(),
        version.to_string(),
    );
    let blob = JsonBlob::of(&manifest).unwrap();
    let mut desc = layout.write_json(&blob, media_type::OCI_MANIFEST).unwrap();
    desc.platform = Some(Platform::new("linux", "amd64"));
    let mut index = ImageIndex::new();
    index.manifests.push(desc.clone());
    index.annotations.insert(
        media_type::ANNOTATION_VERSION.to_string(),
        version.to_string(),
    );
    let index_desc = layout
        .write_json(&JsonBlob::of(&index).unwrap(), media_type::OCI_INDEX)
        .unwrap();
    let mut top = index_desc.clone();
    top.annotations.insert(
        media_type::ANNOTATION_REF_NAME.to_string(),
        version.to_string(),
    );
    layout.set_ref(None, top).unwrap();
    Package {
        name: name.to_string(),
        version: version.to_string(),
        manifest: desc.digest,
        index: index_desc.digest,
        layer_bytes: gz.len() as u64,
    }
}

/// `count` packages `<stage>-p<i>` (version 1.<i>) with `size`-byte layers,
/// and digests/<stage>.txt listing them.
pub fn make_release(
    root: &Path,
    stage: &str,
    count: usize,
    size: usize,
    seed: u64,
) -> Vec<Package> {
    let packages: Vec<Package> = (0..count)
        .map(|i| {
            make_package(
                &root.join("out"),
                &format!("{stage}-p{i}"),
                &format!("1.{i}"),
                size,
                seed * 1000 + i as u64,
            )
        })
        .collect();
    write_digests(root, stage, &packages);
    packages
}

/// digests/<stage>.txt as `stagex digests` writes it.
pub fn write_digests(root: &Path, stage: &str, packages: &[Package]) {
    let sorted: BTreeMap<&str, &Digest> = packages
        .iter()
        .map(|p| (p.name.as_str(), &p.manifest))
        .collect();
    let entries: Vec<(&str, &Digest)> = sorted.into_iter().collect();
    crate::sign_support::write_stage_digests(root, stage, &entries);
}

/// Signs every image in out/ with the secret key file `key`, identity `ns`
/// (`--unreleased`: these tests gate publishing, so they also sign images
/// that do not match digests/, which `stagex sign` refuses by default).
pub fn sign_all(root: &Path, key: &Path, ns: &str) {
    let out = stagex_in(root, &["sign", "--unreleased", "--key"])
        .arg(key)
        .args(["--identity", ns])
        .output()
        .unwrap();
    assert!(out.status.success(), "stagex sign: {}", text(&out));
}

/// `stagex --json publish --release 2026.03.0 --identity NS ARGS...` with the
/// journal in its default place and a fast retry backoff.
pub fn publish(root: &Path, ns: &str, args: &[&str]) -> Command {
    let mut c = stagex_in(
        root,
        &[
            "--json",
            "publish",
            "--release",
            "2026.03.0",
            "--identity",
            ns,
            "--retry-base-ms",
            "20",
        ],
    );
    c.args(args);
    c
}

/// The keys dir of `root`.
pub fn keys_dir(root: &Path) -> PathBuf {
    root.join("keys")
}

/// The digest a plain-HTTP registry serves for `reference` (`skopeo
/// inspect --raw`), or `None` when it serves nothing.
pub fn served(skopeo: &Path, reference: &str) -> Option<String> {
    let out = Command::new(skopeo)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| Digest::of_bytes(&out.stdout).to_string())
}

/// An executable credential helper `docker-credential-<name>` (a shell
/// `script`) in `root/bin`, and a docker config directory `root/docker`
/// whose `credHelpers` names it for `host`. Returns (bin, docker config
/// dir): put the first on PATH and the second in DOCKER_CONFIG.
pub fn credential_helper(root: &Path, name: &str, host: &str, script: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = root.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers":{{"{host}":"{name}"}}}}"#),
    )
    .unwrap();
    (bin, docker)
}
