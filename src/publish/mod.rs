//! Owns: the release flow of `stagex publish`, in this order and no other:
//! 1. the release set (`release`: digests/*.txt against out/),
//! 2. the quorum gate (`gate`): nothing leaves the machine unless every
//!    image manifest has the quorum of distinct trusted signers,
//! 3. the push to every registry destination (`push`, resumable through
//!    HEAD checks and the `journal`, retried by `net::retry`),
//! 4. the signatures to every mirror (of the images on at least one registry),
//!    and the report (`report`). `--dry-run` walks the same push counting
//!    the writes instead of sending them (`push`).
//!
//! Must not: parse flags, read stagex.toml or draw anything (src/cli/publish.rs).
pub mod claims;
pub mod gate;
pub mod journal;
pub mod mirror;
pub mod push;
pub mod release;
pub mod report;

use std::path::PathBuf;

use thiserror::Error;

use crate::net::retry::Policy;
use crate::progress::Progress;
use journal::Journal;
use push::{RegistryNamespace, Run};
use release::ReleaseImage;
use report::PublishReport;

/// What to publish where.
#[derive(Clone, Debug)]
pub struct Request {
    /// `YYYY.MM.N`; needed when a tag template uses `{release}`.
    pub release: Option<String>,
    pub destinations: Vec<RegistryNamespace>,
    /// Signature mirrors: `file://DIR`, a directory, or `https://` (WebDAV PUT).
    pub mirrors: Vec<String>,
    /// Tag templates (`{version}`, `{release}` are replaced).
    pub tags: Vec<String>,
    /// Images pushed at once (over all destinations).
    pub jobs: usize,
    pub dry_run: bool,
    /// The journal file; `None` re-checks everything.
    pub journal: Option<PathBuf>,
    pub policy: Policy,
}

pub use crate::sign::trust::Trust;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    #[error(transparent)]
    Gate(#[from] gate::GateError),
    #[error("{0}")]
    Config(String),
}

/// Expands the tag templates for one image (pure).
pub fn expand_tags(
    templates: &[String],
    version: &str,
    release: Option<&str>,
) -> Result<Vec<String>, PublishError> {
    let mut tags = Vec::new();
    for template in templates {
        if template.contains("{release}") && release.is_none() {
            return Err(PublishError::Config(format!(
                "tag {template:?} needs the release: pass --release YYYY.MM.N"
            )));
        }
        let tag = template
            .replace("{version}", version)
            .replace("{release}", release.unwrap_or_default());
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphanumeric() || c == '_' || (i > 0 && (c == '.' || c == '-'))
            });
        if !valid {
            return Err(PublishError::Config(format!(
                "tag template {template:?} gives {tag:?}, not a valid tag (letters, digits, _ . -, at most 128)"
            )));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// Gate, then push (or plan), then mirror. `Err` only when nothing was
/// pushed (configuration, release set or gate); failures of single images
/// are in the report.
pub fn publish(
    request: &Request,
    images: &[ReleaseImage],
    trust: &Trust,
    progress: &dyn Progress,
) -> Result<PublishReport, PublishError> {
    if request.destinations.is_empty() && request.mirrors.is_empty() {
        return Err(PublishError::Config(
            "no registry and no mirror to publish to: pass --registry HOST/NAMESPACE (or set [publish] registries in stagex.toml)".into(),
        ));
    }
    let tags = images
        .iter()
        .map(|i| expand_tags(&request.tags, &i.version, request.release.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let passed = gate::check(trust, images)?;
    let signatures = if request.mirrors.is_empty() {
        Vec::new()
    } else {
        mirror::collect(images, &passed.reports)
    };
    let journal = match &request.journal {
        Some(path) => Journal::load(path),
        None => Journal::disabled(),
    };
    let mut report = PublishReport {
        release: request.release.clone(),
        dry_run: request.dry_run,
        ..PublishReport::default()
    };
    report.notes.extend(journal.ignored.clone());
    let run = Run::new(request, images, &tags, &journal, progress);
    push::push_all(&run, request.jobs);
    report.registries = run
        .destinations
        .iter()
        .zip(&run.counters)
        .map(|(d, c)| c.report(&d.to_string(), run.hosts[&d.host].budget.retries()))
        .collect();
    if !request.dry_run {
        if let Err(e) = journal.save() {
            report
                .notes
                .push(format!("the publish journal was not saved: {e:#}"));
        }
    }
    let unpublished = mirror::unpublished(&report.registries);
    report.mirrors = mirror::upload_all(
        &request.mirrors,
        &signatures,
        &unpublished,
        request.dry_run,
        progress,
    );
    report.total(images.len() as u64);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_expand_and_are_checked() {
        let t: Vec<String> = crate::settings::DEFAULT_TAGS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            expand_tags(&t, "1.37.0", Some("2026.03.0")).unwrap(),
            vec!["1.37.0", "sx2026.03.0", "latest"]
        );
        assert!(expand_tags(&t, "1.0", None)
            .unwrap_err()
            .to_string()
            .contains("--release"));
        assert!(expand_tags(&["x/{version}".into()], "1", None).is_err());
        assert_eq!(
            expand_tags(&["latest".into(), "latest".into()], "1", None).unwrap(),
            vec!["latest"]
        );
    }
}
