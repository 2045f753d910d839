//! Owns: keeping sequoia's signature-verification cache between runs, so
//! re-verifying a release skips the public-key arithmetic of signatures
//! already checked. sequoia keys each entry by a SHA-512 over the
//! signature's MPIs, the digest of the exact data it covers and the key:
//! the cache only says "these signature bytes verify over this content
//! with this key". Key validity at signing time, payload, digest, identity
//! and quorum are judged on every run.
//!
//! The pre-verification pass (`preverify`) adds the entries of the
//! signatures it verified through `add_verified`; they are kept as any
//! other entry sequoia used.
//!
//! Where: `$STAGEX_SIGNATURE_CACHE` (a file path; `off` disables it), else
//! `$XDG_CACHE_HOME/stagex/signature-cache`, else
//! `~/.cache/stagex/signature-cache`. Trust: whoever can write that file
//! could make forged signatures pass, as whoever can replace the binary: it
//! lives in the user's own cache directory, written 0600, atomically.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use sequoia_openpgp::packet::signature::cache::SignatureVerificationCache;

/// Entries kept at most (32 MiB of file).
const MAX_ENTRIES: usize = 1 << 20;
/// One entry as sequoia dumps it (SHA-512/256); `restore` skips entries of
/// another size, so a future format only costs a cold run.
const ENTRY_BYTES: usize = 32;

/// The entries loaded from the file (sorted): the pre-verification pass skips those.
static LOADED: OnceLock<Vec<[u8; ENTRY_BYTES]>> = OnceLock::new();
/// Entries added by the pre-verification pass in this run.
static ADDED: AtomicUsize = AtomicUsize::new(0);

/// The cache file to use, or `None` when disabled.
pub fn default_path() -> Option<PathBuf> {
    crate::store::cache_file("STAGEX_SIGNATURE_CACHE", "signature-cache")
}

/// Loads `path` into sequoia's cache (a missing file is an empty cache)
/// and waits until it is in place.
pub fn load(path: &Path) -> Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut entries: Vec<[u8; ENTRY_BYTES]> = bytes
        .chunks_exact(ENTRY_BYTES)
        .filter_map(|c| c.try_into().ok())
        .collect();
    entries.sort_unstable();
    restore(entries.iter().map(|e| e.to_vec()).collect())
        .with_context(|| format!("loading the signature cache {}", path.display()))?;
    let _ = LOADED.set(entries);
    Ok(())
}

/// Whether `entry` was loaded from the cache file.
pub fn is_loaded(entry: &[u8; ENTRY_BYTES]) -> bool {
    LOADED
        .get()
        .is_some_and(|loaded| loaded.binary_search(entry).is_ok())
}

/// Hands entries of signatures verified outside sequoia (`preverify`) to
/// sequoia's cache and waits until they are in place.
pub fn add_verified(entries: Vec<[u8; ENTRY_BYTES]>) -> Result<()> {
    let count = entries.len();
    restore(entries.iter().map(|e| e.to_vec()).collect())?;
    ADDED.fetch_add(count, Ordering::Relaxed);
    Ok(())
}

/// `SignatureVerificationCache::restore`, waited for.
fn restore(entries: Vec<Vec<u8>>) -> Result<()> {
    let (done, wait) = mpsc::channel();
    SignatureVerificationCache::restore(entries.into_iter(), move || {
        let _ = done.send(());
    });
    wait.recv_timeout(Duration::from_secs(30))
        .context("waiting for sequoia's signature cache to take the entries")
}

/// Writes the entries used or added by this run back to `path`, if any
/// were added (by sequoia or by the pre-verification pass).
pub fn save(path: &Path) -> Result<()> {
    if SignatureVerificationCache::insertions() == 0 && ADDED.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let mut bytes = Vec::new();
    for entry in SignatureVerificationCache::dump()
        .into_iter()
        .filter(|e| e.inserted() || e.accessed())
        .take(MAX_ENTRIES)
    {
        bytes.extend_from_slice(entry.value());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut file, &bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
