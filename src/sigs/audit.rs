//! Owns: `stagex sigs audit` as a library call: for each image, what is
//! wrong with a lookaside before users hit it: numbering gaps (and what
//! hides behind them: listed on a directory, probed over http), zero-byte
//! and oversized files, soft 404s, statuses other than 200/404 (403 from a
//! bucket without listing), unreadable files, invalid signatures with
//! their reason (unknown key, legacy format, bad signature, wrong digest
//! or identity...), duplicate signers, images under the quorum; and with
//! `compare`, which files differ from a second lookaside.
//!
//! Returns data (`AuditReport`) and reports progress as `progress` events;
//! no UI, never writes.
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use super::each::for_each;
use super::images::label;
use super::judge::{judge, Code, Verdict};
use crate::lookaside::fetch::ReadPolicy;
use crate::lookaside::location::Location;
use crate::lookaside::{End, Fetched, Listing, Lookaside, SignatureFile, StoreError};
use crate::progress::Progress;
use crate::sign::image::ImageTarget;
use crate::sign::keyring::Keyring;
use crate::sign::verify::{Expected, Rejection};

/// How an audit runs.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Distinct trusted signers every image needs.
    pub threshold: usize,
    /// Count legacy-format signatures as valid (they are still reported).
    pub allow_legacy: bool,
    /// A second lookaside to compare file by file (parsed by the caller,
    /// as the main one).
    pub compare: Option<Location>,
    pub concurrency: usize,
    pub policy: ReadPolicy,
    /// Over http, how many numbers past the first 404 are probed for
    /// files hidden behind a gap.
    pub probe: u32,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            threshold: 2,
            allow_legacy: false,
            compare: None,
            concurrency: 32,
            policy: ReadPolicy::default(),
            probe: 2,
        }
    }
}

/// One problem.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// `stagex/core-x@sha256:<hex>`.
    pub image: String,
    /// `signature-N` when the problem is one file's.
    pub file: Option<String>,
    pub code: FindingCode,
    pub detail: String,
}

/// The stable code of a finding, as the JSON and the text show it
/// (`as_str`, the one table of the words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindingCode {
    Gap,
    OverCap,
    BadDirectory,
    Soft404,
    HttpStatus,
    Unauthorized,
    Error,
    DuplicateSigner,
    UnderQuorum,
    Differs,
    MissingInCompare,
    OnlyInCompare,
    /// A file rejected with this code of `stagex verify` (`empty`,
    /// `too-large`, `unknown-key`, `legacy-format`, ...).
    Rejected(Code),
}

impl Serialize for FindingCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl FindingCode {
    pub fn as_str(&self) -> &str {
        match self {
            FindingCode::Gap => "gap",
            FindingCode::OverCap => "over-cap",
            FindingCode::BadDirectory => "bad-directory",
            FindingCode::Soft404 => "soft-404",
            FindingCode::HttpStatus => "http-status",
            FindingCode::Unauthorized => "unauthorized",
            FindingCode::Error => "error",
            FindingCode::DuplicateSigner => "duplicate-signer",
            FindingCode::UnderQuorum => "under-quorum",
            FindingCode::Differs => "differs",
            FindingCode::MissingInCompare => "missing-in-compare",
            FindingCode::OnlyInCompare => "only-in-compare",
            FindingCode::Rejected(code) => code.as_str(),
        }
    }
}

impl std::fmt::Display for FindingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of an audit.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AuditReport {
    pub lookaside: String,
    pub compare: Option<String>,
    pub images: usize,
    /// Images without any finding.
    pub clean: usize,
    /// Valid signatures seen.
    pub valid: usize,
    pub findings: Vec<Finding>,
    /// Findings per code.
    pub counts: BTreeMap<String, usize>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Adds findings made outside the per-image audit (and counts them).
    pub fn add_findings(&mut self, findings: Vec<Finding>) {
        for f in &findings {
            *self.counts.entry(f.code.to_string()).or_default() += 1;
        }
        self.findings.extend(findings);
    }
}

/// The directories of a walked tree that are not an image's (`images::
/// walk`'s skipped ones, e.g. `build.log@sha256=` or `core-busybox@sha256=`
/// with no digest): no reader looks there, so whatever they hold protects
/// nothing. Pure.
pub fn damaged_directories(dirs: &[String]) -> Vec<Finding> {
    dirs.iter()
        .map(|dir| Finding {
            image: dir.clone(),
            file: None,
            code: FindingCode::BadDirectory,
            detail: "not a `<repository>@sha256=<64 hex digits>` directory (no or an invalid \
                     digest): no reader looks here; move the signatures to the directory of \
                     the image's manifest digest, or remove it"
                .into(),
        })
        .collect()
}

