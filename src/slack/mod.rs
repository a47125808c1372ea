//! Chat-ops: a two-way Slack app on top of the agent. Every Slack action is
//! an agent call (the same library API the HTTP API calls) made as
//! `slack:<user id>`; policy decides who counts, the ledger records it.
//!
//! - [`wire`]: Slack's payloads and Block Kit, typed.
//! - [`web`]: the Web API methods used (base URL configurable, 429 honoured).
//! - [`verify`]: request signatures (HTTP mode).
//! - [`socket`] / [`http`]: the two transports; both hand deliveries to [`app::SlackApp`].
//! - [`command`]: `/backstop …` parsed into a [`command::Command`] (pure).
//! - [`quarantine`]: the "Clear quarantine…" button and the form it opens (pure).
//! - [`render`]: release messages and answers (pure; within Block Kit's limits).
//! - [`identity`]: users (deleted ones refused) and user groups, cached.
//! - [`notify`]: one message per release, updated in place, paced and queued,
//!   never in the way of a decision.

pub mod app;
pub mod command;
pub mod http;
pub mod identity;
pub mod notify;
pub mod quarantine;
pub mod render;
pub mod socket;
pub mod verify;
pub mod web;
pub mod wire;

use thiserror::Error;

pub use crate::config::{SlackMode, SlackSettings};

/// The credentials, read from the variables the settings name.
#[derive(Clone)]
pub struct Secrets {
    /// Bot token.
    pub bot: String,
    /// App-level token (Socket Mode only).
    pub app: Option<String>,
    /// Signing secret (HTTP mode only).
    pub signing: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

/// Slack could not start. Names the setting or variable; never a secret's value.
#[derive(Debug, Error)]
pub enum SlackError {
    /// A credential's variable is unset or empty.
    #[error("slack.{field}: environment variable `{var}` must hold {expected}")]
    Secret {
        /// Setting naming the variable.
        field: &'static str,
        /// The variable.
        var: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("slack: cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl Secrets {
    /// Read the credentials `settings` needs from `env`.
    pub fn load(settings: &SlackSettings, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, SlackError> {
        let read = |field: &'static str, var: &str, prefix: &'static str, expected: &'static str| {
            env(var).filter(|v| !v.trim().is_empty() && v.starts_with(prefix)).ok_or_else(|| SlackError::Secret {
                field,
                var: var.into(),
                expected,
            })
        };
        let bot = read("bot_token_env", &settings.bot_token_env, "xoxb-", "the bot token (xoxb-…)")?;
        let (app, signing) = match settings.mode {
            SlackMode::Socket => {
                let app = read("app_token_env", &settings.app_token_env, "xapp-", "the app-level token (xapp-…)")?;
                (Some(app), None)
            }
            SlackMode::Http => {
                let s = read("signing_secret_env", &settings.signing_secret_env, "", "the app's signing secret")?;
                (None, Some(s))
            }
        };
        Ok(Self { bot, app, signing })
    }
}
