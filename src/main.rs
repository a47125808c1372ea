//! The `backstop` command line. Library errors become messages and exit codes here.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