struct Context {
    store: Lookaside,
    compare: Option<Lookaside>,
    keyring: Keyring,
    options: AuditOptions,
}

/// Audits the signatures of `images` in the lookaside at `location`
/// (parsed once by the caller, which also walks a directory's images).
pub fn audit(
    location: &Location,
    images: &[ImageTarget],
    keyring: &Keyring,
    options: &AuditOptions,
    progress: &dyn Progress,
) -> Result<AuditReport> {
    let store = Lookaside::open(location, options.policy)?;
    let compare = match &options.compare {
        Some(other) => Some(Lookaside::open(other, options.policy)?),
        None => None,
    };
    let context = Arc::new(Context {
        store,
        compare,
        keyring: keyring.clone(),
        options: options.clone(),
    });
    let total = images.len();
    let results = for_each(
        total,
        options.concurrency,
        progress,
        |i| audit_image(context.clone(), images[i].clone()),
        |i, reason| {
            let finding = Finding {
                image: label(&images[i]),
                file: None,
                code: FindingCode::Error,
                detail: format!("internal error: {reason}"),
            };
            (vec![finding], 0)
        },
    );
    let mut report = AuditReport {
        lookaside: context.store.describe(),
        compare: context.compare.as_ref().map(Lookaside::describe),
        images: total,
        ..AuditReport::default()
    };
    for (findings, valid) in results {
        report.clean += usize::from(findings.is_empty());
        report.valid += valid;
        for f in &findings {
            *report.counts.entry(f.code.to_string()).or_default() += 1;
        }
        report.findings.extend(findings);
    }
    Ok(report)
}

/// Every finding of one image, and its number of valid signatures.
async fn audit_image(context: Arc<Context>, image: ImageTarget) -> (Vec<Finding>, usize) {
    let label = label(&image);
    let finding = |file: Option<&str>, code: FindingCode, detail: String| Finding {
        image: label.clone(),
        file: file.map(str::to_string),
        code,
        detail,
    };
    let expected = Expected {
        digest: image.digest.clone(),
        reference: image.reference.clone(),
    };
    let (repository_path, digest) = (&image.repository_path, &image.digest);
    let listing = context.store.list(repository_path, digest, &[]).await;
    let mut findings = Vec::new();
    let mut signers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in &listing.files {
        match verdict(&context, &entry.content, &expected) {
            Verdict::Valid { signer } => {
                signers.entry(signer).or_default().push(entry.name.clone())
            }
            Verdict::Rejected { code, reason } => findings.push(finding(
                Some(&entry.name),
                FindingCode::Rejected(code),
                reason,
            )),
        }
    }
    findings.extend(end_finding(&listing.end, &finding));
    let hidden = match (&context.store, &listing.end) {
        (Lookaside::Http(_), End::Missing) => {
            let after = listing.files.len() as u32 + 1;
            let probe = context.options.probe;
            context
                .store
                .probe_after(repository_path, digest, after, probe)
                .await
        }
        _ => listing.hidden.clone(),
    };
    for entry in &hidden {
        findings.push(hidden_finding(
            &context, &listing, entry, &expected, &finding,
        ));
    }
    for (signer, files) in &signers {
        if files.len() > 1 {
            findings.push(finding(
                None,
                FindingCode::DuplicateSigner,
                format!(
                    "{signer} signed {} times ({}): counts once toward the quorum",
                    files.len(),
                    files.join(", ")
                ),
            ));
        }
    }
    let threshold = context.options.threshold.max(1);
    if signers.len() < threshold {
        findings.push(finding(
            None,
            FindingCode::UnderQuorum,
            format!(
                "{} distinct trusted signer(s), {threshold} needed",
                signers.len()
            ),
        ));
    }
    if let Some(other) = &context.compare {
        let theirs = other.list(repository_path, digest, &[]).await;
        findings.extend(compare(&listing, &theirs, &other.describe(), &finding));
    }
    let valid = signers.values().map(Vec::len).sum();
    (findings, valid)
}

/// The finding for a file no reader sees: behind a gap, or past the cap.
fn hidden_finding(
    context: &Context,
    listing: &Listing,
    entry: &SignatureFile,
    expected: &Expected,
    finding: &dyn Fn(Option<&str>, FindingCode, String) -> Finding,
) -> Finding {
    let what = match verdict(context, &entry.content, expected) {
        Verdict::Valid { signer } => format!("a valid signature by {signer}"),
        Verdict::Rejected { reason, .. } => format!("not valid: {reason}"),
    };
    let (seen, name) = (listing.files.len(), &entry.name);
    if matches!(listing.end, End::Limit) {
        finding(
            Some(name),
            FindingCode::OverCap,
            format!(
                "the cap of {seen} signatures per image was reached, so no reader sees {name} ({what}): remove signatures no one needs"
            ),
        )
    } else {
        finding(
            Some(name),
            FindingCode::Gap,
            format!(
                "signature-{} is missing, so no reader sees {name} ({what}): renumber the files contiguously",
                seen + 1
            ),
        )
    }
}

