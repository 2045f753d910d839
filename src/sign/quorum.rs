//! The quorum rule: an image is released when at least `threshold` DISTINCT
//! trusted primary keys made valid signatures for it. Two files by one key
//! count once (StageX's file-counting gate did not). Pure.
use std::collections::BTreeSet;

use sequoia_openpgp::Fingerprint;
use thiserror::Error;

/// Counts distinct signers.
pub fn distinct_signers<'a>(
    signers: impl IntoIterator<Item = &'a Fingerprint>,
) -> BTreeSet<Fingerprint> {
    signers.into_iter().cloned().collect()
}

/// True when `signers` holds at least `threshold` distinct keys. A
/// threshold of 0 would pass unsigned images: it counts as 1 here (and
/// `check_threshold` rejects it where users set it).
pub fn quorum_met<'a>(
    signers: impl IntoIterator<Item = &'a Fingerprint>,
    threshold: usize,
) -> bool {
    distinct_signers(signers).len() >= threshold.max(1)
}

/// A configured threshold of 0, which would turn the release gate off.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "threshold 0 would accept images with no signature at all: set --threshold \
     (or `threshold` in stagex.toml) to at least 1"
)]
pub struct ZeroThreshold;

/// Validates a configured threshold: 0 would turn the release gate off.
pub fn check_threshold(threshold: usize) -> Result<usize, ZeroThreshold> {
    if threshold == 0 {
        return Err(ZeroThreshold);
    }
    Ok(threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_twice_counts_once() {
        let a = Fingerprint::from_hex("0123456789ABCDEF0123456789ABCDEF01234567").unwrap();
        let b = Fingerprint::from_hex("1123456789ABCDEF0123456789ABCDEF01234567").unwrap();
        assert!(!quorum_met([&a, &a], 2));
        assert!(quorum_met([&a, &b, &a], 2));
        assert!(
            !quorum_met([], 0),
            "threshold 0 must not pass unsigned images"
        );
        assert!(quorum_met([&a], 0));
        assert_eq!(check_threshold(0), Err(ZeroThreshold));
        assert_eq!(check_threshold(2).unwrap(), 2);
        assert!(!quorum_met([&b], 2));
    }
}
