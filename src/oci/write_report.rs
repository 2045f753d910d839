//! Owns: `WriteReport`, the one report every image sink returns (bytes
//! written, blobs uploaded / mounted / skipped). It sits in `oci`, below
//! both the image sinks and the registry push that fill it, so neither
//! depends on the other for it. Pure data.
use serde::Serialize;

use super::digest::Digest;

/// What writing an image did. File sinks count what they wrote into
/// `blobs_written`/`bytes_written`; a registry push counts uploads, mounts
/// and blobs the repository already had.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    /// The destination as the user wrote it (without `docker://` for a
    /// registry: `HOST/REPO:TAG`).
    pub reference: String,
    /// The image written (manifest or index).
    pub digest: Option<Digest>,
    /// Blobs (and for archives, the whole file) written locally.
    pub blobs_written: u64,
    pub bytes_written: u64,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub blobs_mounted: u64,
    pub bytes_mounted: u64,
    /// Blobs the destination already held (skipped).
    pub blobs_existing: u64,
    pub manifests_pushed: u64,
}