fn verdict(context: &Context, content: &Fetched, expected: &Expected) -> Verdict {
    match content {
        Fetched::Blob(body) => judge(
            &context.keyring,
            body,
            expected,
            context.options.allow_legacy,
        ),
        Fetched::TooLarge(n) => Verdict::rejected(&Rejection::TooLarge(*n as usize)),
        Fetched::SoftNotFound => Verdict::rejected(&Rejection::SoftNotFound),
        Fetched::NotModified => Verdict::Rejected {
            code: Code::Error,
            reason: "304 to an unconditional request".into(),
        },
    }
}

fn end_finding(
    end: &End,
    finding: &dyn Fn(Option<&str>, FindingCode, String) -> Finding,
) -> Option<Finding> {
    let (name, error) = match end {
        End::Missing | End::Limit => return None,
        End::SoftNotFound { name, location } => {
            return Some(finding(
                Some(name),
                FindingCode::Soft404,
                format!("{location}: {}", Rejection::SoftNotFound),
            ))
        }
        End::Failed { name, error } => (name.as_deref(), error),
    };
    Some(match error {
        StoreError::Status { url, status, .. } => finding(
            name,
            FindingCode::HttpStatus,
            format!(
                "{url}: HTTP {status}: readers stop with an error here (a bucket without \
                 listing answers 403 for a missing file: make the mirror answer 404)"
            ),
        ),
        StoreError::ReaderUnauthorized(_) | StoreError::Unauthorized { .. } => {
            finding(name, FindingCode::Unauthorized, error.to_string())
        }
        other => finding(None, FindingCode::Error, other.to_string()),
    })
}

/// File-by-file differences between two listings of one image.
fn compare(
    ours: &Listing,
    theirs: &Listing,
    other: &str,
    finding: &dyn Fn(Option<&str>, FindingCode, String) -> Finding,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(f) = end_finding(&theirs.end, finding) {
        findings.push(Finding {
            detail: format!("in {other}: {}", f.detail),
            ..f
        });
    }
    let bytes = |e: &SignatureFile| match &e.content {
        Fetched::Blob(body) => Some(body.clone()),
        _ => None,
    };
    let theirs_by_name: BTreeMap<&str, &SignatureFile> =
        theirs.files.iter().map(|e| (e.name.as_str(), e)).collect();
    for entry in &ours.files {
        match theirs_by_name.get(entry.name.as_str()) {
            None => findings.push(finding(
                Some(&entry.name),
                FindingCode::MissingInCompare,
                format!("{other} has no {}", entry.name),
            )),
            Some(t) if bytes(t) != bytes(entry) => findings.push(finding(
                Some(&entry.name),
                FindingCode::Differs,
                format!("{} and {} differ", entry.location, t.location),
            )),
            Some(_) => {}
        }
    }
    let ours_names: Vec<&str> = ours.files.iter().map(|e| e.name.as_str()).collect();
    for entry in &theirs.files {
        if !ours_names.contains(&entry.name.as_str()) {
            findings.push(finding(
                Some(&entry.name),
                FindingCode::OnlyInCompare,
                format!("{} exists only in {other}", entry.location),
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_codes_serialize_as_the_stable_words() {
        let codes = [
            (FindingCode::Gap, "gap"),
            (FindingCode::OverCap, "over-cap"),
            (FindingCode::BadDirectory, "bad-directory"),
            (FindingCode::Soft404, "soft-404"),
            (FindingCode::HttpStatus, "http-status"),
            (FindingCode::Unauthorized, "unauthorized"),
            (FindingCode::Error, "error"),
            (FindingCode::DuplicateSigner, "duplicate-signer"),
            (FindingCode::UnderQuorum, "under-quorum"),
            (FindingCode::Differs, "differs"),
            (FindingCode::MissingInCompare, "missing-in-compare"),
            (FindingCode::OnlyInCompare, "only-in-compare"),
            (FindingCode::Rejected(Code::UnknownKey), "unknown-key"),
        ];
        for (code, word) in codes {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{word}\""));
            assert_eq!(code.to_string(), word);
        }
    }
}
