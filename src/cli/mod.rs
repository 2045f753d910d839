//! The command line: one file per subcommand, each owning its clap `Args`
//! struct and a `run` function. Global flags (`--json`, `--root`) live here.
pub mod build;
pub mod completions;
pub mod digests;
pub mod fetch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::settings::Settings;

pub mod pallet;
pub mod policy;
pub mod preseed;
pub mod progress;
pub mod publish;
pub mod release;
pub mod sign;
pub mod sigs;
pub mod trust;
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

pub mod image;
pub mod keys;
pub mod lint;
pub mod man;
pub mod reproduce;

pub mod diff;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign images (one signature file per manifest digest) with a key file or gpg.
    Sign(sign::SignArgs),
    /// Check images' signatures against the trusted keys and the quorum.
    Verify(verify::VerifyArgs),
    /// Download package sources into fetch/<stage>/<name>/, sha256-checked.
    Fetch(fetch::FetchArgs),
    /// Build package images into out/<stage>-<name>/ (dependencies first).
    Build(build::BuildArgs),
    /// Write digests/<stage>.txt from the images in out/.
    Digests(digests::DigestsArgs),
    /// Write a deterministic one-layer image from a directory tree.
    Image(image::ImageArgs),
    /// Compose pallets and package images into one image.
    Pallet(pallet::PalletArgs),
    /// Release: check the quorum, push every image to every registry, upload signatures to mirrors.
    Publish(publish::PublishArgs),
    /// Sync signatures between lookasides (verified) and audit a lookaside.
    Sigs(sigs::SigsArgs),
    /// Write the containers policy.json and registries.d files that make podman/skopeo verify StageX images.
    Policy(policy::PolicyArgs),
    /// Pull every image digests/*.txt lists, by digest, into out/.
    Preseed(preseed::PreseedArgs),
    /// Release notes between two trees, and the release's signing status (terminal, JSON or one HTML page).
    Release(release::ReleaseArgs),
    /// Keep the trusted keys directory fresh: list, check, refresh from keyservers, add.
    Keys(keys::KeysArgs),
    /// Write the shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(completions::CompletionsArgs),
    /// Write one man page per command and subcommand into a directory.
    Man(man::ManArgs),
    /// Check every package.toml and pallet file strictly: unknown fields are errors (exit 1).
    Lint(lint::LintArgs),
    /// Why two images differ: index, manifest, config, layers, files; innermost cause first.
    Diff(diff::DiffArgs),
    /// Build packages twice (control, then varied environment) in fresh roots and compare digests.
    Reproduce(reproduce::ReproduceArgs),
}

/// What every command gets: global flags and the loaded settings.
pub struct Context {
    pub json: bool,
    pub root: PathBuf,
    pub settings: Settings,
}

/// Writes `value` as pretty JSON to stdout, streamed (no intermediate
/// string or `Value` tree: a release report is thousands of entries).
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    // Neither reads the tree: they work anywhere, even beside a broken stagex.toml.
    match cli.command {
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        command => run_in_tree(cli.json, cli.root, command),
    }
}

/// Runs a command that reads the StageX tree at `root` (its stagex.toml first).
fn run_in_tree(json: bool, root: PathBuf, command: Command) -> Result<ExitCode> {
    let settings = Settings::load(&root)?;
    if let Some(dir) = &settings.certs_dir {
        // Before any network call: every client reads it from net's config.
        crate::net::certs::set_setting(dir.clone());
    }
    for registry in &settings.publish.registries {
        // $STAGEX_REGISTRY_USER goes to these (unless $STAGEX_REGISTRY_HOSTS).
        crate::registry::auth::bind_env_credentials(registry);
    }
    let context = Context {
        json,
        root,
        settings,
    };
    match command {
        Command::Sign(args) => sign::run(&context, args),
        Command::Verify(args) => verify::run(&context, args),
        Command::Fetch(args) => fetch::run(&context, args),
        Command::Build(args) => build::run(&context, args),
        Command::Digests(args) => digests::run(&context, args),
        Command::Image(args) => image::run(&context, args),
        Command::Pallet(args) => pallet::run(&context, args),
        Command::Publish(args) => publish::run(&context, args),
        Command::Sigs(args) => sigs::run(&context, args),
        Command::Policy(args) => policy::run(&context, args),
        Command::Preseed(args) => preseed::run(&context, args),
        Command::Keys(args) => keys::run(&context, args),
        Command::Release(args) => release::run(&context, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Lint(args) => lint::run(&context, args),
        Command::Diff(args) => diff::run(&context, args),
        Command::Reproduce(args) => reproduce::run(&context, args),
    }
}
