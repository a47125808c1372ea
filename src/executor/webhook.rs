//! The webhook executor: POSTs the action as JSON, signed with HMAC-SHA256,
//! retried with backoff under one idempotency key so a receiver acts once.

use super::{bad, http_url};
use crate::field::FieldError;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{ActionKind, ActionPlan, Checked, Executor, ExecutorError, Planner, Verification};
use crate::policy::RollbackPlan;

/// Header carrying `v1=<hex HMAC-SHA256 of "<timestamp>.<METHOD>.<host>[:port]<path>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-backstop-signature";
/// Header carrying the unix-seconds timestamp that was signed.
pub const TIMESTAMP_HEADER: &str = "x-backstop-timestamp";
/// Header carrying the plan id; the same on every retry.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A webhook executor as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receives the action: POST, JSON body.
    pub url: String,
    /// Name of the environment variable holding the signing secret (never the secret itself).
    pub secret_env: String,
    /// Answers GET with JSON `{"revision": "..."}`; the action verifies when it names the planned revision.
    #[serde(default)]
    pub verify_url: Option<String>,
    /// Seconds per request.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Allow `http://` URLs (a signed body in clear text; for loopback and tests). Off: `https://` only.
    #[serde(default)]
    pub allow_http: bool,
    /// Retries after the first attempt on 429, 5xx and connection errors.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_timeout() -> u64 {
    10
}

fn default_retries() -> u32 {
    3
}

/// Signs and sends actions for one target.
pub struct WebhookExecutor {
    target: String,
    from_revision: String,
    cfg: WebhookConfig,
    /// The signing secret and the clock its timestamps come from; `None` for
    /// a planner built by `advise`, which never reads the secret.
    signer: Option<(Vec<u8>, std::sync::Arc<dyn crate::clock::Clock>)>,
    http: reqwest::Client,
}

/// What a signature covers besides the body: the request line a receiver
/// sees, so a signed body replayed to another endpoint (or as another
/// method) does not verify there.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `POST`.
    pub method: &'a str,
    /// The URL's host, with `:port` when the URL names one.
    pub authority: &'a str,
    /// The URL's path (and `?query`, if any).
    pub path: &'a str,
}

/// `v1=<hex>` over `"<timestamp>.<METHOD>.<authority><path>.<body>"`; `None`
/// only if the key were rejected (HMAC takes keys of any length).
pub fn sign(secret: &[u8], timestamp: i64, request: Signed<'_>, body: &[u8]) -> Option<String> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()?;
    mac.update(format!("{timestamp}.{}.{}{}.", request.method, request.authority, request.path).as_bytes());
    mac.update(body);
    Some(format!("v1={}", hex::encode(mac.finalize().into_bytes())))
}

/// The signed parts of `url`: authority (host[:port]) and path[?query].
pub fn signed_parts(url: &str) -> Option<(String, String)> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    Some((authority, path))
}

impl WebhookConfig {
    /// Every field within bounds; names the first that is not.
    pub fn validate(&self) -> Result<(), FieldError> {
        // A signed action in clear text can be read and its receiver spoofed.
        let scheme_ok = |u: &str| u.starts_with("https://") || (self.allow_http && u.starts_with("http://"));
        let want = if self.allow_http {
            "an http:// or https:// URL with a host"
        } else {
            "an https:// URL with a host (http:// only with allow_http = true)"
        };
        if !http_url(&self.url) || !scheme_ok(&self.url) {
            return bad("url", want);
        }
        if self.verify_url.as_deref().is_some_and(|u| !http_url(u) || !scheme_ok(u)) {
            return bad("verify_url", want);
        }
        if self.secret_env.trim().is_empty() {
            return bad("secret_env", "the name of the variable holding the signing secret");
        }
        Ok(())
    }
}

