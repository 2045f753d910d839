//! Owns: reading a containers-style `certs.d` directory, the way podman,
//! skopeo and docker users keep private CAs per registry: one directory per
//! `host[:port]`, each `*.crt` file in it a PEM bundle of CAs trusted for
//! that host. Which directory: `$STAGEX_CERTS_DIR`, else `certs_dir` in
//! stagex.toml (`set_setting`), else the first of `/etc/containers/certs.d`
//! and `/etc/docker/certs.d` that exists.
//!
//! Client certificates (`*.cert` + `*.key` pairs) are not read: the token
//! exchange goes through oci-client, which cannot present one.
//!
//! Must not: build clients or talk to the network (`config` does).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::config::CaBundle;
use super::error::ConfigError;

/// `$STAGEX_CERTS_DIR`: a certs.d directory (`<dir>/<host[:port]>/*.crt`).
pub const CERTS_DIR_ENV: &str = "STAGEX_CERTS_DIR";

/// Where containers tools look when nothing is configured.
const SYSTEM_DIRS: &[&str] = &["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// The CAs of a certs.d directory, per host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertsDir {
    pub path: PathBuf,
    hosts: BTreeMap<String, Vec<CaBundle>>,
}

impl CertsDir {
    /// Reads every `<path>/<host>/*.crt` (sorted); a directory that does
    /// not exist or cannot be read is an error naming it.
    pub fn load(path: &Path) -> Result<CertsDir, ConfigError> {
        let error = |at: &Path, e: std::io::Error| ConfigError::CertsDir {
            path: at.display().to_string(),
            reason: e.to_string(),
        };
        let mut hosts = BTreeMap::new();
        for entry in std::fs::read_dir(path).map_err(|e| error(path, e))? {
            let dir = entry.map_err(|e| error(path, e))?.path();
            if !dir.is_dir() {
                continue;
            }
            let host = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| error(&dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            let mut cas = Vec::new();
            for file in files {
                let pem = std::fs::read(&file).map_err(|e| error(&file, e))?;
                cas.push(CaBundle {
                    path: file.display().to_string(),
                    pem,
                });
            }
            if !cas.is_empty() {
                hosts.insert(host, cas);
            }
        }
        Ok(CertsDir {
            path: path.to_path_buf(),
            hosts,
        })
    }

    /// The CAs trusted for `host` (`host[:port]`, as written in references).
    pub fn for_host(&self, host: &str) -> &[CaBundle] {
        self.hosts.get(host).map_or(&[], Vec::as_slice)
    }

    /// Every CA of every host.
    pub fn all(&self) -> impl Iterator<Item = &CaBundle> {
        self.hosts.values().flatten()
    }
}

static SETTING: OnceLock<PathBuf> = OnceLock::new();

/// The directory stagex.toml names (`certs_dir`), used when
/// `$STAGEX_CERTS_DIR` is not set. Call before the first network use; a
/// second call is ignored.
pub fn set_setting(path: PathBuf) {
    let _ = SETTING.set(path);
}

/// Which certs.d directory applies (see the module header), if any.
pub fn chosen() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CERTS_DIR_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = SETTING.get() {
        return Some(path.clone());
    }
    SYSTEM_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cas_per_host_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("127.0.0.1:5000");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("ca.crt"), b"PEM A").unwrap();
        std::fs::write(host.join("b.crt"), b"PEM B").unwrap();
        std::fs::write(host.join("client.cert"), b"not a CA").unwrap();
        std::fs::write(host.join("client.key"), b"not a CA").unwrap();
        std::fs::create_dir_all(dir.path().join("empty.example")).unwrap();
        std::fs::write(dir.path().join("stray.crt"), b"top level").unwrap();
        let certs = CertsDir::load(dir.path()).unwrap();
        let pems: Vec<&[u8]> = certs
            .for_host("127.0.0.1:5000")
            .iter()
            .map(|c| c.pem.as_slice())
            .collect();
        assert_eq!(pems, vec![b"PEM B".as_slice(), b"PEM A".as_slice()]);
        assert!(certs.for_host("127.0.0.1").is_empty());
        assert!(certs.for_host("empty.example").is_empty());
        assert_eq!(certs.all().count(), 2);
        let missing = CertsDir::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
