//! The model in the loop: an OpenAI-compatible chat model consulted at
//! decision points. It sees the judge's findings and the evidence (each item
//! with an id), may call read-only tools, and answers with a structured
//! [`CanaryVerdict`] that is validated before policy sees it as a
//! [`crate::policy::ModelInput`]. The model proposes; policy disposes.

mod assess;
pub mod budget;
mod client;
mod config;
mod deliberate;
pub mod evidence;
pub mod prompt;
mod retry;
pub mod tools;
mod trigger;
pub mod verdict;

pub use assess::{Ask, Assessor, Consultation, ModelSession, ToolCallRecord, Usage};
pub use client::ChatClient;
pub use config::{ModelConfig, OutputMode, Provider};
pub use deliberate::{Deliberation, Timing};
pub use retry::backoff;
pub use trigger::{Trigger, TriggerState};
pub use verdict::{CanaryVerdict, Claim, Health, RecommendedAction, Rejection, Staleness, VerdictFinding};

use thiserror::Error;

/// Which per-release budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// Calls: this many used of the allowed.
    Calls {
        /// Used.
        used: u32,
        /// Allowed (`max_calls_per_release`).
        max: u32,
    },
    /// Tokens: this many used of the allowed.
    Tokens {
        /// Used.
        used: u64,
        /// Allowed (`max_tokens_per_release`).
        max: u64,
    },
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spent::Calls { used, max } => write!(f, "{used} of {max} calls"),
            Spent::Tokens { used, max } => write!(f, "{used} of {max} tokens"),
        }
    }
}

/// Why the model gave no usable answer. None of these causes an action:
/// the judge decides alone (and policy holds where it requires the model).
#[derive(Debug, Error)]
pub enum ModelError {
    /// The variable named in `model.api_key_env` is not set.
    #[error("model.api_key_env: environment variable {0} is not set")]
    MissingKey(String),
    /// The HTTP client could not be built.
    #[error("model client")]
    Client(#[source] reqwest::Error),
    /// The request timed out (after retries).
    #[error("model endpoint timed out")]
    Timeout,
    /// The whole consultation passed its deadline.
    #[error("the consultation passed its {} ms deadline", .0.as_millis())]
    Deadline(std::time::Duration),
    /// Connection failed (after retries).
    #[error("model endpoint unreachable")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 429 after retries.
    #[error("model endpoint rate limited: {0}")]
    RateLimited(String),
    /// Another HTTP error.
    #[error("model endpoint answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server refused the request with an error body of its own dialect.
    #[error("model endpoint refused the request: {0}")]
    Refused(String),
    /// The reply was not the Chat Completions wire format.
    #[error("model reply is not a chat completion: {0}")]
    BadResponse(String),
    /// A prompt template failed to render.
    #[error("prompt template `{template}`")]
    Prompt {
        /// The template.
        template: String,
        /// Why.
        #[source]
        source: minijinja::Error,
    },
    /// The per-release call or token budget is spent.
    #[error("model budget for this release is spent: {0}")]
    Budget(Spent),
    /// The model declined to answer (its `refusal` field).
    #[error("the model refused: {0}")]
    Declined(String),
    /// The conversation ran out of turns before a verdict.
    #[error("no verdict within {turns} turns")]
    NoVerdict {
        /// Turns allowed.
        turns: u32,
    },
    /// A request message could not be built.
    #[error("cannot build a chat message")]
    Message(#[source] async_openai::error::OpenAIError),
}
