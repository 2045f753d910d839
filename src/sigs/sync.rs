//! Owns: `stagex sigs sync` as a library call: for each image (bounded
//! concurrency across images; each image's files in order, as the
//! stop-at-404 rule needs), read the source's signatures, judge each one
//! against the trusted keys, and make the destination hold every valid one
//! exactly once (by content, contiguous, never overwriting; `--prune`
//! removes what the source does not validly serve). Invalid, unknown-key,
//! legacy (unless allowed), oversized signatures are never copied: they are
//! reported with their reason.
//!
//! A run with nothing new is cheap: with a state file, the source is asked
//! conditionally (ETag / Last-Modified) and an image whose files all answer
//! 304 (or, on a directory, hash the same) is not looked at on the
//! destination again.
//!
//! Returns data (`SyncReport`) and reports progress as `progress` events;
//! no UI here.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::each::for_each;
use super::images::{key, label};
use super::judge::{judge, Code, Verdict};
use super::state::{trust_key, FileState, ImageState, State};
use crate::lookaside::fetch::{ReadPolicy, Validators};
use crate::lookaside::location::Location;
use crate::lookaside::{End, Fetched, Lookaside, SignatureFile, StoreError};
use crate::oci::digest::Digest;
use crate::progress::Progress;
use crate::sign::image::ImageTarget;
use crate::sign::keyring::Keyring;
use crate::sign::verify::Expected;

/// How a sync runs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Images worked on at once.
    pub concurrency: usize,
    /// Copy legacy-format signatures (still checked: key, digest, repository).
    pub allow_legacy: bool,
    /// Remove destination signatures the source does not validly serve.
    pub prune: bool,
    /// Where the no-change state lives (`None`: no state, always a full run).
    pub state_file: Option<PathBuf>,
    /// Timeouts and retries of every request.
    pub policy: ReadPolicy,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            concurrency: 32,
            allow_legacy: false,
            prune: false,
            state_file: None,
            policy: ReadPolicy::default(),
        }
    }
}

