//! `stagex digests`: write `digests/<stage>.txt` from the built images in
//! `out/`, in StageX's exact format.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::build::digests;
use crate::oci::Platform;

#[derive(Debug, Args)]
pub struct DigestsArgs {
    /// Output directory holding the built images (default: `out` in stagex.toml).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the digests files go (default: <root>/digests).
    #[arg(long, value_name = "DIR")]
    pub digests_dir: Option<PathBuf>,
    /// Which manifest to list for multi-platform images (default: the host's).
    #[arg(long)]
    pub platform: Option<Platform>,
}

pub fn run(ctx: &Context, args: DigestsArgs) -> Result<ExitCode> {
    let out = args.out.clone().unwrap_or_else(|| ctx.settings.out.clone());
    let dir = args
        .digests_dir
        .clone()
        .unwrap_or_else(|| ctx.root.join("digests"));
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let found = digests::scan(&out, &platform)?;
    let files = digests::write(&found, &dir)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string(
                &files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
            )?
        );
    } else {
        for (file, (stage, entries)) in files.iter().zip(&found) {
            println!("{} ({} {stage} packages)", file.display(), entries.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
