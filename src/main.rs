//! The `stagex` binary: parse the command line, dispatch, map errors to one
//! clear message and a non-zero exit code. All logic lives in the library.
use std::process::ExitCode;

use clap::Parser;

/// See Cargo.toml: small allocations dominate verification.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    quiet_error_backtraces();
    let cli = stagex::cli::Cli::parse();
    match stagex::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stagex: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Errors are values in this program: sequoia creates and drops many while
/// parsing a signature, and with `RUST_BACKTRACE=1` in the environment each
/// of them captured a backtrace, which cost more than verifying the
/// signature (a `stagex verify` of 1000 Ed25519 signatures took 2x longer).
/// `RUST_BACKTRACE` still gives panics their backtrace; set
/// `RUST_LIB_BACKTRACE=1` to have errors capture one too. Runs first, while
/// the process has one thread.
fn quiet_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}