/// The outcome of a sync.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    pub from: String,
    pub to: String,
    pub images: usize,
    /// Images skipped by the no-change fast path.
    pub unchanged: usize,
    /// Signatures written to the destination now.
    pub uploaded: Vec<FileRef>,
    /// Valid signatures the destination already held.
    pub present: usize,
    /// Destination files removed by `--prune`.
    pub pruned: Vec<FileRef>,
    /// Source files not copied, with the reason.
    pub rejected: Vec<Rejected>,
    /// Images that could not be read or written completely.
    pub errors: Vec<ImageFailure>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileRef {
    pub image: String,
    pub file: String,
    pub location: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Rejected {
    pub image: String,
    pub file: String,
    pub location: String,
    pub code: Code,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ImageFailure {
    pub image: String,
    pub message: String,
}

/// What sync shares between image tasks.
struct Context {
    source: Lookaside,
    dest: Lookaside,
    keyring: Keyring,
    allow_legacy: bool,
    prune: bool,
}

/// One image's result.
#[derive(Default)]
struct ImageOutcome {
    unchanged: bool,
    uploaded: Vec<FileRef>,
    present: usize,
    pruned: Vec<FileRef>,
    rejected: Vec<Rejected>,
    errors: Vec<String>,
    state: ImageState,
}

/// Syncs the signatures of `images` from the source `from` (parsed once by
/// the caller, which may also walk a directory source for its images) to
/// the mirror `to`.
pub fn sync(
    from: &Location,
    to: &str,
    images: &[ImageTarget],
    keyring: &Keyring,
    options: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let source = Lookaside::open(from, options.policy)?;
    let dest = Location::parse(to)
        .map_err(StoreError::from)
        .and_then(|to| Lookaside::open_mirror(&to, options.policy))
        .with_context(|| format!("destination {to}"))?;
    // The whole certificates, not only fingerprints: a revocation or a
    // new expiry date changes verdicts too.
    let certs: Vec<String> = keyring
        .certs()
        .iter()
        .map(|c| {
            use sequoia_openpgp::serialize::SerializeInto;
            Digest::of_bytes(&c.to_vec().unwrap_or_default())
                .hex()
                .to_string()
        })
        .collect();
    let trust = trust_key(&certs, &format!("legacy={}", options.allow_legacy));
    let mut state = match &options.state_file {
        Some(path) => State::load(path, &trust),
        None => State::empty(&trust),
    };
    let context = Arc::new(Context {
        source,
        dest,
        keyring: keyring.clone(),
        allow_legacy: options.allow_legacy,
        prune: options.prune,
    });
    let total = images.len();
    let outcomes = for_each(
        total,
        options.concurrency,
        progress,
        |i| {
            let image = &images[i];
            // A state made for another identity says nothing of this one.
            let prior = state
                .images
                .get(&key(image))
                .filter(|p| p.reference == image.reference.to_string())
                .cloned();
            sync_image(context.clone(), image.clone(), prior)
        },
        |_, reason| ImageOutcome {
            errors: vec![format!("internal error: {reason}")],
            ..ImageOutcome::default()
        },
    );
    let mut report = SyncReport {
        from: context.source.describe(),
        to: context.dest.describe(),
        images: total,
        ..SyncReport::default()
    };
    for (image, outcome) in images.iter().zip(outcomes) {
        report.unchanged += usize::from(outcome.unchanged);
        report.uploaded.extend(outcome.uploaded);
        report.present += outcome.present;
        report.pruned.extend(outcome.pruned);
        report.rejected.extend(outcome.rejected);
        report
            .errors
            .extend(outcome.errors.into_iter().map(|message| ImageFailure {
                image: label(image),
                message,
            }));
        let mut image_state = outcome.state;
        image_state.reference = image.reference.to_string();
        state.images.insert(key(image), image_state);
    }
    if let Some(path) = &options.state_file {
        state
            .save(path)
            .with_context(|| format!("saving the sync state {}", path.display()))?;
    }
    Ok(report)
}

/// One source file with what we know of it.
struct Known {
    entry: SignatureFile,
    sha256: String,
    /// `None` when only the state knows them (a 304).
    bytes: Option<Vec<u8>>,
    verdict: Verdict,
}

async fn sync_image(
    context: Arc<Context>,
    image: ImageTarget,
    prior: Option<ImageState>,
) -> ImageOutcome {
    let label = label(&image);
    let prior = prior.unwrap_or_default();
    // Conditional requests only when the last run completed this image:
    // otherwise every byte is needed anyway.
    let known: Vec<Validators> = if prior.synced {
        prior.files.iter().map(|f| f.validators.clone()).collect()
    } else {
        Vec::new()
    };
    let listing = context
        .source
        .list(&image.repository_path, &image.digest, &known)
        .await;
    let mut outcome = ImageOutcome::default();
    let expected = Expected {
        digest: image.digest.clone(),
        reference: image.reference.clone(),
    };
    let mut files: Vec<Known> = Vec::new();
    for (i, entry) in listing.files.into_iter().enumerate() {
        match known_file(&context, entry, prior.files.get(i), &expected) {
            Ok(file) => files.push(file),
            Err(error) => outcome.errors.push(error.to_string()),
        }
    }
    let mut clean = outcome.errors.is_empty();
    match &listing.end {
        End::Missing | End::Limit => {}
        End::SoftNotFound { name, location } => outcome.rejected.push(Rejected {
            image: label.clone(),
            file: name.clone(),
            location: location.clone(),
            code: Code::SoftNotFound,
            reason: crate::sign::verify::Rejection::SoftNotFound.to_string(),
        }),
        End::Failed { error, .. } => {
            clean = false;
            outcome.errors.push(error.to_string());
        }
    }
    let same_as_before = files.len() == prior.files.len()
        && files
            .iter()
            .zip(&prior.files)
            .all(|(f, p)| f.sha256 == p.sha256);
    if clean && prior.synced && same_as_before && listing.end.is_clean() {
        outcome.unchanged = true;
        outcome.present = files.iter().filter(|f| f.verdict.is_valid()).count();
        outcome.state = state_of(&files, true);
        report_rejected(&files, &label, &mut outcome);
        return outcome;
    }
    let written = put_valid(&context, &image, &mut files, &expected, &mut outcome).await;
    // After `put_valid`: a re-fetched 304 may have been judged again.
    report_rejected(&files, &label, &mut outcome);
    let synced = clean && matches!(written, Put::Done { .. }) && listing.end.is_clean();
    // What to keep is known only now: `put_valid` re-fetches the files
    // that answered 304, and one may have changed into a rejected one.
    let keep: Vec<&[u8]> = files
        .iter()
        .filter(|f| f.verdict.is_valid())
        .filter_map(|f| f.bytes.as_deref())
        .collect();
    // A source that serves nothing valid for the image (a wrong base URL
    // answers 404 everywhere) must not empty a mirror: `Lookaside::prune`
    // refuses that (`NothingToKeep`), and `prune` reports nothing pruned.
    if let Put::Done { listing } = written {
        if synced && context.prune {
            prune(&context, &image, &keep, listing, &mut outcome).await;
        }
    }
    outcome.state = state_of(&files, synced && outcome.errors.is_empty());
    outcome
}

/// Reports every rejected file with its reason.
fn report_rejected(files: &[Known], label: &str, outcome: &mut ImageOutcome) {
    for file in files {
        if let Verdict::Rejected { code, reason } = &file.verdict {
            outcome.rejected.push(Rejected {
                image: label.to_string(),
                file: file.entry.name.clone(),
                location: file.entry.location.clone(),
                code: *code,
                reason: reason.clone(),
            });
        }
    }
}

/// Why a listed file could not be judged (recorded in the outcome).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A 304 answered a request sent without validators.
    #[error("{url}: 304 Not Modified to a request that was not conditional")]
    UnconditionalNotModified { url: String },
}

/// Hashes and judges one listed file (reusing the state's verdict for the
/// same bytes); a 304 takes hash and verdict from the state.
fn known_file(
    context: &Context,
    entry: SignatureFile,
    prior: Option<&FileState>,
    expected: &Expected,
) -> Result<Known, FileError> {
    match &entry.content {
        Fetched::NotModified => {
            let Some(prior) = prior else {
                return Err(FileError::UnconditionalNotModified {
                    url: entry.location.to_string(),
                });
            };
            Ok(Known {
                sha256: prior.sha256.clone(),
                bytes: None,
                verdict: prior.verdict.clone(),
                entry,
            })
        }
        Fetched::SoftNotFound => Ok(Known {
            sha256: "soft-404".into(),
            bytes: None,
            verdict: Verdict::rejected(&crate::sign::verify::Rejection::SoftNotFound),
            entry,
        }),
        Fetched::TooLarge(n) => Ok(Known {
            sha256: format!("too-large:{n}"),
            bytes: None,
            verdict: Verdict::rejected(&crate::sign::verify::Rejection::TooLarge(*n as usize)),
            entry,
        }),
        Fetched::Blob(body) => {
            let sha256 = Digest::of_bytes(body).hex().to_string();
            let verdict = match prior.filter(|p| p.sha256 == sha256) {
                Some(p) => p.verdict.clone(),
                None => judge(&context.keyring, body, expected, context.allow_legacy),
            };
            Ok(Known {
                sha256,
                bytes: Some(body.clone()),
                verdict,
                entry,
            })
        }
    }
}

/// How `put_valid` ended.
enum Put {
    /// Something failed (recorded in the outcome).
    Failed,
    /// Every valid file is on the destination; `listing` is the
    /// destination's listing when it is still current
    /// (`PutReport::listing`: the upload wrote nothing), for `prune` not
    /// to list again.
    Done { listing: Option<Vec<SignatureFile>> },
}

/// Puts every valid file on the destination (fetching the bytes of 304s
/// first).
async fn put_valid(
    context: &Context,
    image: &ImageTarget,
    files: &mut [Known],
    expected: &Expected,
    outcome: &mut ImageOutcome,
) -> Put {
    let label = label(image);
    for file in files.iter_mut() {
        if file.bytes.is_some() || !file.verdict.is_valid() {
            continue;
        }
        let fetched = context
            .source
            .get(&image.repository_path, &image.digest, &file.entry.name)
            .await;
        match fetched {
            Ok(Some(SignatureFile {
                content: Fetched::Blob(bytes),
                validators,
                ..
            })) => {
                let sha256 = Digest::of_bytes(&bytes).hex().to_string();
                if sha256 != file.sha256 {
                    file.verdict = judge(&context.keyring, &bytes, expected, context.allow_legacy);
                    file.sha256 = sha256;
                }
                file.entry.validators = validators;
                file.bytes = Some(bytes);
            }
            // A failure says what failed; anything else means the file
            // is no longer the one listed.
            Err(error) => {
                outcome.errors.push(error.to_string());
                return Put::Failed;
            }
            Ok(_) => {
                outcome.errors.push(format!(
                    "{}: changed while being read (fetch again later)",
                    file.entry.location
                ));
                return Put::Failed;
            }
        }
    }
    let blobs: Vec<Vec<u8>> = files
        .iter()
        .filter(|f| f.verdict.is_valid())
        .filter_map(|f| f.bytes.clone())
        .collect();
    if blobs.is_empty() {
        return Put::Done { listing: None };
    }
    match context
        .dest
        .put_missing(&image.repository_path, &image.digest, &blobs)
        .await
    {
        Ok(put) => {
            outcome.present += put.present.len();
            outcome
                .uploaded
                .extend(put.uploaded.into_iter().map(|p| FileRef {
                    image: label.clone(),
                    file: p.name,
                    location: p.location,
                }));
            Put::Done {
                listing: put.listing,
            }
        }
        Err(e) => {
            outcome.errors.push(e.to_string());
            Put::Failed
        }
    }
}

/// `--prune`: removes destination files whose bytes are not in `keep`
/// (the valid source signatures), keeping numbering contiguous. Only
/// called when the source listed the image completely (with nothing
/// valid in it, the mirror refuses and nothing is pruned); works from
/// `listing` when the upload left a current one (it wrote nothing), else
/// lists the destination again (an upload into a gap makes the files
/// behind it visible).
async fn prune(
    context: &Context,
    image: &ImageTarget,
    keep: &[&[u8]],
    listing: Option<Vec<SignatureFile>>,
    outcome: &mut ImageOutcome,
) {
    let (repository_path, digest) = (&image.repository_path, &image.digest);
    let existing = match listing {
        Some(existing) => Ok(existing),
        None => context.dest.existing(repository_path, digest).await,
    };
    let pruned = match existing {
        Ok(existing) => {
            context
                .dest
                .prune(repository_path, digest, &existing, keep)
                .await
        }
        Err(e) => Err(e),
    };
    match pruned {
        // The mirror's "never prune to nothing" rule: nothing to do.
        Err(StoreError::NothingToKeep { .. }) => {}
        Ok(removed) => outcome.pruned.extend(removed.into_iter().map(|p| FileRef {
            image: label(image),
            file: p.name,
            location: p.location,
        })),
        Err(e) => outcome.errors.push(e.to_string()),
    }
}

fn state_of(files: &[Known], synced: bool) -> ImageState {
    ImageState {
        reference: String::new(), // set by the caller, which knows the image
        files: files
            .iter()
            .map(|f| FileState {
                validators: f.entry.validators.clone(),
                sha256: f.sha256.clone(),
                verdict: f.verdict.clone(),
            })
            .collect(),
        synced,
    }
}
