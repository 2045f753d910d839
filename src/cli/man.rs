//! Owns: `stagex man --out DIR`: one roff man page per command and
//! subcommand (`stagex.1`, `stagex-sign.1`, `stagex-sigs-sync.1`, ...),
//! generated from the clap definition, each written atomically.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory};

use super::Cli;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory the pages are written to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = Vec::new();
    let page = Page {
        file_stem: "stagex".into(),
        typed: "stagex".into(),
    };
    write_pages(&Cli::command(), &page, &args.out, &mut written)?;
    for path in &written {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// How one page is named: the file (`stagex-sigs-sync.1`) and the command
/// its synopsis shows, as users type it (`stagex sigs sync`).
struct Page {
    file_stem: String,
    typed: String,
}

impl Page {
    fn child(&self, sub: &str) -> Page {
        Page {
            file_stem: format!("{}-{sub}", self.file_stem),
            typed: format!("{} {sub}", self.typed),
        }
    }
}

/// Writes the page of `command` and, recursively, one page per visible
/// subcommand.
fn write_pages(
    command: &clap::Command,
    page: &Page,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let command = command
        .clone()
        .name(page.file_stem.clone())
        .bin_name(page.typed.clone());
    let mut roff = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut roff)
        .with_context(|| format!("rendering the man page of `{}`", page.typed))?;
    let path = out.join(format!("{}.1", page.file_stem));
    crate::oci::layout::write_atomic(&path, &roff)?;
    written.push(path);
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        if sub.get_name() != "help" {
            write_pages(sub, &page.child(sub.get_name()), out, written)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command_with_the_typed_synopsis() {
        let dir = tempfile::tempdir().unwrap();
        run(ManArgs {
            out: dir.path().to_path_buf(),
        })
        .unwrap();
        let sync = std::fs::read_to_string(dir.path().join("stagex-sigs-sync.1")).unwrap();
        assert!(sync.contains("stagex sigs sync"), "{sync}");
        assert!(sync.contains("\\-\\-prune"), "{sync}");
        for sub in Cli::command().get_subcommands() {
            let page = dir.path().join(format!("stagex-{}.1", sub.get_name()));
            assert!(page.is_file(), "{}", page.display());
        }
        assert!(!dir.path().join("stagex-help.1").exists());
    }
}
