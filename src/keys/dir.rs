//! Owns: reading and writing the trusted keys directory as files: every
//! key file with the certificates it holds (a file may hold several, which
//! `check` reports), and writing certificates, armored, atomically (temp
//! file in the same directory, fsync, rename): replacing a file (refresh)
//! or creating a new one that never replaces anything (add).
use std::path::{Path, PathBuf};

use sequoia_openpgp as openpgp;

use openpgp::cert::CertParser;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;

use crate::sign::keyring::Keyring;

/// A key file and what it holds.
pub struct KeyFileCerts {
    pub path: PathBuf,
    pub certs: Vec<Cert>,
}

/// Why the keys directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeysDirError {
    #[error("reading {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path}: not an OpenPGP certificate ({detail}); export it again with `gpg --export --armor FPR`")]
    NotACertificate { path: String, detail: String },
    #[error("writing {path}: {detail}")]
    Write { path: String, detail: String },
    #[error("{path} already exists: it was not replaced")]
    Exists { path: String },
}

/// Every key file of `dir` (the keyring's own file rule) with its certificates.
pub fn read_dir(dir: &Path) -> Result<Vec<KeyFileCerts>, KeysDirError> {
    let files = Keyring::key_files(dir).map_err(|e| KeysDirError::Read {
        path: dir.display().to_string(),
        detail: format!("{e:#}"),
    })?;
    files.into_iter().map(|path| read_file(&path)).collect()
}

/// The certificates of one file (armored or binary).
pub fn read_file(path: &Path) -> Result<KeyFileCerts, KeysDirError> {
    let bytes = std::fs::read(path).map_err(|e| KeysDirError::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let certs = parse(&bytes).map_err(|e| KeysDirError::NotACertificate {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(KeyFileCerts {
        path: path.to_path_buf(),
        certs,
    })
}

/// Why bytes are not a set of certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Not OpenPGP, or a certificate in it is broken (sequoia's words).
    #[error("{0}")]
    Broken(anyhow::Error),
    #[error("no certificate in it")]
    Empty,
}

/// Every certificate in `bytes`; an error when there is none or one is broken.
pub fn parse(bytes: &[u8]) -> Result<Vec<Cert>, CertsError> {
    let parser = CertParser::from_bytes(bytes).map_err(CertsError::Broken)?;
    let certs = parser
        .collect::<Result<Vec<Cert>, _>>()
        .map_err(CertsError::Broken)?;
    if certs.is_empty() {
        return Err(CertsError::Empty);
    }
    Ok(certs)
}

/// Writes `certs` (public parts only), armored, to `path`, atomically.
pub fn write_certs(path: &Path, certs: &[Cert]) -> Result<(), KeysDirError> {
    let armored = armor(path, certs)?;
    crate::oci::layout::write_atomic(path, &armored).map_err(|e| KeysDirError::Write {
        path: path.display().to_string(),
        detail: format!("{e:#}"),
    })
}

/// Writes `certs`, armored, to `path`, which must not exist: the rename
/// never replaces an entry (`Exists` then, nothing written).
pub fn write_new_certs(path: &Path, certs: &[Cert]) -> Result<(), KeysDirError> {
    let armored = armor(path, certs)?;
    crate::oci::layout::write_new(path, &armored).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeysDirError::Exists {
            path: path.display().to_string(),
        },
        _ => KeysDirError::Write {
            path: path.display().to_string(),
            detail: e.to_string(),
        },
    })
}

fn armor(path: &Path, certs: &[Cert]) -> Result<Vec<u8>, KeysDirError> {
    let mut armored = Vec::new();
    for cert in certs {
        armored.extend(cert.armored().to_vec().map_err(|e| KeysDirError::Write {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?);
    }
    Ok(armored)
}
