//! stagex: build, compose, sign and publish StageX OCI images.
//!
//! The library holds every piece of the pipeline; `main.rs` only parses the
//! command line and dispatches to `cli`.
pub mod build;
pub mod child;
pub mod cli;
pub mod diff;
pub mod file_lock;
pub mod image;
pub mod keys;
pub mod layer;
pub mod lookaside;
pub mod net;
pub mod oci;
pub mod package;
pub mod pallet;
pub mod parallel;
pub mod progress;
pub mod publish;
pub mod registry;
pub mod release;
pub mod settings;
pub mod sign;
pub mod sigs;
pub mod store;
pub mod unknown_fields;
