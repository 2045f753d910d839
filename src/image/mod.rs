//! Owns: the one image model and the edges images cross, after
//! go-containerregistry's `pkg/v1` (`Image`), `remote`/`layout`/`tarball`
//! (sources and sinks). Composition and building never know where bytes
//! live: they ask an `ImageSource`, get an `Image`, and hand the result to
//! an `ImageSink`.
//!
//! - `model`: `Image`, read once with every check;
//! - `source`: `ImageSource` (registry, OCI layout, `out/`, the store);
//! - `sink`: `ImageSink` and its one `WriteReport` (the sinks themselves
//!   are the destinations in `output`);
//! - `out_dir`: `OutDir`, the only reader of `out/`;
//! - `integrity`: every blob of an `out/` image checked against its name
//!   before a command vouches for it, with `verdicts`, the cache that
//!   spares a second command the hashing;
//! - `checked`: what an integrity check walked (every index and manifest
//!   as hashed), the one source sign, digests and publish resolve from;
//! - `from_dir`: a one-layer image from a directory (`stagex image`).
pub mod checked;
pub mod from_dir;
pub mod integrity;
pub mod model;
pub mod out_dir;
pub mod output;
pub mod sink;
pub mod source;
pub mod verdicts;

pub use checked::{CheckedError, CheckedImage, CheckedImages};
pub use integrity::{IntegrityError, IntegrityReport};
pub use model::{Image, ImageError};
pub use out_dir::{OutDir, OutManifest};
pub use sink::ImageSink;
pub use source::{fetch_image, platform_manifest, DirSource, ImageSource, RegistrySource};
