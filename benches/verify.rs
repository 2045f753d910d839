//! Benchmark: verify 2000 signatures (1000 images x 2 signers) with
//! `stagex`'s verifier (all cores, certificates parsed once) against
//! StageX's way, one `gpgv --keyring` process per signature file, in the
//! same run. gpgv runs over a sample (BENCH_GPGV_SAMPLE files, default 200;
//! set 2000 for all) and is extrapolated linearly to 2000: stated in the
//! output. Run: `cargo bench --bench verify`.
use std::process::Command;
use std::time::{Duration, Instant};

use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::serialize::Serialize;
use openpgp::types::KeyFlags;

use stagex::lookaside::file::FileLookaside;
use stagex::lookaside::Lookaside;
use stagex::oci::digest::Digest;
use stagex::sign::check::verify_images;
use stagex::sign::image::ImageTarget;
use stagex::sign::keyring::Keyring;
use stagex::sign::payload::Payload;
use stagex::sign::reference::DockerReference;
use stagex::sign::signer::{KeyFileSigner, PayloadSigner};

const IMAGES: usize = 1000;

fn key(name: &str) -> openpgp::Cert {
    CertBuilder::new()
        .add_userid(format!("{name} <{name}@example.org>"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .generate()
        .unwrap()
        .0
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let certs = [key("alice"), key("bob")];
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut ring = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        let mut bytes = Vec::new();
        cert.serialize(&mut bytes).unwrap();
        std::fs::write(keys.join(format!("k{i}.pgp")), &bytes).unwrap();
        ring.extend(bytes);
    }
    let ring_path = root.join("k.gpg");
    std::fs::write(&ring_path, &ring).unwrap();

    // 1000 images, each signed by both keys, in a file:// lookaside.
    let signers: Vec<KeyFileSigner> = certs
        .iter()
        .map(|c| KeyFileSigner::from_cert(c.clone()).unwrap())
        .collect();
    let store = FileLookaside::new(root.join("signatures"));
    let mut targets = Vec::new();
    let mut files = Vec::new();
    for i in 0..IMAGES {
        let digest = Digest::of_bytes(format!("manifest {i}").as_bytes());
        let identity = format!("stagex/bench-{i:04}:1.0");
        let reference = DockerReference::parse(&identity).unwrap();
        let payload = Payload {
            docker_reference: identity.clone(),
            manifest_digest: digest.clone(),
            creator: Some("bench".into()),
            timestamp: Some(1_700_000_000),
        }
        .to_bytes();
        for signer in &signers {
            let (_, path) = store
                .add(&reference.path, &digest, &signer.sign(&payload).unwrap())
                .unwrap();
            files.push(path);
        }
        targets.push(ImageTarget {
            name: format!("bench-{i:04}"),
            digest,
            platform: None,
            identity,
            repository_path: reference.path.clone(),
            reference,
        });
    }
    let signatures = files.len();

    // stagex: load keys/, read the lookaside, verify everything (best of 5).
    let mut ours = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let keyring = Keyring::load_dir(&keys).unwrap();
        let lookaside = Lookaside::parse(root.join("signatures").to_str().unwrap()).unwrap();
        let reports = verify_images(&keyring, &lookaside, &targets, 2);
        let elapsed = start.elapsed();
        assert!(reports
            .iter()
            .all(|r| r.quorum && r.valid_signers == 2 && r.invalid.is_empty()));
        ours = ours.min(elapsed);
    }

    // StageX's way: one gpgv process per file, from a shell loop.
    let sample: usize = std::env::var("BENCH_GPGV_SAMPLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
        .clamp(1, signatures);
    let list = root.join("files.txt");
    std::fs::write(
        &list,
        files[..sample]
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
    .unwrap();
    let gpg_home = root.join("gnupg");
    std::fs::create_dir_all(&gpg_home).unwrap();
    let script = "while read -r f; do gpgv --keyring \"$1\" \"$f\" 2>/dev/null || { echo \"gpgv rejected $f\" >&2; exit 1; }; done < \"$2\"";
    let start = Instant::now();
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&ring_path)
        .arg(&list)
        .env("GNUPGHOME", &gpg_home)
        .status()
        .expect("sh");
    let gpgv_sample = start.elapsed();
    assert!(status.success(), "gpgv loop failed (is gpgv installed?)");
    let gpgv_all = gpgv_sample.mul_f64(signatures as f64 / sample as f64);
    let ratio = gpgv_all.as_secs_f64() / ours.as_secs_f64();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("signatures: {signatures} ({IMAGES} images x 2 signers), {threads} core(s)");
    println!(
        "stagex verify (keys + lookaside read + verify + quorum, best of 5): {:.3} s  ({:.1} us/signature)",
        ours.as_secs_f64(),
        ours.as_secs_f64() * 1e6 / signatures as f64
    );
    println!(
        "gpgv loop: {sample} files in {:.3} s{}",
        gpgv_sample.as_secs_f64(),
        if sample < signatures {
            format!(
                " -> extrapolated to {signatures}: {:.3} s",
                gpgv_all.as_secs_f64()
            )
        } else {
            String::new()
        }
    );
    println!("ratio (gpgv loop / stagex): {ratio:.1}x  (target >= 50x)");
}
