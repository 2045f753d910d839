//! Container signatures (containers-signature(5) "simple signing"):
//! payloads, references, the trusted keyring, signers (sequoia key files
//! and gpg/smartcards), verification with reasons, the distinct-signer
//! quorum, and the sign/verify flows over a lookaside store.
pub mod apply;
pub mod check;
pub mod image;
pub mod keyring;
pub mod payload;
pub mod quorum;
pub use crate::oci::reference;
pub mod signer;
pub mod verify;
