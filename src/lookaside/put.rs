//! Owns: the WRITE side of the one store, shared by `stagex sigs sync`
//! and `stagex publish`: `put_missing` uploads only the blobs a store lacks
//! BY CONTENT, each at the next free contiguous `signature-N`, never
//! overwriting a file, and reads back what it wrote; `prune` removes what
//! is not to be kept and renumbers the rest; `existing` is the listing a
//! writer works from (a mirror must be clean before it is written to).
//! A directory goes through `file.rs`'s locked, atomic, never-replacing
//! `update` (and `remove_and_compact`); a WebDAV server through `webdav`,
//! which has no lock: there a writer that finds, while claiming a slot,
//! the very blob it was about to write (another writer's, stored after
//! its listing) writes nothing and reports it present, so concurrent
//! writers of the same signature store it once there too.
//!
//! It does not verify signatures (the caller decides what is worth
//! uploading) and draws no UI.
use serde::Serialize;

use super::error::StoreError;
use super::file::FileLookaside;
use super::http::HttpLookaside;
use super::{off_runtime, signature_dir, End, Fetched, Lookaside, SignatureFile};
use crate::oci::digest::Digest;

/// Where one blob ended up, or where it already was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placed {
    /// `signature-N`.
    pub name: String,
    /// Path or URL (without credentials).
    pub location: String,
}

/// How one planned write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Claimed {
    /// Written now (and read back) here.
    Wrote(Placed),
    /// Already there: another writer stored the same bytes after the
    /// listing the plan was made from (WebDAV has no lock).
    Found(Placed),
}

/// What `put_missing` did for one image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PutReport {
    /// Blobs written now, in the order given.
    pub uploaded: Vec<Placed>,
    /// Blobs the store already held (same bytes).
    pub present: Vec<Placed>,
    /// The image's files as listed before the upload, ONLY when nothing
    /// was uploaded (then it is still the store's state, and `prune` can
    /// reuse it). After an upload it is `None`: a write fills the first
    /// gap, which makes the files behind it visible, and those were not in
    /// the listing, so the caller must list again.
    #[serde(skip)]
    pub listing: Option<Vec<SignatureFile>>,
}

impl Lookaside {
    /// The image's files as a writer sees them: `signature-1..` until the
    /// first missing one. Over http anything but a signature or the
    /// closing 404 is an error (a mirror must be clean before it is
    /// written to).
    pub async fn existing(
        &self,
        repository_path: &str,
        digest: &Digest,
    ) -> Result<Vec<SignatureFile>, StoreError> {
        let listing = self.list(repository_path, digest, &[]).await;
        if let Lookaside::Http(_) = self {
            if let Some((url, size)) = listing.files.iter().find_map(|f| match f.content {
                Fetched::TooLarge(size) => Some((f.location.clone(), size)),
                _ => None,
            }) {
                return Err(StoreError::TooLarge { url, size });
            }
        }
        match listing.end {
            End::Missing | End::Limit => Ok(listing.files),
            End::SoftNotFound { location, .. } => Err(StoreError::SoftNotFound { url: location }),
            End::Failed { error, .. } => Err(error),
        }
    }

    /// Uploads every blob the store lacks (by content), contiguously.
    pub async fn put_missing(
        &self,
        repository_path: &str,
        digest: &Digest,
        blobs: &[Vec<u8>],
    ) -> Result<PutReport, StoreError> {
        match self {
            Lookaside::File(f) => {
                let (f, repo, digest) = (f.clone(), repository_path.to_string(), digest.clone());
                let blobs = blobs.to_vec();
                off_runtime(move || put_missing_file(&f, &repo, &digest, &blobs)).await
            }
            Lookaside::Http(h) => put_missing_http(self, h, repository_path, digest, blobs).await,
        }
    }

