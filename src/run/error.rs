//! The error the binaries see: one variant per layer's typed error, so the
//! CLI can tell a setting to fix (exit 2) from a backend that failed.

use thiserror::Error;

/// Any error a command can end with. Binaries turn it into a message and an
/// exit code; the library never panics on bad input.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration file or environment override is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A policy file is invalid.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyFileError),
    /// A scenario file is invalid.
    #[error(transparent)]
    Scenario(#[from] crate::signals::ScenarioError),
    /// A signal source failed.
    #[error(transparent)]
    Signal(#[from] crate::signals::SignalError),
    /// The audit ledger failed; no action may follow.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// A log source could not be set up (an unset credential variable).
    #[error("log source: {0}")]
    Logs(#[from] crate::logs::LogReadError),
    /// An executor failed to plan, execute or verify.
    #[error(transparent)]
    Executor(#[from] crate::executor::ExecutorError),
    /// A release could not be made runnable.
    #[error(transparent)]
    Prepare(#[from] crate::run::prepare::PrepareError),
}
