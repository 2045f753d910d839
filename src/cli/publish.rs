//! `stagex publish`: flags over stagex.toml `[publish]`, the release set
//! from digests/*.txt and out/, ONE library call (`publish::publish`: gate,
//! push, mirrors), then the report: progress bars per registry and overall
//! on a terminal (the library's `progress` events, drawn by
//! `cli/progress.rs`), a summary (or `--json`) at the end, exit 1 when any
//! image failed.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use super::trust::TrustArgs;
use super::Context;
use crate::net::retry::Policy;
use crate::publish::push::RegistryNamespace;
use crate::publish::report::PublishReport;
use crate::publish::{publish, release, PublishError, Request};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The release name (`YYYY.MM.N`), for the `sx<release>` tag.
    #[arg(long, value_name = "YYYY.MM.N")]
    pub release: Option<String>,
    /// Registry namespace to push to, `HOST[:PORT]/NAMESPACE`; repeat for
    /// several (default: stagex.toml [publish] registries).
    #[arg(long = "registry", value_name = "HOST/NS")]
    pub registries: Vec<String>,
    /// Signature mirror to upload to (https:// with WebDAV PUT, file://DIR
    /// or a directory); repeat for several (default: [publish] mirrors).
    #[arg(long = "mirror", value_name = "URL|DIR")]
    pub mirrors: Vec<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Directory of the digests files (default: [publish] digests, `digests`).
    #[arg(long, value_name = "DIR")]
    pub digests: Option<PathBuf>,
    /// Tag template, `{version}`/`{release}` replaced; repeat (default:
    /// [publish] tags: `{version}`, `sx{release}`, `latest`).
    #[arg(long = "tag", value_name = "TEMPLATE")]
    pub tags: Vec<String>,
    /// Images pushed at once (default: [publish] jobs, 8).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Show what would be uploaded, mounted, skipped and tagged; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ignore the journal of earlier runs: ask the registries about every image.
    #[arg(long)]
    pub no_journal: bool,
    /// First retry backoff in milliseconds (doubles per retry).
    #[arg(long, hide = true, value_name = "MS")]
    pub retry_base_ms: Option<u64>,
}

pub fn run(ctx: &Context, args: PublishArgs) -> Result<ExitCode> {
    let settings = &ctx.settings;
    let pick = |flag: &Vec<String>, config: &Vec<String>| {
        if flag.is_empty() {
            config.clone()
        } else {
            flag.clone()
        }
    };
    for registry in &args.registries {
        crate::registry::auth::bind_env_credentials(registry);
    }
    let destinations = pick(&args.registries, &settings.publish.registries)
        .iter()
        .map(|r| RegistryNamespace::parse(r).with_context(|| format!("registry {r:?}")))
        .collect::<Result<Vec<_>>>()?;
    let digests = args
        .digests
        .clone()
        .unwrap_or_else(|| settings.digests.clone());
    let listed = release::read_digests(&digests)?;
    let images = release::load(&listed, &args.trust.resolver(settings))?;
    let trust = args.trust.load(settings)?;
    let mut policy = Policy::default();
    if let Some(ms) = args.retry_base_ms {
        policy.base = Duration::from_millis(ms);
    }
    let request = Request {
        release: args.release.clone(),
        destinations,
        mirrors: pick(&args.mirrors, &settings.publish.mirrors),
        tags: pick(&args.tags, &settings.publish.tags),
        jobs: args.jobs.unwrap_or(settings.publish.jobs).max(1),
        dry_run: args.dry_run,
        journal: (!args.no_journal).then(|| settings.publish.journal.clone()),
        policy,
    };
    let progress = super::progress::for_command(ctx.json);
    let report = match publish(&request, &images, &trust, progress.as_ref()) {
        Ok(report) => report,
        Err(PublishError::Gate(e)) if ctx.json => {
            super::print_json(&serde_json::json!({
                "gate": "quorum missed, nothing was pushed",
                "threshold": e.0.threshold,
                "lookaside": e.0.lookaside,
                "short": e.0.short,
            }))?;
            eprintln!("stagex: error: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json {
        super::print_json(&report)?;
    } else {
        print!("{}", summary(&report));
    }
    if !report.ok() {
        eprintln!(
            "stagex: error: {} failure(s), each with its reason above; those that gave up after retries finish when the same command is run again (what is there is not sent again)",
            report.summary.failures
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The human report.
pub fn summary(report: &PublishReport) -> String {
    let verb = if report.dry_run {
        "would push"
    } else {
        "pushed"
    };
    let mut out = String::new();
    if report.dry_run {
        out += "dry run: nothing was changed\n";
    }
    for r in &report.registries {
        out += &format!(
            "{}: {} image(s) ({} journaled), tags {verb} {} (present {}), blobs uploaded {} ({}), mounted {} ({}), skipped {}, manifests {}, retries {}\n",
            r.registry,
            r.images,
            r.images_journaled,
            r.tags_pushed,
            r.tags_present,
            r.blobs_uploaded,
            bytes(r.bytes_uploaded),
            r.blobs_mounted,
            bytes(r.bytes_mounted),
            r.blobs_skipped,
            r.manifests_pushed,
            r.retries
        );
        for f in &r.failed {
            out += &format!("  FAILED {}: {}\n", f.image, f.error);
        }
    }
    for m in &report.mirrors {
        out += &format!(
            "{}: {} image(s), signatures uploaded {} (present {})\n",
            m.mirror, m.images, m.signatures_uploaded, m.signatures_present
        );
        for f in &m.failed {
            out += &format!("  FAILED {}: {}\n", f.image, f.error);
        }
        for s in &m.skipped {
            out += &format!("  SKIPPED {}: {}\n", s.image, s.error);
        }
    }
    for note in &report.notes {
        out += &format!("note: {note}\n");
    }
    let s = &report.summary;
    out += &format!(
        "total: images {}, tags {verb} {}, bytes uploaded {}, blobs mounted {}, blobs skipped {}, signatures uploaded {}, retries {}, failures {}\n",
        s.images,
        s.tags_pushed,
        bytes(s.bytes_uploaded),
        s.blobs_mounted,
        s.blobs_skipped,
        s.signatures_uploaded,
        s.retries,
        s.failures
    );
    out
}

fn bytes(n: u64) -> String {
    super::progress::human_bytes(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::report::{Failed, RegistryReport};

    #[test]
    fn the_summary_names_failures_and_says_dry_run() {
        let mut report = PublishReport {
            dry_run: true,
            registries: vec![RegistryReport {
                registry: "127.0.0.1:5000/stagex".into(),
                images: 1,
                tags_pushed: 3,
                bytes_uploaded: 2048,
                failed: vec![Failed {
                    image: "core-x".into(),
                    error: "blob sha256:ab: refused".into(),
                }],
                ..RegistryReport::default()
            }],
            ..PublishReport::default()
        };
        report.total(1);
        let text = summary(&report);
        for want in [
            "dry run: nothing was changed",
            "127.0.0.1:5000/stagex: 1 image(s)",
            "tags would push 3",
            "2.00 KiB",
            "FAILED core-x: blob sha256:ab: refused",
            "failures 1",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
    }
}
