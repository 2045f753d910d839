//! The quorum rule: an image is released when at least `threshold` DISTINCT
//! trusted primary keys made valid signatures for it. Two files by one key
//! count once (StageX's file-counting gate did not). Pure.
use std::collections::BTreeSet;

use sequoia_openpgp::Fingerprint;

/// Counts distinct signers.
pub fn distinct_signers<'a>(
    signers: impl IntoIterator<Item = &'a Fingerprint>,
) -> BTreeSet<Fingerprint> {
    signers.into_iter().cloned().collect()
}

/// True when `signers` holds at least `threshold` distinct keys.
pub fn quorum_met<'a>(
    signers: impl IntoIterator<Item = &'a Fingerprint>,
    threshold: usize,
) -> bool {
    distinct_signers(signers).len() >= threshold
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
        assert!(quorum_met([], 0));
        assert!(!quorum_met([&b], 2));
    }
}
