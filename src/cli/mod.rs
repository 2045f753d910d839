//! The command line: one file per subcommand, each owning its clap `Args`
//! struct and a `run` function. Global flags (`--json`, `--root`) live here.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::settings::Settings;

pub mod sign;
pub mod verify;

/// Build, compose, sign and publish StageX OCI images.
#[derive(Debug, Parser)]
#[command(name = "stagex", version, about)]
pub struct Cli {
    /// Machine-readable JSON on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The StageX repository root (holds stagex.toml, packages/, pallets/, out/).
    #[arg(long, global = true, env = "STAGEX_ROOT", default_value = ".")]
    pub root: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign images (one signature file per manifest digest) with a key file or gpg.
    Sign(sign::SignArgs),
    /// Check images' signatures against the trusted keys and the quorum.
    Verify(verify::VerifyArgs),
}

/// What every command gets: global flags and the loaded settings.
pub struct Context {
    pub json: bool,
    pub root: PathBuf,
    pub settings: Settings,
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::load(&cli.root)?;
    let context = Context {
        json: cli.json,
        root: cli.root,
        settings,
    };
    match cli.command {
        Command::Sign(args) => sign::run(&context, args),
        Command::Verify(args) => verify::run(&context, args),
    }
}
