//! The `backstop` command line. Library errors become messages and exit codes here.

mod cli;

use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: a profile of three agents sharing
/// 3,000 releases spent about 29 % of its CPU in glibc malloc and free
/// (thousands of tasks allocating small records on every tick).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main()
}
