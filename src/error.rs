//! The crate-level error: one variant per module's typed error.

use thiserror::Error;

/// Any error the library returns. Binaries turn it into a message and an
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
}

/// An error and its causes on one line: `outer: inner: root` (a cause the
/// message already ends with is not repeated).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !text.ends_with(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = c.source();
    }
    text
}
