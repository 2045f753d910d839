//! `stagex keys`: list and check a trusted keys directory made with real
//! gpg keys; refresh it from a real nginx keyserver over TLS (test CA)
//! answering the VKS and HKP paths: an extended key is merged (and an
//! "after expiry" signature then counts), a revocation is applied, a
//! certificate with another primary and a subkey without a valid binding
//! are refused, and a server that never answers costs one line while the
//! next source still refreshes.
use crate::peers;
use crate::sign_keys::{invalid, release, signer_files, verify, DAY, T0, YEAR};

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

use peers::gpg::GpgHome;
use peers::nginx::Nginx;
use peers::tools::{json, stagex_output, text};
use sequoia_openpgp as openpgp;
use stagex::oci::digest::Digest;

use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;

fn write_key(root: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::write(root.join("keys").join(name), bytes).unwrap();
}

/// A TLS nginx serving `dir` with HKP's lookup mapped onto files
/// `hkp/0x<FPR>` (VKS paths are plain files already).
fn keyserver(dir: &Path) -> Option<Nginx> {
    Nginx::start(
        dir,
        true,
        "location = /pks/lookup { try_files /hkp/$arg_search =404; }",
    )
}

fn serve_vks(dir: &Path, fingerprint: &str, cert: &[u8]) {
    let path = dir.join("vks/v1/by-fingerprint");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join(fingerprint), cert).unwrap();
}

fn serve_hkp(dir: &Path, fingerprint: &str, cert: &[u8]) {
    std::fs::create_dir_all(dir.join("hkp")).unwrap();
    std::fs::write(dir.join("hkp").join(format!("0x{fingerprint}")), cert).unwrap();
}

fn keys(root: &Path, server: &Nginx, args: &[&str]) -> Output {
    let mut command = peers::tools::stagex();
    command
        .arg("--root")
        .arg(root)
        .arg("keys")
        .args(args)
        .env("STAGEX_CA_FILE", server.ca.as_ref().unwrap())
        .env("STAGEX_TIMEOUT", "3");
    command.output().unwrap()
}

#[test]
fn refresh_merges_an_extension_so_a_signature_after_the_old_expiry_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (root, served) = (dir.path().join("root"), dir.path().join("served"));
    let Some(key) = GpgHome::generate("lapsed", "ed25519", "sign", "1y", Some(T0)) else {
        return;
    };
    let digest = Digest::of_bytes(b"refresh image");
    let payload = sign_support_payload(&digest);
    write_key(&root, "lapsed.pgp", &key.export());
    key.set_expire("3y", Some(T0 + 2 * YEAR));
    let after = key.sign_at(&payload, Some(T0 + 2 * YEAR + DAY));
    release(&root, &digest, &[&after]);
    let before = verify(&root, &[]);
    assert!(!before.status.success());
    assert_eq!(invalid(&before)[0].1, "key-expired");
    assert!(
        invalid(&before)[0]
            .2
            .contains(&format!("`stagex keys refresh {}`", key.fingerprint)),
        "the reason ends with the command that fixes it: {:?}",
        invalid(&before)
    );

    serve_vks(&served, &key.fingerprint, &key.export());
    let Some(server) = keyserver(&served) else {
        return;
    };
    let output = keys(&root, &server, &["refresh", "--from", &server.url()]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("updated") && report.contains("expiry"),
        "{report}"
    );
    let after_refresh = verify(&root, &[]);
    assert!(after_refresh.status.success(), "{}", text(&after_refresh));
    assert_eq!(signer_files(&after_refresh), [(key.fingerprint.clone(), 1)]);

    // Nothing new the second time: the file is left as it is.
    let file = root.join("keys/lapsed.pgp");
    let bytes = std::fs::read(&file).unwrap();
    let again = keys(&root, &server, &["refresh", "--from", &server.url()]);
    assert!(text(&again).contains("unchanged"), "{}", text(&again));
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

fn sign_support_payload(digest: &Digest) -> Vec<u8> {
    crate::sign_support::payload("stagex/core-x:1.0", digest)
}

