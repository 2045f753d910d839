//! The trusted keyring: every OpenPGP certificate in `keys/` (one file per
//! maintainer, armored or binary; secret material is stripped on load).
//!
//! Owns: loading, and mapping any key handle (primary or subkey, fingerprint
//! or key id) to its certificate. It does not verify message signatures nor
//! judge a key's validity (see `validity`: that is a question of a moment);
//! it only checks each certificate's own self-signatures once, on load (see
//! `check_self_signatures`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::{Cert, Fingerprint, KeyHandle, KeyID};

/// The certificates we trust, indexed by every key they hold.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    certs: Vec<Cert>,
    /// Which file each certificate came from (for messages).
    sources: Vec<PathBuf>,
    by_fingerprint: BTreeMap<Fingerprint, usize>,
    by_keyid: BTreeMap<KeyID, usize>,
}

impl Keyring {
    /// The key files in `dir`, sorted by name (see `is_key_file_name`); a
    /// directory that does not exist holds none. Any other failure to list
    /// it is an error naming it.
    pub fn key_files(dir: &Path) -> Result<Vec<PathBuf>> {
        let listing = match std::fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the trusted keys directory {} (fix its permissions, or pass --keys DIR or set `keys` in stagex.toml)",
                        dir.display()
                    )
                })
            }
        };
        let mut files = Vec::new();
        for entry in listing {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            if is_key_file_name(name) && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Loads every key file in `dir` (see `key_files`).
    pub fn load_dir(dir: &Path) -> Result<Keyring> {
        if !dir.exists() {
            bail!(
                "the trusted keys directory {} does not exist (pass --keys DIR or set `keys` in stagex.toml)",
                dir.display()
            );
        }
        let mut keyring = Keyring::default();
        for path in Keyring::key_files(dir)? {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            keyring.add_bytes(&bytes, &path)?;
        }
        keyring.check_self_signatures();
        if keyring.certs.is_empty() {
            bail!(
                "no OpenPGP certificate in {}: export each trusted maintainer's public key there (gpg --export FPR > {}/NAME.asc)",
                dir.display(),
                dir.display()
            );
        }
        Ok(keyring)
    }

    /// Adds the certificates in one file's bytes (armored or binary).
    pub fn add_bytes(&mut self, bytes: &[u8], source: &Path) -> Result<()> {
        let mut any = false;
        for cert in CertParser::from_bytes(bytes)
            .with_context(|| format!("{}: not an OpenPGP certificate", source.display()))?
        {
            let cert = cert.with_context(|| {
                format!(
                    "{}: invalid OpenPGP certificate (re-export it with gpg --export)",
                    source.display()
                )
            })?;
            self.add_cert(cert.strip_secret_key_material(), source.to_path_buf());
            any = true;
        }
        if !any {
            bail!("{}: holds no OpenPGP certificate", source.display());
        }
        Ok(())
    }

    /// Adds one certificate (merging with an existing one of the same key).
    pub fn add_cert(&mut self, cert: Cert, source: PathBuf) {
        if let Some(&i) = self.by_fingerprint.get(&cert.fingerprint()) {
            if let Ok(merged) = self.certs[i].clone().merge_public(cert) {
                self.certs[i] = merged;
            }
            return;
        }
        let index = self.certs.len();
        for key in self.certs_keys(&cert) {
            self.by_keyid.insert(KeyID::from(&key), index);
            self.by_fingerprint.insert(key, index);
        }
        self.certs.push(cert);
        self.sources.push(source);
    }

    /// Checks every certificate's self-signatures now, one certificate per
    /// core (see `check_self_signatures`); `load_dir` does it.
    pub fn check_self_signatures(&self) {
        use rayon::prelude::*;
        self.certs.par_iter().for_each(check_self_signatures);
    }

    fn certs_keys(&self, cert: &Cert) -> Vec<Fingerprint> {
        cert.keys().map(|k| k.key().fingerprint()).collect()
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// The certificate holding the key `handle` (primary or subkey).
    pub fn cert_for(&self, handle: &KeyHandle) -> Option<&Cert> {
        let index = match handle {
            KeyHandle::Fingerprint(f) => self.by_fingerprint.get(f),
            KeyHandle::KeyID(k) => self.by_keyid.get(k),
        }?;
        Some(&self.certs[*index])
    }

    /// The primary fingerprint for any key handle in the keyring.
    pub fn primary_of(&self, handle: &KeyHandle) -> Option<Fingerprint> {
        self.cert_for(handle).map(|c| c.fingerprint())
    }

    /// The file a certificate was loaded from.
    pub fn source_of(&self, primary: &Fingerprint) -> Option<&Path> {
        let index = self.by_fingerprint.get(primary)?;
        Some(&self.sources[*index])
    }

    /// A short human label for a signer: its first user id, if any.
    pub fn label(&self, primary: &Fingerprint) -> Option<String> {
        let cert = self.cert_for(&KeyHandle::from(primary.clone()))?;
        cert.userids()
            .next()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
    }
}

/// Hidden files and documentation (`README*`, `*.md`, `*.txt`) are not
/// keys; every other file in `keys/` must parse as a certificate.
pub fn is_key_file_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.starts_with('.')
        || lower.starts_with("readme")
        || lower.ends_with(".md")
        || lower.ends_with(".txt"))
}

/// Checks every self-signature and self-revocation of `cert` now, once
/// (a cold RSA-4096 check is ~1 ms each in the pure-Rust backend).
/// sequoia checks them lazily and records the outcome inside the
/// certificate; each verification works on a clone, which keeps the
/// recorded outcomes. Checked here, they are not re-checked (re-hashed)
/// for every one of thousands of signatures.
fn check_self_signatures(cert: &Cert) {
    for key in cert.keys() {
        let bundle = key.bundle();
        bundle.self_signatures().for_each(drop);
        bundle.self_revocations().for_each(drop);
    }
    for userid in cert.userids() {
        userid.self_signatures().for_each(drop);
        userid.self_revocations().for_each(drop);
    }
    for attribute in cert.user_attributes() {
        attribute.self_signatures().for_each(drop);
        attribute.self_revocations().for_each(drop);
    }
}
