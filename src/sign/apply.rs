//! Signing targets into a file:// lookaside tree, with StageX's `sign.sh`
//! rules: skip a signer whose primary key already signed the digest (any
//! payload form, any identity: one signature per maintainer), build the
//! payload (always the current containers/image format), sign, check the
//! blob we made, and add it as the next free `signature-N`. The check and
//! the write are one step (`FileLookaside::update` holds the image's lock):
//! concurrent signers with the same key leave one signature per image.
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::image::ImageTarget;
use super::keyring::Keyring;
use super::payload::Payload;
use super::signer::PayloadSigner;
use super::verify::{verify_blob, verify_signature, Expected, VerifyOptions};
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
    let mut already = None;
    let placed = store
        .update(&target.repository_path, &target.digest, |existing| {
            already = existing.files.iter().find_map(|file| match &file.content {
                Fetched::Blob(blob) if signed_by_own_key(&own, blob, target) => {
                    Some(file.name.clone())
                }
                _ => None,
            });
            match already {
                Some(_) => Ok(Vec::new()),
                None => Ok(vec![new_signature(signer, &own, target, &expected)?]),
            }
        })
        .with_context(|| format!("storing the signature of {}", target.digest))?;
    match (already, placed.into_iter().next()) {
        (Some(file), _) => Ok(SignOutcome::AlreadySigned { file }),
        (None, Some((_, file))) => Ok(SignOutcome::Signed { file }),
        (None, None) => Err(anyhow::anyhow!(
            "the signature of {} was not stored (the store added nothing)",
            target.digest
        )),
    }
}

/// Signs a fresh payload for `target` and checks the blob before it is
/// written.
fn new_signature(
    signer: &dyn PayloadSigner,
    own: &Keyring,
    target: &ImageTarget,
    expected: &Expected,
) -> Result<Vec<u8>> {
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
    verify_signature(own, &blob, expected, &VerifyOptions::default()).map_err(|reason| {
        anyhow::anyhow!(
            "the new signature for {} does not verify ({reason}): nothing was written",
            target.digest
        )
    })?;
    Ok(blob)
}

/// True when `blob` is a cryptographically good signature by the key in
/// `own` over this digest, whatever its payload form or identity.
fn signed_by_own_key(own: &Keyring, blob: &[u8], target: &ImageTarget) -> bool {
    let Ok(verified) = verify_blob(own, blob) else {
        return false;
    };
    Payload::parse_any(&verified.payload).is_ok_and(|(p, _)| p.manifest_digest == target.digest)
}
