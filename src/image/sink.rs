//! Owns: `ImageSink`, where images go; each returns a
//! `crate::oci::WriteReport`. The sinks themselves (`oci:`, `oci-archive:`,
//! `docker-archive:`, `docker://`) live in `image::output`, beside the
//! destination syntax.

use crate::oci::descriptor::{Descriptor, Platform};
use crate::oci::layout::Layout;
use crate::oci::WriteReport;
use crate::progress::Progress;

/// A place an image (held in a local layout) can be written to.
pub trait ImageSink {
    /// Writes the image `root` (a manifest or index whose blobs are all in
    /// `from`). `platform` picks the manifest for single-image formats;
    /// `progress` hears about uploads (registry sinks).
    fn write(
        &self,
        from: &Layout,
        root: &Descriptor,
        platform: Option<&Platform>,
        progress: &dyn Progress,
    ) -> anyhow::Result<WriteReport>;
}