impl WebhookExecutor {
    /// Reads the secret from the environment now, so a missing one fails at
    /// start; signatures are stamped by `clock`.
    pub fn new(
        target: impl Into<String>,
        from_revision: impl Into<String>,
        cfg: WebhookConfig,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> Result<Self, ExecutorError> {
        let target = target.into();
        let secret = crate::secret::from_env(&cfg.secret_env).map_err(|_| {
            ExecutorError::setup(&target, format!("webhook secret variable `{}` is not set", cfg.secret_env))
        })?;
        let mut e = Self::planner(target, from_revision, cfg)?;
        e.signer = Some((secret.into_bytes(), clock));
        Ok(e)
    }

    /// Plans only (`advise`): the secret is neither read nor needed; `execute` refuses.
    pub fn planner(
        target: impl Into<String>,
        from_revision: impl Into<String>,
        cfg: WebhookConfig,
    ) -> Result<Self, ExecutorError> {
        let target = target.into();
        // No redirects: a 307 would re-POST the signed body to wherever it points.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(cfg.timeout_s.max(1)))
            .build()
            .map_err(|e| ExecutorError::setup_from(&target, "cannot build the HTTP client", e))?;
        Ok(Self { target, from_revision: from_revision.into(), cfg, signer: None, http })
    }

    /// The URL as it may be shown: credentials and tokens removed.
    /// `GET url` (the state endpoint): the URL as it may be shown, and the answer.
    async fn read_state(&self, url: &str) -> Result<(String, reqwest::Response), ExecutorError> {
        let shown = Self::shown(url);
        let resp =
            self.http.get(url).send().await.map_err(|e| {
                ExecutorError::unreachable(&self.target, format!("{shown} unreachable"), e.without_url())
            })?;
        Ok((shown, resp))
    }

    fn shown(url: &str) -> String {
        crate::secret::redact_url(url)
    }
}

/// The documented body of a webhook action (docs/configuration.md, executors): what the
/// receiver acts on, signed with the request line.
/// Fields in alphabetical order, as the body has always been written.
#[derive(serde::Serialize)]
struct WebhookBody<'a> {
    action: super::ActionKind,
    at_s: u64,
    from_revision: &'a str,
    plan_id: &'a str,
    steps: &'a [String],
    target: &'a str,
    to_revision: &'a str,
}

/// Reply bytes kept for the ledger; a receiver cannot flood it.
const MAX_REPLY: usize = 4 * 1024;

/// At most [`MAX_REPLY`] bytes of a reply, read chunk by chunk so a huge body is never held whole.
async fn capped_text(mut r: reqwest::Response) -> String {
    let mut buf: Vec<u8> = Vec::new();
    let mut more = false;
    while let Ok(Some(chunk)) = r.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_REPLY {
            buf.truncate(MAX_REPLY);
            more = true;
            break;
        }
    }
    let text: String = String::from_utf8_lossy(&buf).chars().filter(|c| !c.is_control() || *c == '\n').collect();
    if more { format!("{text}… (cut at {MAX_REPLY} bytes)") } else { text }
}

impl Planner for WebhookExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        let step = format!(
            "POST a signed rollback of {} to {} to {}",
            self.target,
            rollback.to_revision,
            Self::shown(&self.cfg.url)
        );
        Ok(ActionPlan::new(ActionKind::Rollback, &self.target, &rollback.to_revision, at_s, vec![step]))
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        let step =
            format!("POST a signed promotion of {} to {revision} to {}", self.target, Self::shown(&self.cfg.url));
        Ok(ActionPlan::new(ActionKind::Promote, &self.target, revision, at_s, vec![step]))
    }

    fn plan_raise(&self, _revision: &str, _weight: u8, _at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Err(super::cannot_raise(&self.target, "a `webhook` executor"))
    }
}

