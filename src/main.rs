//! The `stagex` binary: parse the command line, dispatch, map errors to one
//! clear message and a non-zero exit code. All logic lives in the library.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = stagex::cli::Cli::parse();
    match stagex::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stagex: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
