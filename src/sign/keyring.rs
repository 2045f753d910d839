//! The trusted keyring: every OpenPGP certificate in `keys/` (one file per
//! maintainer, armored or binary; secret material is stripped on load).
//!
//! Owns: loading, mapping any key handle (primary or subkey, fingerprint or
//! key id) to its certificate, and judging a key's state NOW (expired,
//! revoked) under sequoia's StandardPolicy. It does not verify signatures.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sequoia_openpgp as openpgp;

use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::types::RevocationStatus;
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

/// A key's state at a moment, as far as counting signatures goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    Usable,
    Expired,
    Revoked,
    /// Rejected by the policy for another reason (weak algorithm, no binding).
    Invalid(String),
}

impl Keyring {
    /// Loads every key file in `dir` (sorted by name; see `is_key_file_name`).
    pub fn load_dir(dir: &Path) -> Result<Keyring> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| {
                format!(
                    "reading the trusted keys directory {} (pass --keys DIR or set `keys` in stagex.toml)",
                    dir.display()
                )
            })?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        entries.sort();
        let mut keyring = Keyring::default();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            if !is_key_file_name(name) || !path.is_file() {
                continue;
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            keyring.add_bytes(&bytes, &path)?;
        }
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

/// The state now of the certificate `cert` and of its key `key`.
pub fn key_state_now(cert: &Cert, key: &Fingerprint) -> KeyState {
    let policy = StandardPolicy::new();
    if let RevocationStatus::Revoked(_) = cert.revocation_status(&policy, None) {
        return KeyState::Revoked;
    }
    let valid = match cert.with_policy(&policy, None) {
        Ok(valid) => valid,
        Err(e) => return KeyState::Invalid(format!("{e:#}")),
    };
    if valid.alive().is_err() {
        return KeyState::Expired;
    }
    let Some(ka) = valid.keys().key_handle(key.clone()).next() else {
        return KeyState::Invalid(format!("key {key} is not bound to {}", cert.fingerprint()));
    };
    if let RevocationStatus::Revoked(_) = ka.revocation_status() {
        return KeyState::Revoked;
    }
    if ka.alive().is_err() {
        return KeyState::Expired;
    }
    KeyState::Usable
}
