//! Keeping signature mirrors complete, verified and byte-identical
//! (`stagex sigs sync`) and finding what is wrong with a lookaside before
//! users hit it (`stagex sigs audit`).
//!
//! Owns: the image set (`images`), the verdict on one blob (`judge`), the
//! no-change state (`state`), and the two flows (`sync`, `audit`) and the
//! image loop they share (`each`): thin flows on the one signature store
//! (`lookaside::Lookaside`: its listing, `put_missing`, `prune`).
//! Verification goes through `sign::verify`. Returns data and progress
//! events only: the CLI draws.
pub mod audit;
pub mod each;
pub mod images;
pub mod judge;
pub mod registry;
pub mod state;
pub mod sync;

pub use audit::{audit, AuditOptions, AuditReport, Finding};
pub use sync::{sync, SyncOptions, SyncReport};
