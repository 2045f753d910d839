//! Owns: `ImageSink`, where images go, and `WriteReport`, the one report
//! every sink returns (bytes written, blobs uploaded / mounted / skipped).
//! The sinks themselves (`oci:`, `oci-archive:`, `docker-archive:`,
//! `docker://`) live in `crate::output`, beside the destination syntax.
use serde::Serialize;

use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;

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

/// A place an image (held in a local layout) can be written to.
pub trait ImageSink {
    /// Writes the image `root` (a manifest or index whose blobs are all in
    /// `from`). `platform` picks the manifest for single-image formats.
    fn write(
        &self,
        from: &Layout,
        root: &Descriptor,
        platform: Option<&Platform>,
    ) -> anyhow::Result<WriteReport>;
}
