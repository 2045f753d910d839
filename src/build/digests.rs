//! `digests/<stage>.txt` exactly as StageX writes it: one line per built
//! package, `<manifest sha256 hex> <stage>-<name>`, sorted by name, where
//! the digest is the per-platform image manifest's. Formatting is pure;
//! scanning reads `out/`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::image::OutDir;
use crate::oci::layout::write_atomic;
use crate::oci::{Digest, Platform};

/// `<stage>` -> sorted `(<stage>-<name>, digest)`.
pub type DigestsByStage = BTreeMap<String, Vec<(String, Digest)>>;

/// The text of one stage's file.
pub fn format_stage(entries: &[(String, Digest)]) -> String {
    let mut sorted: Vec<&(String, Digest)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(name, digest)| format!("{} {name}\n", digest.hex()))
        .collect()
}

/// Every built package under `out_root` (`OutDir::images`, ids
/// `<stage>-<name>`), grouped by stage.
pub fn scan(out_root: &Path, platform: &Platform) -> Result<DigestsByStage> {
    let out = OutDir::open(out_root);
    let mut by_stage: DigestsByStage = BTreeMap::new();
    for id in out.images()? {
        let Some((stage, _)) = id.split_once('-') else {
            continue;
        };
        let manifest = out
            .manifest_digest(&id, platform)
            .with_context(|| format!("reading {}", out.path(&id).display()))?;
        by_stage
            .entry(stage.to_string())
            .or_default()
            .push((id.clone(), manifest.digest));
    }
    for entries in by_stage.values_mut() {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(by_stage)
}

/// Writes `digests_dir/<stage>.txt` for every stage found; returns the files.
pub fn write(digests: &DigestsByStage, digests_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(digests_dir)
        .with_context(|| format!("creating {}", digests_dir.display()))?;
    let mut written = Vec::new();
    for (stage, entries) in digests {
        let path = digests_dir.join(format!("{stage}.txt"));
        write_atomic(&path, format_stage(entries).as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_hex_space_name_sorted_by_name() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let text = format_stage(&[
            ("core-zlib".into(), a.clone()),
            ("core-busybox".into(), b.clone()),
        ]);
        assert_eq!(
            text,
            format!("{} core-busybox\n{} core-zlib\n", b.hex(), a.hex())
        );
    }
}
