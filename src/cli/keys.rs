//! Owns: `stagex keys list|check|refresh|add`: flags over stagex.toml (the
//! keys directory, `keyservers`), one library call in `crate::keys`, and the
//! rendering (text or `--json`). Exit codes: `check` 1 on any finding;
//! `refresh` 1 when a key could be refreshed from no source at all.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use super::{print_json, Context};
use crate::keys::check::{self as rules, KeyFile};
use crate::keys::describe::KeySummary;
use crate::keys::fetch::KeySource;
use crate::keys::{self, DEFAULT_SOURCES};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    /// Directory of trusted maintainer certificates (default: stagex.toml `keys`).
    #[arg(long, global = true, value_name = "DIR")]
    pub keys: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// One line per certificate: fingerprint, user ID, algorithm, created, expiry, revocation, signing subkeys.
    List,
    /// Exit 1 when a key is expired, revoked, cannot sign, is weaker than RSA-3072 or expires soon,
    /// or a file is misnamed, duplicated or holds several certificates.
    Check {
        /// Warn about keys expiring within this many days.
        #[arg(long, default_value_t = 30)]
        warn_days: u64,
    },
    /// Fetch trusted certificates by fingerprint (VKS, HKP, WKD) and merge what is new.
    Refresh {
        /// Only these trusted primaries (default: every key in the directory).
        fingerprints: Vec<String>,
        /// Key sources, in order: https://HOST (VKS then HKP), hkps://HOST, wkd
        /// (default: stagex.toml `keyservers`, else keys.openpgp.org and WKD).
        #[arg(long = "from", value_name = "URL")]
        from: Vec<String>,
    },
    /// Trust a new maintainer: a certificate file, or a fingerprint fetched from the key sources.
    Add {
        /// A certificate file (armored or binary) or a full fingerprint.
        key: String,
        /// Key sources for a fingerprint (as for refresh).
        #[arg(long = "from", value_name = "URL")]
        from: Vec<String>,
    },
}

pub fn run(ctx: &Context, args: KeysArgs) -> Result<ExitCode> {
    let dir = args
        .keys
        .clone()
        .unwrap_or_else(|| ctx.settings.keys.clone());
    let now = SystemTime::now();
    match args.command {
        KeysCommand::List => list(ctx, &dir, now),
        KeysCommand::Check { warn_days } => check(ctx, &dir, now, warn_days),
        KeysCommand::Refresh { fingerprints, from } => {
            let sources = sources(ctx, &from)?;
            refresh(ctx, &dir, &fingerprints, &sources, now)
        }
        KeysCommand::Add { key, from } => add(ctx, &dir, &key, &from, now),
    }
}

/// `--from`, else stagex.toml `keyservers`, else the defaults.
fn sources(ctx: &Context, from: &[String]) -> Result<Vec<KeySource>> {
    let texts: Vec<String> = if !from.is_empty() {
        from.to_vec()
    } else if !ctx.settings.keyservers.is_empty() {
        ctx.settings.keyservers.clone()
    } else {
        DEFAULT_SOURCES.iter().map(|s| s.to_string()).collect()
    };
    texts
        .iter()
        .map(|t| KeySource::parse(t).map_err(anyhow::Error::from))
        .collect()
}

fn list(ctx: &Context, dir: &Path, now: SystemTime) -> Result<ExitCode> {
    let files = keys::list(dir, now)?;
    if ctx.json {
        print_json(&files)?;
        return Ok(ExitCode::SUCCESS);
    }
    for file in &files {
        for cert in &file.certificates {
            println!("{}  ({})", line(cert), file.file.display());
            for sub in &cert.signing_subkeys {
                let state = if sub.revoked {
                    "revoked".to_string()
                } else {
                    expiry_text(sub.expires.as_deref(), sub.expired)
                };
                println!(
                    "    signing subkey {} {} {state}",
                    sub.fingerprint, sub.algorithm
                );
            }
        }
    }
    if files.is_empty() {
        println!("no key files in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `FPR  Name <mail>  RSA-4096  created …  expires …  [REVOKED …]`
fn line(cert: &KeySummary) -> String {
    let revoked = cert
        .revoked
        .as_ref()
        .map(|r| format!("  REVOKED ({}) on {}: {}", r.kind, r.when, r.reason))
        .unwrap_or_default();
    let unusable = cert
        .unusable
        .as_ref()
        .map(|u| format!("  UNUSABLE: {u}"))
        .unwrap_or_default();
    format!(
        "{}  {}  {}  created {}  {}{revoked}{unusable}",
        cert.fingerprint,
        cert.user_id.as_deref().unwrap_or("(no user ID)"),
        cert.algorithm,
        cert.created,
        expiry_text(cert.expires.as_deref(), cert.expired),
    )
}

fn expiry_text(expires: Option<&str>, expired: bool) -> String {
    match (expires, expired) {
        (Some(when), true) => format!("expired on {when}"),
        (Some(when), false) => format!("expires {when}"),
        (None, _) => "does not expire".to_string(),
    }
}

fn check(ctx: &Context, dir: &Path, now: SystemTime, warn_days: u64) -> Result<ExitCode> {
    let files = keys::list(dir, now)?;
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let key_files: Vec<KeyFile> = files
        .iter()
        .zip(&names)
        .map(|(f, name)| KeyFile {
            name,
            certs: &f.certificates,
        })
        .collect();
    let warn = Duration::from_secs(warn_days.saturating_mul(86_400));
    let findings = rules::check(&key_files, now, warn);
    if ctx.json {
        print_json(&findings)?;
    } else {
        for (file, found) in &findings {
            for finding in found {
                println!("{}: {}", dir.join(file).display(), finding.describe());
            }
        }
        let count: usize = findings.values().map(Vec::len).sum();
        println!("{} key file(s) checked, {count} finding(s)", files.len());
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn refresh(
    ctx: &Context,
    dir: &Path,
    fingerprints: &[String],
    sources: &[KeySource],
    now: SystemTime,
) -> Result<ExitCode> {
    let report = keys::refresh(dir, fingerprints, sources, now)?;
    let failed = report
        .iter()
        .filter(|r| r.changes.is_empty() && r.problems.len() == sources.len())
        .count();
    if ctx.json {
        print_json(&report)?;
    } else {
        for key in &report {
            let lines = key.changes.lines();
            let verdict = if key.changes.is_empty() {
                "unchanged"
            } else {
                "updated"
            };
            println!("{} ({}): {verdict}", key.fingerprint, key.file.display());
            for change in lines {
                println!("    {change}");
            }
            for problem in &key.problems {
                println!("    ! {problem}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn add(ctx: &Context, dir: &Path, key: &str, from: &[String], now: SystemTime) -> Result<ExitCode> {
    let path = Path::new(key);
    let cert = if path.is_file() {
        keys::cert_from_file(path)?
    } else {
        keys::cert_from_sources(key, &sources(ctx, from)?)?
    };
    let added =
        keys::add(dir, cert, now).with_context(|| format!("adding {key} to {}", dir.display()))?;
    if ctx.json {
        print_json(&added)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("added {}", added.file.display());
    println!("  fingerprint {}", added.certificate.fingerprint);
    for user_id in &added.certificate.user_ids {
        println!("  user ID     {user_id}");
    }
    println!("Compare the fingerprint with the maintainer out of band (in person, a signed message, their Keyoxide profile) before trusting a release they sign.");
    Ok(ExitCode::SUCCESS)
}
