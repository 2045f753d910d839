//! Container signatures (containers-signature(5) "simple signing"):
//! payloads (and StageX's legacy form), references and identity rules, the
//! trusted keyring, key validity at signing time, signers (sequoia key
//! files and gpg/smartcards), verification with reasons, the distinct-signer
//! quorum and the one quorum gate (`gate`), the pre-verification pass (OpenSSL RSA and batched
//! Ed25519 arithmetic feeding sequoia's cache), the release digests gate, the containers-policy files, and the
//! sign/verify flows over a lookaside store.
pub mod apply;
pub mod cache;
pub mod check;
pub mod ed25519_batch;
pub mod gate;
pub mod identity;
pub mod image;
pub mod keyring;
pub mod message_shape;
pub mod payload;
pub mod policy;
pub mod preverify;
pub mod quorum;
pub use crate::oci::reference;
pub mod release;
pub mod rsa_fast;
pub mod signer;
pub mod status;
pub mod trust;
pub mod validity;
pub mod verify;