    /// Removes the image's signatures whose bytes are not in `keep` and
    /// renumbers the rest contiguously (in order, never replacing a file);
    /// returns what was removed. `existing` is the image's CURRENT listing
    /// (`existing`, or `PutReport::listing` of an upload that wrote
    /// nothing). An empty `keep` is refused: it would empty the image (a
    /// source that serves nothing valid must not empty a mirror). Only
    /// `stagex sigs sync --prune` calls it.
    pub async fn prune(
        &self,
        repository_path: &str,
        digest: &Digest,
        existing: &[SignatureFile],
        keep: &[&[u8]],
    ) -> Result<Vec<Placed>, StoreError> {
        if keep.is_empty() {
            let location = format!(
                "{}/{}",
                self.describe(),
                signature_dir(repository_path, digest)
            );
            return Err(StoreError::NothingToKeep { location });
        }
        let removed: Vec<Placed> = existing
            .iter()
            .filter(|f| !matches!(&f.content, Fetched::Blob(b) if keep.contains(&b.as_slice())))
            .map(|f| Placed {
                name: f.name.clone(),
                location: f.location.clone(),
            })
            .collect();
        if removed.is_empty() {
            return Ok(removed);
        }
        let names: Vec<String> = removed.iter().map(|p| p.name.clone()).collect();
        let visible: Vec<String> = existing.iter().map(|f| f.name.clone()).collect();
        match self {
            Lookaside::File(f) => {
                let (f, repo, digest) = (f.clone(), repository_path.to_string(), digest.clone());
                off_runtime(move || f.remove_and_compact(&repo, &digest, &visible, &names))
                    .await
                    .map_err(StoreError::Directory)?;
            }
            Lookaside::Http(h) => {
                h.remove_and_compact(repository_path, digest, &visible, &names)
                    .await?
            }
        }
        Ok(removed)
    }
}

/// What to do with one blob of `put_missing`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// The store already holds these bytes.
    Present(Placed),
    /// Upload it.
    Write,
    /// Same bytes as the earlier blob at this index.
    SameAs(usize),
}

/// Decides, by content, which blobs the store lacks. Pure.
fn plan(existing: &[SignatureFile], blobs: &[Vec<u8>]) -> Vec<Step> {
    blobs
        .iter()
        .enumerate()
        .map(|(i, blob)| {
            if let Some(found) = existing.iter().find_map(|f| match &f.content {
                Fetched::Blob(b) if b == blob => Some(Placed {
                    name: f.name.clone(),
                    location: f.location.clone(),
                }),
                _ => None,
            }) {
                Step::Present(found)
            } else if let Some(first) = blobs[..i].iter().position(|b| b == blob) {
                Step::SameAs(first)
            } else {
                Step::Write
            }
        })
        .collect()
}

/// Turns a plan, the listing it was made from and the places written
/// into the report.
/// A blob found already there (`Claimed::Found`) counts as present; the
/// listing is kept only when no write was even attempted (a found blob
/// means the store changed since the listing).
fn report_of(
    steps: Vec<Step>,
    existing: Vec<SignatureFile>,
    written: Vec<Option<Claimed>>,
) -> PutReport {
    let placed_of = |i: usize| match (&steps[i], &written[i]) {
        (Step::Present(p), _) => Some(p.clone()),
        (_, Some(Claimed::Wrote(p) | Claimed::Found(p))) => Some(p.clone()),
        (_, None) => None,
    };
    let nothing_written = written.iter().all(Option::is_none);
    let mut report = PutReport {
        listing: nothing_written.then_some(existing),
        ..PutReport::default()
    };
    for (i, step) in steps.iter().enumerate() {
        match (step, &written[i]) {
            (Step::Present(p), _) => report.present.push(p.clone()),
            (Step::SameAs(first), _) => report.present.extend(placed_of(*first)),
            (Step::Write, Some(Claimed::Wrote(p))) => report.uploaded.push(p.clone()),
            (Step::Write, Some(Claimed::Found(p))) => report.present.push(p.clone()),
            (Step::Write, None) => {}
        }
    }
    report
}

/// `put_missing` on a WebDAV server: the plan from the writer's listing,
/// each write claiming the next free slot; a blob another writer stored
/// meanwhile is found while claiming and reported present, not twice.
async fn put_missing_http(
    store: &Lookaside,
    http: &HttpLookaside,
    repository_path: &str,
    digest: &Digest,
    blobs: &[Vec<u8>],
) -> Result<PutReport, StoreError> {
    let existing = store.existing(repository_path, digest).await?;
    let steps = plan(&existing, blobs);
    let mut next = existing.len() as u32 + 1;
    let mut written = vec![None; blobs.len()];
    for (i, step) in steps.iter().enumerate() {
        if *step == Step::Write {
            let claimed = http
                .put_new(repository_path, digest, &blobs[i], next)
                .await?;
            let (Claimed::Wrote(placed) | Claimed::Found(placed)) = &claimed;
            next = slot_number(&placed.name).map_or(next, |n| n + 1);
            written[i] = Some(claimed);
        }
    }
    Ok(report_of(steps, existing, written))
}

