//! Owns: `stagex lint` (every package.toml and pallet file of the tree
//! checked strictly: a key this version does not know is an error, one
//! line per finding, exit 1) and what other commands do with unknown keys
//! (`report_unknown`: a warning each, or one error under `--strict`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use super::Context;
use crate::package::load::definition_files;
use crate::package::PackageTree;
use crate::pallet::definition::{Catalog, Pallet};
use crate::progress::{warn, Progress};
use crate::unknown_fields::UnknownField;

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The packages tree (default: `packages` in stagex.toml, else <root>/packages).
    #[arg(long = "packages", value_name = "DIR")]
    pub packages_dir: Option<PathBuf>,
    /// The pallet definitions (default: `pallets` in stagex.toml, else <root>/pallets).
    #[arg(long = "pallets", value_name = "DIR")]
    pub pallets_dir: Option<PathBuf>,
}

/// One problem in one file.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub file: PathBuf,
    /// 1-based; absent when the problem has no single line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl From<&UnknownField> for Finding {
    fn from(field: &UnknownField) -> Finding {
        Finding {
            file: field.file.clone(),
            line: Some(field.line),
            message: field.message(),
        }
    }
}

/// An error as one finding on one line (toml's messages span several).
fn error_finding(file: &Path, error: &anyhow::Error) -> Finding {
    let text = format!("{error:#}");
    Finding {
        file: file.to_path_buf(),
        line: None,
        message: text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// What a loading command does with unknown keys: one warning each, or,
/// with `strict`, one error listing them all.
pub fn report_unknown(
    fields: &[UnknownField],
    strict: bool,
    progress: &dyn Progress,
) -> Result<()> {
    if fields.is_empty() {
        return Ok(());
    }
    if strict {
        let lines: Vec<String> = fields.iter().map(ToString::to_string).collect();
        bail!(
            "{} unknown field(s) (--strict):\n{}\nremove or rename them (`stagex lint` lists every finding)",
            fields.len(),
            lines.join("\n")
        );
    }
    for field in fields {
        warn(
            progress,
            &format!("{field}; ignored (`stagex lint` makes this an error)"),
        );
    }
    Ok(())
}

pub fn run(ctx: &Context, args: LintArgs) -> Result<ExitCode> {
    let packages = args
        .packages_dir
        .unwrap_or_else(|| ctx.settings.packages.clone());
    let pallets = args
        .pallets_dir
        .unwrap_or_else(|| ctx.settings.pallets.clone());
    let mut findings = package_findings(&packages)?;
    findings.extend(pallet_findings(&pallets, &packages)?);
    if ctx.json {
        super::print_json(&serde_json::json!({ "findings": findings }))?;
    } else {
        for finding in &findings {
            println!("{finding}");
        }
    }
    if findings.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("stagex lint: {} finding(s)", findings.len());
    Ok(ExitCode::FAILURE)
}

/// Every package.toml on its own, then (when each parsed) the tree as a
/// whole: `version_from` chains, duplicate images.
fn package_findings(root: &Path) -> Result<Vec<Finding>> {
    if !root.is_dir() {
        bail!(
            "packages directory {} does not exist; pass --packages or set `packages` in stagex.toml",
            root.display()
        );
    }
    let mut findings = Vec::new();
    for definition in definition_files(root)? {
        match definition.parse() {
            Ok((_, unknown)) => findings.extend(unknown.iter().map(Finding::from)),
            Err(e) => findings.push(error_finding(&definition.path, &e)),
        }
    }
    if findings.is_empty() {
        if let Err(e) = PackageTree::load(root) {
            findings.push(error_finding(root, &e));
        }
    }
    Ok(findings)
}

/// Every `*.toml` pallet file on its own, then the catalog as a whole.
fn pallet_findings(dir: &Path, packages: &Path) -> Result<Vec<Finding>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading pallet definitions in {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    let mut findings = Vec::new();
    for path in files {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let parsed = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|text| Pallet::parse_lenient(name, &path, &text));
        match parsed {
            Ok((_, unknown)) => findings.extend(unknown.iter().map(Finding::from)),
            Err(e) => findings.push(error_finding(&path, &e)),
        }
    }
    if findings.is_empty() {
        if let Err(e) = Catalog::load_with_tree(dir, packages) {
            findings.push(error_finding(dir, &e));
        }
    }
    Ok(findings)
}
