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

fn retryable(result: &Result<Response, OpenAIError>) -> Option<Option<Duration>> {
    match result {
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
