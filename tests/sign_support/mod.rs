//! Shared fixtures for the signature tests: throwaway OpenPGP keys made with
//! sequoia, tiny OCI layouts in `out/` (both the manifest-direct and the
//! image-index shapes), and raw signing of arbitrary payload bytes.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, LiteralWriter, Message, Signer};
use openpgp::serialize::SerializeInto;
use openpgp::types::KeyFlags;
use openpgp::Cert;

use stagex::oci::descriptor::{Descriptor, Platform};
use stagex::oci::digest::Digest;
use stagex::oci::json::JsonBlob;
use stagex::oci::layout::Layout;
use stagex::oci::manifest::{ImageIndex, ImageManifest};
use stagex::oci::media_type;

/// One copy in `peers::tools`; re-exported for `use sign_support::*` callers
/// (not every crate uses it, as with `dead_code` above).
#[allow(unused_imports)]
pub use crate::peers::tools::json;

/// A v4 ed25519 key whose primary signs (what skopeo 1.9 needs).
pub fn key(name: &str) -> Cert {
    CertBuilder::new()
        .add_userid(format!("{name} <{name}@example.org>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .generate()
        .unwrap()
        .0
}

/// A key whose primary only certifies; a subkey signs.
pub fn subkey_signer(name: &str) -> Cert {
    CertBuilder::new()
        .add_userid(format!("{name} <{name}@example.org>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification())
        .add_signing_subkey()
        .generate()
        .unwrap()
        .0
}

/// A key created `age` ago, valid for `validity`.
pub fn aged_key(name: &str, age: Duration, validity: Duration) -> Cert {
    CertBuilder::new()
        .add_userid(format!("{name} <{name}@example.org>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .set_creation_time(SystemTime::now() - age)
        .set_validity_period(validity)
        .generate()
        .unwrap()
        .0
}

/// A key and its revocation certificate.
pub fn key_with_revocation(name: &str) -> (Cert, openpgp::packet::Signature) {
    CertBuilder::new()
        .add_userid(format!("{name} <{name}@example.org>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .set_creation_time(SystemTime::now() - Duration::from_secs(3600))
        .generate()
        .unwrap()
}

/// Writes the public certificates: even ones armored, odd ones binary.
pub fn write_keys(dir: &Path, certs: &[&Cert]) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, cert) in certs.iter().enumerate() {
        let bytes = if i % 2 == 0 {
            cert.armored().to_vec().unwrap()
        } else {
            cert.to_vec().unwrap()
        };
        std::fs::write(dir.join(format!("key-{i}.pgp")), bytes).unwrap();
    }
}

/// Writes a secret key file (binary TSK) and returns its path.
pub fn write_secret(dir: &Path, name: &str, cert: &Cert) -> PathBuf {
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, cert.as_tsk().to_vec().unwrap()).unwrap();
    path
}

/// Signs arbitrary bytes as a one-pass signed message, optionally armored,
/// detached, or back-dated.
pub fn sign_raw(
    cert: &Cert,
    bytes: &[u8],
    at: Option<SystemTime>,
    armor: bool,
    detached: bool,
) -> Vec<u8> {
    let policy = StandardPolicy::new();
    let when = at.unwrap_or_else(SystemTime::now);
    let keypair = cert
        .keys()
        .with_policy(&policy, when)
        .for_signing()
        .secret()
        .next()
        .expect("a signing key")
        .key()
        .clone()
        .into_keypair()
        .unwrap();
    let mut out = Vec::new();
    {
        let mut message = Message::new(&mut out);
        if armor {
            message = Armorer::new(message).build().unwrap();
        }
        let mut builder = Signer::new(message, keypair).unwrap();
        if let Some(t) = at {
            builder = builder.creation_time(t);
        }
        if detached {
            let mut signer = builder.detached().build().unwrap();
            signer.write_all(bytes).unwrap();
            signer.finalize().unwrap();
        } else {
            let signer = builder.build().unwrap();
            let mut literal = LiteralWriter::new(signer).build().unwrap();
            literal.write_all(bytes).unwrap();
            literal.finalize().unwrap();
        }
    }
    out
}

/// Writes `root/digests/<stage>.txt`: one `<hex> <name>` line per entry, in
/// the order given.
pub fn write_stage_digests(root: &Path, stage: &str, entries: &[(&str, &Digest)]) {
    let lines: String = entries
        .iter()
        .map(|(name, digest)| format!("{} {name}\n", digest.hex()))
        .collect();
    std::fs::create_dir_all(root.join("digests")).unwrap();
    std::fs::write(root.join("digests").join(format!("{stage}.txt")), lines).unwrap();
}

/// A payload as skopeo writes it.
pub fn payload(identity: &str, digest: &Digest) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{identity}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"atomic container signature"}},"optional":{{"creator":"test","timestamp":1700000000}}}}"#
    )
    .into_bytes()
}

