//! Owns: reading and writing the trusted keys directory as files: every
//! key file with the certificates it holds (a file may hold several, which
//! `check` reports), and writing one certificate, armored, atomically
//! (temp file in the same directory, fsync, rename).
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
    let failed = |detail: String| KeysDirError::Write {
        path: path.display().to_string(),
        detail,
    };
    let mut armored = Vec::new();
    for cert in certs {
        armored.extend(cert.armored().to_vec().map_err(|e| failed(e.to_string()))?);
    }
    crate::oci::layout::write_atomic(path, &armored).map_err(|e| failed(format!("{e:#}")))
}
