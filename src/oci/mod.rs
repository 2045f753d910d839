//! OCI data model and its on-disk forms: digests, descriptors, manifests,
//! indexes, configs (pure), plus image layouts and archives (I/O).
pub mod blob_writer;
pub mod config;
pub mod descriptor;
pub mod digest;
pub mod image;
pub mod json;
pub mod layout;
pub mod manifest;
pub mod media_type;
pub mod reference;
pub mod write_report;

pub use config::{ImageConfig, RunConfig};
pub use descriptor::{Descriptor, Platform};
pub use digest::Digest;
pub use json::JsonBlob;
pub use manifest::{AnyManifest, ImageIndex, ImageManifest};
pub use write_report::WriteReport;
