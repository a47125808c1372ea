//! `[slack]`: how the Slack app reaches Slack and where it posts (the app
//! itself is `crate::slack`).

use std::collections::BTreeMap;

use crate::field::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How Slack reaches backstop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlackMode {
    /// Socket Mode: backstop opens an outbound WebSocket (works behind a
    /// firewall; needs the app-level `xapp-` token).
    #[default]
    Socket,
    /// Slack POSTs to the agent's listener (`/slack/commands`,
    /// `/slack/interactive`, `/slack/events`), signed with the signing secret.
    Http,
}

/// `[slack]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Transport.
    #[serde(default)]
    pub mode: SlackMode,
    /// Variable holding the bot token (`xoxb-…`).
    #[serde(default = "default_bot_env")]
    pub bot_token_env: String,
    /// Variable holding the app-level token (`xapp-…`, Socket Mode).
    #[serde(default = "default_app_env")]
    pub app_token_env: String,
    /// Variable holding the signing secret (HTTP mode).
    #[serde(default = "default_secret_env")]
    pub signing_secret_env: String,
    /// Web API base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Channel id where release messages go (`C…`).
    pub channel: String,
    /// Channel id per service, where it differs.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// The agent's URL as people reach it, for links to release pages.
    #[serde(default)]
    pub agent_url: Option<String>,
    /// Seconds a user's standing and a group's members are cached (1..=3600).
    #[serde(default = "default_cache_s")]
    pub cache_s: u64,
    /// Milliseconds between two posts to one channel (Slack allows about one a second).
    #[serde(default = "default_interval_ms")]
    pub post_interval_ms: u64,
    /// Thread posts kept per release while Slack is unreachable (1..=10000); older ones are dropped, and recorded.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_bot_env() -> String {
    "SLACK_BOT_TOKEN".into()
}
fn default_app_env() -> String {
    "SLACK_APP_TOKEN".into()
}
fn default_secret_env() -> String {
    "SLACK_SIGNING_SECRET".into()
}
fn default_api_url() -> String {
    "https://slack.com/api/".into()
}
fn default_cache_s() -> u64 {
    300
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_queue() -> usize {
    100
}

impl SlackSettings {
    /// Field and expectation of the first invalid setting (relative to `slack.`).
    pub fn validate(&self) -> Result<(), FieldError> {
        let channel_id = |c: &str| {
            c.len() >= 3
                && c.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
                && c.starts_with(['C', 'G', 'D'])
        };
        if !channel_id(&self.channel) {
            return Err(FieldError::of("channel".into(), "a channel id such as C0123ABCD (ids, not #names)".into()));
        }
        for (service, c) in &self.channels {
            if !channel_id(c) {
                return Err(FieldError::of(format!("channels.{service}"), "a channel id such as C0123ABCD".into()));
            }
        }
        if !(self.api_url.starts_with("https://") || self.api_url.starts_with("http://")) {
            return Err(FieldError::of("api_url".into(), "an http(s) URL such as https://slack.com/api/".into()));
        }
        let envs = [
            ("bot_token_env", &self.bot_token_env),
            ("app_token_env", &self.app_token_env),
            ("signing_secret_env", &self.signing_secret_env),
        ];
        for (field, v) in envs {
            if v.trim().is_empty() || v.contains(['=', '\0']) {
                return Err(FieldError::of(field.into(), "the name of an environment variable".into()));
            }
        }
        if !(1..=3600).contains(&self.cache_s) {
            return Err(FieldError::of("cache_s".into(), "seconds from 1 to 3600".into()));
        }
        if !(1..=60_000).contains(&self.post_interval_ms) {
            return Err(FieldError::of("post_interval_ms".into(), "milliseconds from 1 to 60000".into()));
        }
        if !(1..=10_000).contains(&self.queue) {
            return Err(FieldError::of("queue".into(), "a count from 1 to 10000".into()));
        }
        Ok(())
    }

    /// The channel for `service`'s release messages.
    pub fn channel_for(&self, service: &str) -> &str {
        self.channels.get(service).map_or(self.channel.as_str(), String::as_str)
    }
}
