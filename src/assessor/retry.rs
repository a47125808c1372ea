//! Retries for the model endpoint as a tower policy under async-openai's
//! client: 429, 5xx and connection errors are retried with exponential
//! backoff and full jitter, honouring `Retry-After` — unless the server asks
//! for a longer wait than the release can afford, in which case the call
//! fails now and the judge decides alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use rand::Rng;
use reqwest::Response;

/// One request's retry state; `retries` counts across requests for the ledger.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    max_retries: u32,
    max_backoff: Duration,
    attempt: u32,
    retries: Arc<AtomicU32>,
}

impl RetryPolicy {
    /// At most `max_retries` retries, waiting at most `max_backoff` each.
    pub fn new(max_retries: u32, max_backoff: Duration, retries: Arc<AtomicU32>) -> Self {
        Self { max_retries, max_backoff, attempt: 0, retries }
    }
}

/// Set by [`mark_validation_errors`] on a 5xx whose body says the request's
/// shape was refused: sending the same bytes again cannot succeed.
const NOT_RETRYABLE: &str = "x-backstop-not-retryable";

/// Error bodies read to classify a 5xx; longer ones are truncated.
const ERROR_BODY_CAP: usize = 64 * 1024;

fn retryable(result: &Result<Response, OpenAIError>) -> Option<Option<Duration>> {
    match result {
        Ok(r) if r.headers().contains_key(NOT_RETRYABLE) => None,
        Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => Some(retry_after(r)),
        Ok(_) => None,
        Err(OpenAIError::Reqwest(e)) if e.is_connect() => Some(None),
        Err(_) => None,
    }
}

/// `Retry-After` in seconds (the form rate limiters send); an HTTP date is
/// treated as absent and the backoff applies.
fn retry_after(r: &Response) -> Option<Duration> {
    let v = r.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

/// Some servers answer a request they cannot parse with a 500
/// (llama-cpp-python's FastAPI server: `Input should be 'text' or
/// 'json_object'` for `response_format: json_schema`). Such a body is read
/// (capped) and the response marked so the retry policy leaves it alone; the
/// body is handed on unchanged for the caller's error message.
pub async fn mark_validation_errors(r: Response) -> Result<Response, OpenAIError> {
    if !r.status().is_server_error() {
        return Ok(r);
    }
    let status = r.status();
    let headers = r.headers().clone();
    let mut r = r;
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_CAP {
        match r.chunk().await.map_err(OpenAIError::Reqwest)? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => break,
        }
    }
    body.truncate(ERROR_BODY_CAP);
    let validation = is_validation_error(&String::from_utf8_lossy(&body));
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    rebuilt.headers_mut().remove(reqwest::header::CONTENT_LENGTH);
    if validation {
        rebuilt.headers_mut().insert(NOT_RETRYABLE, http::HeaderValue::from_static("validation"));
    }
    Ok(Response::from(rebuilt))
}

/// Validation wording of the servers we know: pydantic/FastAPI (`Input
/// should be`, a `detail` list, `validation error`), OpenAI-style
/// `invalid_request_error`, and `unsupported` parameters.
fn is_validation_error(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    ["input should be", "validation error", "invalid_request_error", "\"detail\":[", "\"detail\": [", "unsupported"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// Full jitter: uniform in [0, min(cap, base * 2^attempt)].
pub fn backoff(attempt: u32, cap: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = Duration::from_millis(250).saturating_mul(2_u32.saturating_pow(attempt)).min(cap);
    ceiling.mul_f64(rng.random::<f64>())
}

impl tower::retry::Policy<HttpRequestFactory, Response, OpenAIError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

    fn retry(
        &mut self,
        _req: &mut HttpRequestFactory,
        result: &mut Result<Response, OpenAIError>,
    ) -> Option<Self::Future> {
        if self.attempt >= self.max_retries {
            return None;
        }
        let asked = retryable(result)?;
        let delay = match asked {
            Some(d) if d > self.max_backoff => {
                tracing::warn!(retry_after_s = d.as_secs_f64(), "Model endpoint asks for a longer wait than allowed.");
                return None;
            }
            Some(d) => d,
            None => backoff(self.attempt, self.max_backoff, &mut rand::rng()),
        };
        self.attempt += 1;
        self.retries.fetch_add(1, Ordering::Relaxed);
        tracing::info!(attempt = self.attempt, delay_ms = delay.as_millis() as u64, "Retrying the model endpoint.");
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, req: &HttpRequestFactory) -> Option<HttpRequestFactory> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn validation_bodies_are_told_apart_from_overload() {
        assert!(is_validation_error(
            r#"{"detail":[{"type":"literal_error","loc":["body","response_format","type"],"msg":"Input should be 'text' or 'json_object'"}]}"#
        ));
        assert!(is_validation_error(r#"{"error":{"type":"invalid_request_error","message":"bad"}}"#));
        assert!(!is_validation_error(r#"{"error":{"message":"the server is overloaded","code":503}}"#));
        assert!(!is_validation_error("upstream connect error"));
    }

    #[test]
    fn backoff_is_jittered_below_an_exponential_ceiling_and_the_cap() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let cap = Duration::from_secs(5);
        for attempt in 0..8 {
            let ceiling = Duration::from_millis(250).saturating_mul(2_u32.pow(attempt)).min(cap);
            let draws: Vec<Duration> = (0..200).map(|_| backoff(attempt, cap, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Jitter spreads the draws: not all equal, and some in the lower half.
            assert!(draws.iter().any(|d| *d < ceiling / 2) && draws.iter().any(|d| *d > ceiling / 2));
        }
    }
}