/// N of `signature-N`.
fn slot_number(name: &str) -> Option<u32> {
    name.strip_prefix("signature-")?.parse().ok()
}

/// `put_missing` on a directory (blocking): the plan is made and carried
/// out under the image's lock (`FileLookaside::update`), so concurrent
/// writers of the same blobs add each once.
fn put_missing_file(
    store: &FileLookaside,
    repository_path: &str,
    digest: &Digest,
    blobs: &[Vec<u8>],
) -> Result<PutReport, StoreError> {
    let mut planned = None;
    let placed = store
        .update(repository_path, digest, |listing| {
            let steps = plan(&listing.files, blobs);
            let writes = steps
                .iter()
                .zip(blobs)
                .filter(|(step, _)| **step == Step::Write)
                .map(|(_, blob)| blob.clone())
                .collect();
            planned = Some((steps, listing.files.clone()));
            Ok(writes)
        })
        .map_err(StoreError::Directory)?;
    let (steps, existing) = planned.expect("update asks for the plan before writing");
    let mut placed = placed.into_iter();
    let mut written = vec![None; blobs.len()];
    for (i, step) in steps.iter().enumerate() {
        if *step == Step::Write {
            let (n, path) = placed.next().expect("one placement per write");
            written[i] = Some(Claimed::Wrote(read_back(n, &path, &blobs[i])?));
        }
    }
    Ok(report_of(steps, existing, written))
}