#[test]
fn a_revocation_from_hkp_is_applied_and_verify_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, served) = (dir.path().join("root"), dir.path().join("served"));
    let Some(key) = GpgHome::generate("gone", "ed25519", "sign", "never", Some(T0)) else {
        return;
    };
    let digest = Digest::of_bytes(b"revoked image");
    let signature = key.sign_at(&sign_support_payload(&digest), Some(T0 + DAY));
    write_key(&root, &format!("{}.asc", key.fingerprint), &key.export());
    release(&root, &digest, &[&signature]);
    assert!(verify(&root, &[]).status.success());

    key.revoke(1, Some(T0 + 10 * DAY));
    serve_hkp(&served, &key.fingerprint, &key.export());
    let Some(server) = keyserver(&served) else {
        return;
    };
    let output = keys(
        &root,
        &server,
        &["refresh", &key.fingerprint, "--from", &server.url()],
    );
    assert!(
        text(&output).contains("REVOKED (hard)"),
        "{}",
        text(&output)
    );
    let listed = keys(&root, &server, &["--json", "list"]);
    let listed = json(&listed);
    assert_eq!(
        listed[0]["certificates"][0]["revoked"]["kind"], "hard",
        "{listed}"
    );
    let checked = keys(&root, &server, &["check"]);
    assert!(!checked.status.success());
    assert!(
        text(&checked).contains("was revoked (hard)"),
        "{}",
        text(&checked)
    );
    let after = verify(&root, &[]);
    assert!(!after.status.success());
    assert_eq!(invalid(&after)[0].1, "key-revoked");
}

#[test]
fn another_primary_and_an_unbound_subkey_are_refused_and_a_hung_server_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (root, served) = (dir.path().join("root"), dir.path().join("served"));
    let Some(trusted) = GpgHome::generate("trusted", "ed25519", "sign", "never", None) else {
        return;
    };
    let Some(intruder) = GpgHome::generate("intruder", "ed25519", "sign", "never", None) else {
        return;
    };
    intruder.add_subkey("ed25519", "sign", "never", None);
    write_key(&root, "trusted.asc", &trusted.export());
    let original = std::fs::read(root.join("keys/trusted.asc")).unwrap();

    // A hung keyserver first: accepts connections, never answers.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://127.0.0.1:{}", hung.local_addr().unwrap().port());
    // The next source serves the intruder's certificate at the trusted path.
    serve_vks(&served, &trusted.fingerprint, &intruder.export());
    let Some(server) = keyserver(&served) else {
        return;
    };
    let output = keys(
        &root,
        &server,
        &["refresh", "--from", &hung_url, "--from", &server.url()],
    );
    let report = text(&output);
    assert!(report.contains("another primary"), "{report}");
    assert!(
        report.contains(&hung_url.replace("http://", "")) || report.contains("127.0.0.1"),
        "{report}"
    );
    assert_eq!(
        std::fs::read(root.join("keys/trusted.asc")).unwrap(),
        original
    );

    // The trusted certificate with the intruder's subkey and ITS binding
    // signature spliced in: the binding does not verify for this primary.
    let trusted_cert = Cert::from_bytes(&trusted.export()).unwrap();
    let intruder_cert = Cert::from_bytes(&intruder.export()).unwrap();
    let subkey = intruder_cert.keys().subkeys().next().unwrap();
    let mut packets: Vec<openpgp::Packet> = trusted_cert.clone().into_packets().collect();
    packets.push(subkey.key().clone().into());
    packets.extend(subkey.self_signatures().map(|s| s.clone().into()));
    let spliced = openpgp::PacketPile::from(packets).to_vec().unwrap();
    serve_vks(&served, &trusted.fingerprint, &spliced);
    let output = keys(&root, &server, &["refresh", "--from", &server.url()]);
    let report = text(&output);
    assert!(report.contains("not merged"), "{report}");
    assert!(report.contains("unchanged"), "{report}");
    let kept = Cert::from_bytes(&std::fs::read(root.join("keys/trusted.asc")).unwrap()).unwrap();
    assert_eq!(kept.keys().subkeys().count(), 0, "{report}");
    drop(hung);
}

