//! The production Chat Completions client: async-openai over reqwest with a
//! per-request timeout and the retry policy of [`super::retry`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_openai::Client;
use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};

use super::ModelError;
use super::config::{ModelConfig, Provider};
use super::retry::RetryPolicy;

/// One endpoint's client; cheap to share between releases.
pub struct ChatClient {
    client: Client<Box<dyn Config>>,
    retries: Arc<AtomicU32>,
}

impl ChatClient {
    /// Build from validated config; reads the API key from the named variable.
    pub fn new(cfg: &ModelConfig) -> Result<Self, ModelError> {
        let key = cfg.api_key()?;
        let config: Box<dyn Config> = match cfg.provider {
            Provider::Openai => Box::new(OpenAIConfig::new().with_api_base(&cfg.base_url).with_api_key(key)),
            Provider::Azure => Box::new(
                AzureConfig::new()
                    .with_api_base(&cfg.base_url)
                    .with_api_key(key)
                    .with_deployment_id(cfg.azure_deployment.clone().unwrap_or_default())
                    .with_api_version(&cfg.azure_api_version),
            ),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s))
            .build()
            .map_err(ModelError::Client)?;
        let retries = Arc::new(AtomicU32::new(0));
        let policy = RetryPolicy::new(cfg.max_retries, Duration::from_secs(cfg.max_backoff_s), retries.clone());
        let service = tower::ServiceBuilder::new()
            .retry(policy)
            .and_then(super::retry::mark_validation_errors)
            .service(ReqwestService::new(http));
        Ok(Self { client: Client::with_config(config).with_http_service(service), retries })
    }

    /// Retries made so far by this client (all releases).
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// One Chat Completions call (after retries).
    pub async fn complete(&self, req: CreateChatCompletionRequest) -> Result<CreateChatCompletionResponse, ModelError> {
        self.client.chat().create(req).await.map_err(classify)
    }
}

/// The server's own message in an error body, whatever its dialect:
/// `{"error": {"message", "code": 400}}` (llama-server: a numeric code, which
/// async-openai cannot read), `{"error": "..."}`, `{"message"}`, `{"detail"}`.
pub fn server_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let text = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .or_else(|| v["message"].as_str())
        .or_else(|| v["detail"].as_str())
        .map(str::to_string)
        .or_else(|| v["detail"].as_array().map(|d| serde_json::Value::Array(d.clone()).to_string()))?;
    Some(text.chars().filter(|c| !c.is_control()).take(500).collect())
}

fn classify(e: OpenAIError) -> ModelError {
    match e {
        OpenAIError::Reqwest(e) if e.is_timeout() => ModelError::Timeout,
        OpenAIError::Reqwest(e) => ModelError::Unreachable(Box::new(e.without_url())),
        OpenAIError::ApiError(a) if a.status_code.as_u16() == 429 => ModelError::RateLimited(a.api_error.message),
        OpenAIError::ApiError(a) => {
            let message = server_message(&a.api_error.message).unwrap_or(a.api_error.message);
            ModelError::Api { status: a.status_code.as_u16(), message }
        }
        // An error body async-openai could not read (a numeric `code`): keep the server's message.
        OpenAIError::JSONDeserialize(e, body) => match server_message(&body) {
            Some(message) => ModelError::Refused(message),
            None => ModelError::BadResponse(e.to_string()),
        },
        other => ModelError::Unreachable(Box::new(other)),
    }
}
