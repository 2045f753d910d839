//! Owns: a release as a whole, above its images: what changed between two
//! releases of the tree (`notes`, read through `snapshot`) and who signed
//! what (`status`). The digests format itself still lives in
//! `build::digests`.
pub mod notes;
pub mod snapshot;
pub mod status;
