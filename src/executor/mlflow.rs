//! The MLflow Model Registry executor: a model release is an alias (say
//! `champion`) moved from one version of a registered model to another, so a
//! rollback moves it back to the last-known-good version and a promotion to
//! the candidate — `POST /api/2.0/mlflow/registered-models/alias` — and
//! verification reads the alias back (`GET …/registered-models/alias`).
//!
//! Idempotent by construction: setting an alias to the version it already
//! names changes nothing, so a retry or a recovery after a crash is safe.

use super::{bad, http_url};
use crate::field::FieldError;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionKind, ActionPlan, Checked, Executor, ExecutorError, Planner, Verification};
use crate::policy::RollbackPlan;

/// An MLflow registry alias as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MlflowConfig {
    /// The tracking server, e.g. `http://mlflow.internal:5000` (its REST API lives under `/api/2.0/mlflow`).
    pub tracking_uri: String,
    /// The registered model's name.
    pub model: String,
    /// The alias serving reads (`champion`); candidate and last-known-good are versions of `model`.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// Name of an environment variable holding a bearer token (Databricks, an auth proxy); none: no auth.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Seconds per request.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_alias() -> String {
    "champion".into()
}

fn default_timeout() -> u64 {
    10
}

/// Whether `text` can name a version of a registered model: MLflow numbers them.
pub fn is_version(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Attempts at one request on connection errors and 5xx answers.
const ATTEMPTS: u32 = 3;

#[derive(Serialize)]
struct SetAlias<'a> {
    name: &'a str,
    alias: &'a str,
    version: &'a str,
}

#[derive(Deserialize)]
struct AliasAnswer {
    model_version: ModelVersion,
}

#[derive(Deserialize)]
struct ModelVersion {
    version: String,
}

/// MLflow's error body: `{"error_code": "...", "message": "..."}`.
#[derive(Deserialize)]
struct MlflowError {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

/// Moves one alias of one registered model.
pub struct MlflowExecutor {
    target: String,
    cfg: MlflowConfig,
    /// Read once at start; never logged or put in an error.
    token: Option<String>,
    http: reqwest::Client,
}

impl MlflowConfig {
    /// Every field within bounds; names the first that is not.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !http_url(&self.tracking_uri) {
            return bad("tracking_uri", "an http:// or https:// URL with a host");
        }
        if self.model.trim().is_empty() {
            return bad("model", "the registered model's name");
        }
        if self.alias.trim().is_empty() || is_version(&self.alias) {
            return bad("alias", "an alias name such as `champion` (not a version number)");
        }
        if self.token_env.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return bad("token_env", "the name of the variable holding the token, or no `token_env`");
        }
        if self.timeout_s == 0 {
            return bad("timeout_s", "seconds > 0");
        }
        Ok(())
    }
}

impl MlflowExecutor {
    /// An executor for `target`; reads the token variable now, so a missing one fails at start.
    pub fn new(target: impl Into<String>, cfg: MlflowConfig) -> Result<Self, ExecutorError> {
        let target = target.into();
        let token = match &cfg.token_env {
            Some(var) => Some(crate::secret::from_env(var).map_err(|_| {
                ExecutorError::setup(&target, format!("environment variable {var} (token_env) is not set"))
            })?),
            None => None,
        };
        Self::with_token(target, cfg, token)
    }

    /// A planner for an advisory run: it never reads the token (and so cannot act).
    pub fn planner(target: impl Into<String>, cfg: MlflowConfig) -> Result<Self, ExecutorError> {
        Self::with_token(target.into(), cfg, None)
    }

