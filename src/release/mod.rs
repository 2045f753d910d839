//! Owns: a release as a whole, above its images: the digests files that
//! list it (`digests`: read, write, check), what changed between two
//! releases of the tree (`notes`, read through `snapshot`). Who signed
//! what is `sign::status` (it reads sign's reports; sign reads digests).
pub mod digests;
pub mod notes;
pub mod snapshot;