#[test]
fn check_names_every_problem_and_list_shows_each_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(good) = GpgHome::generate("good", "ed25519", "sign", "never", None) else {
        return;
    };
    let Some(expired) = GpgHome::generate("old", "ed25519", "sign", "1y", Some(T0)) else {
        return;
    };
    let Some(weak) = GpgHome::generate("weak", "rsa2048", "sign", "never", None) else {
        return;
    };
    let Some(soon) = GpgHome::generate("soon", "ed25519", "sign", "10d", None) else {
        return;
    };
    write_key(root, &format!("{}.asc", good.fingerprint), &good.export());
    let alone = stagex_output(root, &["keys", "check"]);
    assert!(alone.status.success(), "{}", text(&alone));

    write_key(root, "old.pgp", &expired.export());
    write_key(root, &format!("{}.asc", weak.fingerprint), &weak.export());
    write_key(root, &format!("{}.asc", soon.fingerprint), &soon.export());
    write_key(root, "copy-of-good.asc", &good.export());
    let mut two = good.export();
    two.extend(expired.export());
    write_key(root, "two.asc", &two);
    let output = stagex_output(root, &["keys", "check"]);
    let report = text(&output);
    assert!(!output.status.success());
    for expected in [
        "expired on 2021-09-13",
        "weaker than RSA-3072",
        "expires on",
        "rename it to",
        "is also in",
        "holds 2 certificates",
    ] {
        assert!(report.contains(expected), "{expected} in {report}");
    }
    let listed = json(&stagex_output(root, &["--json", "keys", "list"]));
    let files = listed.as_array().unwrap();
    assert_eq!(files.len(), 6);
    let weak_entry = files
        .iter()
        .find(|f| f["certificates"][0]["fingerprint"] == weak.fingerprint.as_str())
        .unwrap();
    assert_eq!(weak_entry["certificates"][0]["algorithm"], "RSA-2048");
    assert_eq!(
        weak_entry["certificates"][0]["user_id"],
        "weak <weak@example.org>"
    );
}

#[test]
fn add_writes_the_certificate_under_its_fingerprint_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some(key) = GpgHome::generate("new", "ed25519", "sign", "never", None) else {
        return;
    };
    let file = root.join("new.asc");
    std::fs::write(&file, key.export()).unwrap();
    let output = stagex_output(root, &["keys", "add", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains(&key.fingerprint));
    assert!(root
        .join("keys")
        .join(format!("{}.asc", key.fingerprint))
        .is_file());
    let again = stagex_output(root, &["keys", "add", file.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already trusted"), "{}", text(&again));
}

/// A new maintainer's certificate written to `root/new.asc`, ready for `keys add`.
fn new_key_file(root: &Path) -> Option<(GpgHome, std::path::PathBuf)> {
    let key = GpgHome::generate("new", "ed25519", "sign", "never", None)?;
    let file = root.join("new.asc");
    std::fs::write(&file, key.export()).unwrap();
    Some((key, file))
}

#[test]
fn add_refuses_while_a_key_file_in_the_directory_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some((key, file)) = new_key_file(root) else {
        return;
    };
    // A broken file could be the maintainer's key already: adding must not guess.
    write_key(
        root,
        "broken.asc",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\ntruncated\n",
    );
    let output = stagex_output(root, &["keys", "add", file.to_str().unwrap()]);
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert!(
        report.contains("broken.asc") && report.contains("move it out of the keys directory"),
        "one error naming the file and the fix: {report}"
    );
    let added = root.join("keys").join(format!("{}.asc", key.fingerprint));
    assert!(!added.exists(), "nothing was written");
}

#[test]
fn add_never_replaces_an_entry_already_at_the_key_files_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Some((key, file)) = new_key_file(root) else {
        return;
    };
    std::fs::create_dir_all(root.join("keys")).unwrap();
    let name = root.join("keys").join(format!("{}.asc", key.fingerprint));
    let elsewhere = root.join("elsewhere.asc");
    std::os::unix::fs::symlink(&elsewhere, &name).unwrap();
    let output = stagex_output(root, &["keys", "add", file.to_str().unwrap()]);
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert!(
        report.contains(&format!("{}.asc already exists", key.fingerprint)),
        "{report}"
    );
    let link = std::fs::symlink_metadata(&name).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    assert!(!elsewhere.exists(), "nothing was written through the link");
}

#[test]
fn sign_warns_when_its_key_expires_within_30_days() {
    use crate::sign_support::{aged_key, make_image, write_secret, Shape};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hour = std::time::Duration::from_secs(3600);
    let soon = aged_key("soon", hour, 240 * hour);
    let secret = write_secret(root, "soon", &soon);
    make_image(&root.join("out"), "core-x", "1", Shape::Manifest, "x");
    let args = ["sign", "--unreleased", "--key", secret.to_str().unwrap()];
    let output = stagex_output(root, &args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the signing key {} expires on",
            soon.fingerprint().to_hex()
        )) && stderr.contains("(in 9 days)"),
        "{stderr}"
    );
    let lasting = crate::sign_support::key("lasting");
    let secret = write_secret(root, "lasting", &lasting);
    let output = stagex_output(
        root,
        &["sign", "--unreleased", "--key", secret.to_str().unwrap()],
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("expires on"));
}
