//! The `secret-inject` binary: parse the command line and run it (see [`secret_inject::cli`]).

use std::process::ExitCode;

use clap::Parser as _;
use secret_inject::cli::Cli;

fn main() -> ExitCode {
    Cli::parse().run()
}