    fn with_token(target: String, cfg: MlflowConfig, token: Option<String>) -> Result<Self, ExecutorError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s.max(1)))
            .build()
            .map_err(|e| ExecutorError::setup_from(&target, "cannot build the HTTP client", e))?;
        Ok(Self { target, cfg, token, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.cfg.tracking_uri.trim_end_matches('/'))
    }

    fn version_of(&self, revision: &str) -> Result<(), ExecutorError> {
        if !is_version(revision) {
            return Err(ExecutorError::refused(
                &self.target,
                format!(
                    "revision `{revision}` is not a version of registered model `{}` (MLflow versions are numbers)",
                    self.cfg.model
                ),
            ));
        }
        Ok(())
    }

    /// One request, retried on connection errors and 5xx; the body of a 2xx answer.
    async fn send(&self, req: impl Fn() -> reqwest::RequestBuilder) -> Result<String, ExecutorError> {
        let mut last = ExecutorError::refused(&self.target, "MLflow was not asked");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut r = req();
            if let Some(t) = &self.token {
                r = r.bearer_auth(t);
            }
            match r.send().await {
                Ok(resp) if resp.status().is_success() => {
                    return resp
                        .text()
                        .await
                        .map_err(|e| ExecutorError::unreachable(&self.target, "MLflow unreachable", e));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    let why = serde_json::from_str::<MlflowError>(&body)
                        .map(|e| format!("{} {}", e.error_code, e.message))
                        .unwrap_or_else(|_| body.chars().take(200).collect());
                    last = ExecutorError::refused(&self.target, format!("MLflow answered {status}: {}", why.trim()));
                    if !status.is_server_error() {
                        break;
                    }
                }
                Err(e) => last = ExecutorError::unreachable(&self.target, "MLflow unreachable", e.without_url()),
            }
        }
        Err(last)
    }

    async fn set_alias(&self, version: &str) -> Result<String, ExecutorError> {
        self.version_of(version)?;
        let body = SetAlias { name: &self.cfg.model, alias: &self.cfg.alias, version };
        self.send(|| self.http.post(self.url("registered-models/alias")).json(&body)).await?;
        Ok(format!("alias `{}` of model `{}` set to version {version}", self.cfg.alias, self.cfg.model))
    }

    /// The version the alias names now.
    async fn alias_version(&self) -> Result<String, ExecutorError> {
        let query = [("name", self.cfg.model.as_str()), ("alias", self.cfg.alias.as_str())];
        let text = self.send(|| self.http.get(self.url("registered-models/alias")).query(&query)).await?;
        let answer: AliasAnswer = serde_json::from_str(&text).map_err(|e| {
            ExecutorError::refused(
                &self.target,
                format!("MLflow's alias answer is not {{\"model_version\": {{\"version\"}}}}: {e}"),
            )
        })?;
        Ok(answer.model_version.version)
    }

    fn step(&self, version: &str) -> String {
        format!(
            "POST {}: set alias `{}` of registered model `{}` to version {version}, then read the alias back",
            // Plans are printed and ledgered: credentials in the URL never are.
            crate::secret::redact_url(&self.url("registered-models/alias")),
            self.cfg.alias,
            self.cfg.model
        )
    }
}

impl Planner for MlflowExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        self.version_of(&rollback.to_revision)?;
        let steps = vec![self.step(&rollback.to_revision)];
        Ok(ActionPlan::new(ActionKind::Rollback, &self.target, &rollback.to_revision, at_s, steps))
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        self.version_of(revision)?;
        Ok(ActionPlan::new(ActionKind::Promote, &self.target, revision, at_s, vec![self.step(revision)]))
    }

    fn plan_raise(&self, _revision: &str, _weight: u8, _at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Err(super::cannot_raise(&self.target, "an `mlflow` alias (one version at a time)"))
    }
}

#[async_trait]
impl Executor for MlflowExecutor {
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError> {
        if let ActionKind::Raise { .. } = plan.kind {
            return Err(super::cannot_raise(&self.target, "an `mlflow` alias (one version at a time)"));
        }
        self.set_alias(&plan.to_revision).await
    }

    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError> {
        let now = self.alias_version().await?;
        Ok(Verification {
            verified: now == plan.to_revision,
            observed: format!("alias `{}` of model `{}` names version {now}", self.cfg.alias, self.cfg.model),
        })
    }

    async fn probe(&self) -> Result<String, ExecutorError> {
        let now = self.alias_version().await?;
        Ok(format!("MLflow model `{}`: alias `{}` names version {now}", self.cfg.model, self.cfg.alias))
    }
}