impl WebhookExecutor {
    /// The POST of `body`, signed at `ts` (Unix seconds) over its method,
    /// authority, path and body, with the plan's id as its idempotency key.
    fn signed_post(
        &self,
        secret: &[u8],
        ts: i64,
        plan_id: &str,
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder, ExecutorError> {
        let (authority, path) =
            signed_parts(&self.cfg.url).ok_or_else(|| ExecutorError::setup(&self.target, "url has no host"))?;
        let request = Signed { method: "POST", authority: &authority, path: &path };
        let signature =
            sign(secret, ts, request, body).ok_or_else(|| ExecutorError::setup(&self.target, "cannot sign"))?;
        Ok(self
            .http
            .post(&self.cfg.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(IDEMPOTENCY_HEADER, plan_id)
            .body(body.to_vec()))
    }
}

#[async_trait]
impl Executor for WebhookExecutor {
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError> {
        if let ActionKind::Raise { .. } = plan.kind {
            return Err(super::cannot_raise(&self.target, "a `webhook` executor"));
        }
        let (secret, clock) =
            self.signer.as_ref().ok_or_else(|| ExecutorError::setup(&self.target, "built to plan only: no secret"))?;
        let body = WebhookBody {
            action: plan.kind,
            at_s: plan.at_s,
            from_revision: &self.from_revision,
            plan_id: &plan.id,
            steps: &plan.steps,
            target: &plan.target,
            to_revision: &plan.to_revision,
        };
        let body = serde_json::to_vec(&body).map_err(|e| ExecutorError::setup_from(&self.target, "body", e))?;
        let mut last = ExecutorError::refused(&self.target, "not sent");
        let shown = Self::shown(&self.cfg.url);
        for attempt in 0..=self.cfg.retries {
            if attempt > 0 {
                // Exponential backoff with jitter from the plan id, so retries of many agents spread out.
                let jitter = u64::from(plan.id.as_bytes().first().copied().unwrap_or(0)) % 100;
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt.min(6)) + jitter)).await;
            }
            let sent = self.signed_post(secret, clock.now_ms() / 1000, &plan.id, &body)?.send().await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    let status = r.status();
                    let text = capped_text(r).await;
                    return Ok(format!("{shown} answered {status} after {} attempt(s): {text}", attempt + 1));
                }
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    let answer = format!("gave up after {} attempts: {shown} answered {}", attempt + 1, r.status());
                    last = ExecutorError::refused(&self.target, answer);
                }
                Ok(r) => {
                    return Err(ExecutorError::refused(
                        &self.target,
                        format!("{shown} refused the action: {}", r.status()),
                    ));
                }
                Err(e) => {
                    let what = format!("gave up after {} attempts: {shown} unreachable", attempt + 1);
                    last = ExecutorError::unreachable(&self.target, what, e.without_url());
                }
            }
        }
        Err(last)
    }

    async fn probe(&self) -> Result<String, ExecutorError> {
        let Some(url) = &self.cfg.verify_url else {
            return Ok(format!("{}: not probed (a POST would act; no verify_url to read)", Self::shown(&self.cfg.url)));
        };
        let (shown, resp) = self.read_state(url).await?;
        if !resp.status().is_success() {
            return Err(ExecutorError::refused(&self.target, format!("{shown} answered {}", resp.status())));
        }
        Ok(format!("{shown} answered {}", resp.status()))
    }

    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError> {
        let Some(url) = &self.cfg.verify_url else {
            return Ok(Verification { verified: false, observed: "no verify_url configured".into() });
        };
        let (shown, resp) = self.read_state(url).await?;
        if !resp.status().is_success() {
            return Ok(Verification { verified: false, observed: format!("{shown} answered {}", resp.status()) });
        }
        let doc: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| ExecutorError::refused(&self.target, format!("{shown}: not JSON: {}", e.without_url())))?;
        let revision = doc.get("revision").and_then(|v| v.as_str()).unwrap_or("");
        Ok(Verification {
            verified: revision == plan.to_revision,
            observed: format!("{shown} reports revision `{revision}`"),
        })
    }
}

#[cfg(test)]
mod tests;
