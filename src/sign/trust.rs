//! Owns: `Trust`, THE one description of whose signatures count: the
//! trusted keyring (and the directory it came from, for messages), how many
//! distinct signers an image needs, where signatures are read, and the
//! verification options (legacy payloads, identity rule). verify, the
//! pallet input gate, release status and publish's quorum gate all take it.
use std::path::PathBuf;

use crate::lookaside::Lookaside;
use crate::sign::keyring::Keyring;
use crate::sign::verify::VerifyOptions;

/// Which maintainers are trusted, how many must sign, where signatures are.
pub struct Trust {
    /// The directory the keyring came from (for messages).
    pub keys: PathBuf,
    pub keyring: Keyring,
    /// At least 1 (`quorum::check_threshold`).
    pub threshold: usize,
    pub lookaside: Lookaside,
    /// Legacy payloads and the identity rule.
    pub options: VerifyOptions,
}
