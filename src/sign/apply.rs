//! Signing targets into a file:// lookaside tree: skip a signer who already
//! has a valid signature for the digest, build the payload, sign, check the
//! blob we made, and add it as the next free `signature-N`.
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::image::ImageTarget;
use super::keyring::Keyring;
use super::payload::Payload;
use super::signer::PayloadSigner;
use super::verify::{verify_signature, Expected};
use crate::lookaside::file::FileLookaside;
use crate::lookaside::Fetched;

/// What happened to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignOutcome {
    Signed {
        file: PathBuf,
    },
    /// This key already has a valid signature there (`signature-N`).
    AlreadySigned {
        file: String,
    },
}

/// Signs one target (or skips it), writing into `store`.
pub fn sign_target(
    signer: &dyn PayloadSigner,
    store: &FileLookaside,
    target: &ImageTarget,
) -> Result<SignOutcome> {
    let mut own = Keyring::default();
    own.add_cert(signer.cert().clone(), PathBuf::from("signing key"));
    let expected = Expected {
        digest: target.digest.clone(),
        reference: target.reference.clone(),
    };
    let existing = store.read(&target.repository_path, &target.digest)?;
    for file in &existing.files {
        if let Fetched::Blob(blob) = &file.content {
            if verify_signature(&own, blob, &expected).is_ok() {
                return Ok(SignOutcome::AlreadySigned {
                    file: file.name.clone(),
                });
            }
        }
    }
    let payload = Payload {
        docker_reference: target.identity.clone(),
        manifest_digest: target.digest.clone(),
        creator: Some(concat!("stagex ", env!("CARGO_PKG_VERSION")).to_string()),
        timestamp: Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        ),
    };
    let blob = signer.sign(&payload.to_bytes())?;
    verify_signature(&own, &blob, &expected).map_err(|reason| {
        anyhow::anyhow!(
            "the new signature for {} does not verify ({reason}): nothing was written",
            target.digest
        )
    })?;
    let (_, file) = store
        .add(&target.repository_path, &target.digest, &blob)
        .with_context(|| format!("storing the signature of {}", target.digest))?;
    Ok(SignOutcome::Signed { file })
}