/// Reads a file just added back and compares it with what was written.
fn read_back(n: u32, path: &std::path::Path, blob: &[u8]) -> Result<Placed, StoreError> {
    let location = path.display().to_string();
    let back = std::fs::read(path)
        .map_err(|e| StoreError::Directory(anyhow::anyhow!("reading back {location}: {e}")))?;
    if back != blob {
        return Err(StoreError::ReadBackMismatch { location });
    }
    Ok(Placed {
        name: format!("signature-{n}"),
        location,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookaside::fetch::ReadPolicy;
    use crate::lookaside::location::Location;
    use crate::net::block_on;

    impl Lookaside {
        fn put_missing_now(
            &self,
            repository_path: &str,
            digest: &Digest,
            blobs: &[Vec<u8>],
        ) -> Result<PutReport, StoreError> {
            block_on(self.put_missing(repository_path, digest, blobs))
        }

        fn existing_now(
            &self,
            repository_path: &str,
            digest: &Digest,
        ) -> Result<Vec<SignatureFile>, StoreError> {
            block_on(self.existing(repository_path, digest))
        }
    }

    #[test]
    fn urls_lose_their_credentials_and_http_is_loopback_only() {
        let webdav = |text: &str| {
            HttpLookaside::writer(&Location::parse(text).unwrap(), ReadPolicy::default())
        };
        let w = webdav("https://u:p%40ss@127.0.0.1:8443/sigs/").unwrap();
        assert_eq!(w.base(), "https://127.0.0.1:8443/sigs");
        let c = w.auth().cloned().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p@ss"));
        assert!(webdav("http://127.0.0.1:1/x").is_ok());
        let err = webdav("http://u:pw@mirror.example/x")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("loopback") && !err.contains("pw@"), "{err}");
        assert!(Lookaside::parse_mirror("ftp://x").is_err());
        assert!(matches!(
            Lookaside::parse_mirror("/srv/m"),
            Ok(Lookaside::File(_))
        ));
    }

    #[test]
    fn a_location_read_from_keeps_its_credentials_out_of_its_printed_url() {
        let location = Location::parse("https://reader:s%3Acret@127.0.0.1:8443/sigs/").unwrap();
        let (c, _) = location.reader_credentials_and_source().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("reader", "s:cret"));
        let lookaside = HttpLookaside::reader(&location, ReadPolicy::default()).unwrap();
        assert_eq!(lookaside.base(), "https://127.0.0.1:8443/sigs");
        assert_eq!(lookaside.auth(), Some(&c));
    }

    #[test]
    fn file_mirror_uploads_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Lookaside::parse_mirror(dir.path().to_str().unwrap()).unwrap();
        let d = Digest::of_bytes(b"m");
        let first = mirror
            .put_missing_now("stagex/x", &d, &[b"a".to_vec(), b"b".to_vec()])
            .unwrap();
        assert_eq!(first.uploaded.len(), 2);
        assert_eq!(first.uploaded[1].name, "signature-2");
        let again = mirror
            .put_missing_now(
                "stagex/x",
                &d,
                &[b"b".to_vec(), b"c".to_vec(), b"c".to_vec()],
            )
            .unwrap();
        assert_eq!(again.present.len(), 2);
        assert_eq!(again.present[0].name, "signature-2");
        assert_eq!(again.uploaded.len(), 1);
        assert_eq!(again.uploaded[0].name, "signature-3");
        let listed = mirror.existing_now("stagex/x", &d).unwrap();
        let names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["signature-1", "signature-2", "signature-3"]);
        // Something was written: no listing to reuse.
        assert_eq!(again.listing, None);
        // Nothing to write: the listing made before is still current.
        let idle = mirror
            .put_missing_now("stagex/x", &d, &[b"a".to_vec()])
            .unwrap();
        assert_eq!(idle.listing.as_deref(), Some(&listed[..]));
        // `prune` refuses to remove everything.
        let err = block_on(mirror.prune("stagex/x", &d, &listed, &[])).unwrap_err();
        assert!(matches!(err, StoreError::NothingToKeep { .. }), "{err}");
        assert_eq!(mirror.existing_now("stagex/x", &d).unwrap(), listed);
        // `prune` from the listing: "a" goes, the rest moves down.
        let removed = block_on(mirror.prune("stagex/x", &d, &listed, &[b"b", b"c"])).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].name, "signature-1");
        let left: Vec<Fetched> = mirror
            .existing_now("stagex/x", &d)
            .unwrap()
            .into_iter()
            .map(|f| f.content)
            .collect();
        assert_eq!(
            left,
            [Fetched::Blob(b"b".to_vec()), Fetched::Blob(b"c".to_vec())]
        );
    }

    #[test]
    fn a_blob_found_while_claiming_is_present_and_drops_the_listing() {
        let at = |n: u32| Placed {
            name: format!("signature-{n}"),
            location: format!("http://127.0.0.1:1/i/signature-{n}"),
        };
        let blobs = [b"a".to_vec(), b"b".to_vec(), b"a".to_vec()];
        let steps = plan(&[], &blobs);
        assert_eq!(steps, [Step::Write, Step::Write, Step::SameAs(0)]);
        let written = vec![
            Some(Claimed::Found(at(1))),
            Some(Claimed::Wrote(at(2))),
            None,
        ];
        let report = report_of(steps, Vec::new(), written);
        assert_eq!(report.uploaded, [at(2)]);
        assert_eq!(report.present, [at(1), at(1)]);
        assert_eq!(report.listing, None);
        // Only found, nothing written: the store still changed since the listing.
        let report = report_of(
            vec![Step::Write],
            Vec::new(),
            vec![Some(Claimed::Found(at(1)))],
        );
        assert!(report.uploaded.is_empty());
        assert_eq!(report.present, [at(1)]);
        assert_eq!(report.listing, None);
    }

    #[test]
    fn an_upload_into_a_gap_leaves_no_listing_to_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Lookaside::parse_mirror(dir.path().to_str().unwrap()).unwrap();
        let d = Digest::of_bytes(b"gap");
        let Lookaside::File(store) = &mirror else {
            panic!("not a directory mirror");
        };
        let image = store.image_dir("stagex/x", &d);
        std::fs::create_dir_all(&image).unwrap();
        std::fs::write(image.join("signature-1"), b"a").unwrap();
        std::fs::write(image.join("signature-3"), b"c").unwrap();
        let put = mirror
            .put_missing_now("stagex/x", &d, &[b"b".to_vec()])
            .unwrap();
        assert_eq!(put.uploaded[0].name, "signature-2");
        // The upload filled the gap: signature-3 is visible now, and only
        // a new listing shows it.
        assert_eq!(put.listing, None);
        let names: Vec<String> = mirror
            .existing_now("stagex/x", &d)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["signature-1", "signature-2", "signature-3"]);
    }
}
