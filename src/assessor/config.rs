//! `[model]` in `backstop.toml`: which OpenAI-compatible endpoint to ask,
//! and how much a release may spend on it.

use crate::field::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which wire dialect of the Chat Completions API the endpoint speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI and every server that copies its API (vLLM, Ollama, llama.cpp's server).
    #[default]
    Openai,
    /// Azure OpenAI: `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=...`
    /// with an `api-key` header.
    Azure,
}

/// How the verdict's shape is requested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// `response_format: json_schema` with `strict: true` (OpenAI, vLLM, recent llama.cpp).
    #[default]
    JsonSchema,
    /// `response_format: json_object`, the schema given in the prompt, for servers
    /// without structured outputs. The reply is validated the same way.
    JsonObject,
}

/// The model endpoint. The API key is read from the environment variable
/// named in `api_key_env`; it is never written to files, logs or the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// OpenAI or Azure dialect.
    #[serde(default)]
    pub provider: Provider,
    /// Base URL including `/v1` for OpenAI-compatible servers
    /// (`https://api.openai.com/v1`, `http://localhost:8000/v1`); the resource URL for Azure.
    pub base_url: String,
    /// Model name (`gpt-4o-mini`, `Qwen/Qwen2.5-7B-Instruct`, `llama3.1`).
    pub name: String,
    /// Environment variable holding the API key; local servers accept any non-empty value.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Azure deployment id.
    #[serde(default)]
    pub azure_deployment: Option<String>,
    /// Azure API version.
    #[serde(default = "default_azure_api_version")]
    pub azure_api_version: String,
    /// Structured outputs or plain JSON mode.
    #[serde(default)]
    pub output: OutputMode,
    /// Seconds per HTTP request.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Retries on 429, 5xx and connection errors, with backoff, jitter and `Retry-After`.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Longest wait between retries, seconds; a longer `Retry-After` gives up instead.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_s: u64,
    /// Model turns per consultation (each tool round is one).
    #[serde(default = "default_turns")]
    pub max_turns: u32,
    /// Chat requests per release, over all consultations.
    #[serde(default = "default_calls")]
    pub max_calls_per_release: u32,
    /// Tokens (prompt + completion, as the server reports them) per release.
    #[serde(default = "default_tokens")]
    pub max_tokens_per_release: u64,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: f32,
    /// Most tokens one reply may generate (`max_tokens`); the verdict needs a few hundred.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Tokens the first prompt may take (system prompt, evidence, tool
    /// definitions); evidence that does not fit is left out by kind, least
    /// important first. Default: the server's context (llama.cpp `/props`)
    /// less `max_tokens`, else 8,000.
    #[serde(default)]
    pub max_prompt_tokens: Option<u64>,
    /// Real seconds a tick waits for a consultation (every turn and retry);
    /// on real-time ticks also under 80 % of the tick, so a slow model never
    /// delays one. Past it the judge decides that tick alone; live, the
    /// consultation goes on and its answer is taken at the first tick after it
    /// arrives (if still valid); in a replay or demo it is abandoned.
    #[serde(default = "default_deadline")]
    pub consultation_deadline_s: f64,
    /// Release seconds a verdict stays policy's input, counted from the tick
    /// it describes; after that the judge decides alone until the model is
    /// asked again (promotion always asks). A late answer older than this is
    /// dropped, and a live consultation is given up after this many seconds.
    #[serde(default = "default_verdict_valid")]
    pub verdict_valid_s: u64,
}

fn default_deadline() -> f64 {
    8.0
}

fn default_verdict_valid() -> u64 {
    300
}

fn default_max_tokens() -> u32 {
    1024
}

fn default_azure_api_version() -> String {
    "2024-10-21".into()
}
fn default_timeout() -> u64 {
    30
}
fn default_retries() -> u32 {
    3
}
fn default_max_backoff() -> u64 {
    20
}
fn default_turns() -> u32 {
    4
}
fn default_calls() -> u32 {
    16
}
fn default_tokens() -> u64 {
    60_000
}

impl ModelConfig {
    /// Field and expectation of the first invalid setting.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, e: &str| Err(FieldError::of(format!("model.{f}"), e.to_string()));
        if !crate::field::is_http_url(&self.base_url) {
            return bad("base_url", "an http:// or https:// URL (OpenAI-compatible servers: ending in /v1)");
        }
        if self.base_url.ends_with('/') {
            return bad("base_url", "no trailing slash (the client appends /chat/completions)");
        }
        if self.name.trim().is_empty() {
            return bad("name", "a model name");
        }
        if self.provider == Provider::Azure && self.azure_deployment.as_deref().is_none_or(str::is_empty) {
            return bad("azure_deployment", "the deployment id (required with provider = \"azure\")");
        }
        if self.timeout_s == 0 {
            return bad("timeout_s", "seconds > 0");
        }
        if self.max_turns == 0 || self.max_calls_per_release == 0 {
            return bad("max_turns", "at least one turn and one call");
        }
        if !(16..=32_768).contains(&self.max_tokens) {
            return bad("max_tokens", "tokens per reply from 16 to 32768");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("temperature", "a number from 0 to 2");
        }
        if !(self.consultation_deadline_s.is_finite() && (0.1..=600.0).contains(&self.consultation_deadline_s)) {
            return bad("consultation_deadline_s", "seconds from 0.1 to 600");
        }
        if self.max_prompt_tokens.is_some_and(|n| !(256..=1_000_000).contains(&n)) {
            return bad("max_prompt_tokens", "tokens from 256 to 1000000");
        }
        if self.verdict_valid_s == 0 {
            return bad("verdict_valid_s", "release seconds > 0");
        }
        Ok(())
    }

    /// The API key from the named variable; `none` for keyless local servers.
    pub fn api_key(&self) -> Result<String, super::ModelError> {
        match &self.api_key_env {
            None => Ok("none".into()),
            Some(var) => crate::secret::from_env(var).map_err(|_| super::ModelError::MissingKey(var.clone())),
        }
    }
}