/// How a test layout points at its manifest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// index.json -> manifest (skopeo, umoci), tagged with `ref.name`.
    Manifest,
    /// index.json -> image index -> manifest (buildx), version annotation.
    Index,
    /// index.json -> manifest, no tag and no annotation (version from package.toml).
    Bare,
}

/// Builds `out/<package>/` holding one tiny linux/amd64 image (no layers;
/// `salt` makes digests differ); returns the per-platform manifest digest.
pub fn make_image(out: &Path, package: &str, version: &str, shape: Shape, salt: &str) -> Digest {
    let layout = Layout::create(out.join(package)).unwrap();
    let config = JsonBlob::from_bytes(
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Env":["SALT={salt}"]}}}}"#)
            .into_bytes(),
    );
    let config_desc = layout.write_json(&config, media_type::OCI_CONFIG).unwrap();
    let mut manifest = ImageManifest::new(config_desc, Vec::new());
    if shape == Shape::Index {
        manifest.annotations.insert(
            media_type::ANNOTATION_VERSION.to_string(),
            version.to_string(),
        );
    }
    let blob = JsonBlob::of(&manifest).unwrap();
    let mut desc = layout.write_json(&blob, media_type::OCI_MANIFEST).unwrap();
    desc.platform = Some(Platform::new("linux", "amd64"));
    match shape {
        Shape::Manifest => layout.set_ref(Some(version), desc.clone()).unwrap(),
        Shape::Bare => layout.set_ref(None, desc.clone()).unwrap(),
        Shape::Index => {
            let mut index = ImageIndex::new();
            index.manifests.push(desc.clone());
            let index_blob = JsonBlob::of(&index).unwrap();
            let index_desc: Descriptor = layout
                .write_json(&index_blob, media_type::OCI_INDEX)
                .unwrap();
            layout.set_ref(None, index_desc).unwrap();
        }
    }
    desc.digest
}

/// skopeo copy of `out/<package>:1.0` to `<host>/stagex/<package>:1.0` (a
/// plain-HTTP registry); returns that reference.
pub fn skopeo_push(skopeo: &Path, root: &Path, host: &str, package: &str) -> String {
    let reference = format!("{host}/stagex/{package}:1.0");
    crate::peers::tools::run_ok(
        std::process::Command::new(skopeo)
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!(
                "oci:{}:1.0",
                root.join("out").join(package).display()
            ))
            .arg(format!("docker://{reference}")),
    );
    reference
}

/// skopeo copy of `reference` with a signedBy policy on `keyring` and the
/// lookaside `lookaside` (TLS settings from `cert_dir`); the policy and
/// registries.d files are named after that pair, so calls can share `work`.
pub fn skopeo_pull(
    skopeo: &Path,
    work: &Path,
    keyring: &Path,
    lookaside: &str,
    reference: &str,
    cert_dir: Option<&Path>,
) -> std::process::Output {
    let host = reference.split('/').next().unwrap();
    let pair = format!("{}\n{lookaside}", keyring.display());
    let tag = Digest::of_bytes(pair.as_bytes()).hex()[..16].to_string();
    let policy = work.join(format!("policy-{tag}.json"));
    std::fs::write(
        &policy,
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {host: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keyring}]},
                "oci": {"": [{"type": "insecureAcceptAnything"}]}
            }
        })
        .to_string(),
    )
    .unwrap();
    let registries_d = work.join(format!("registries.d-{tag}"));
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("x.yaml"),
        format!("docker:\n  {host}:\n    lookaside: {lookaside}\n"),
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(skopeo);
    c.arg("--policy")
        .arg(&policy)
        .arg("--registries.d")
        .arg(&registries_d);
    c.args(["copy", "--src-tls-verify=false", "--remove-signatures"]);
    if let Some(dir) = cert_dir {
        c.arg("--src-cert-dir").arg(dir);
    }
    c.arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:x", dest.path().join("img").display()));
    c.output().unwrap()
}
