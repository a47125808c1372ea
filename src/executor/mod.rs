//! Executors: the only code that changes a system, behind one trait.
//!
//! [`Planner::plan_rollback`] says exactly what would change (what dry-run shows);
//! [`Guarded::execute`] does it, and needs an [`ExecutionPermit`], which only
//! the ledger issues after it has durably recorded the intent. Advisory runs
//! hold a [`Planner`] and no [`Executor`], so nothing can execute there.
//!
//! ```compile_fail
//! // A permit cannot be forged outside the ledger: its fields are private.
//! let permit = backstop::executor::ExecutionPermit { plan_id: String::new(), intent_seq: 0 };
//! ```
//!
//! ```compile_fail
//! // Nor can a checked plan be made around the guard, so no executor runs without one.
//! fn around(p: &backstop::executor::ActionPlan) -> backstop::executor::Checked<'_> {
//!     backstop::executor::Checked { plan: p }
//! }
//! ```
//!
//! ```compile_fail
//! // What an advisory run holds (a planner) cannot be put behind the guard,
//! // so it can never present one to `Ledger::record_intent`.
//! fn promote(p: std::sync::Arc<dyn backstop::executor::Planner>) -> backstop::executor::Guarded {
//!     backstop::executor::Guarded::new(p)
//! }
//! ```

mod command;
mod gateway_api;
mod guard;
mod haproxy;
mod kubernetes;
mod manual;
mod mlflow;
mod simulated;
mod webhook;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::field::FieldError;
use crate::policy::RollbackPlan;
pub use command::{CommandConfig, CommandExecutor};
pub use gateway_api::{GatewayApiConfig, GatewayApiExecutor};
pub(crate) use guard::ensure_target;
pub use guard::{Checked, Guarded};
pub use haproxy::{HaproxyConfig, HaproxyExecutor};
pub use kubernetes::{InferenceServiceRollback, KubernetesConfig, KubernetesExecutor, Workload};
pub use manual::ManualPlanner;
pub use mlflow::{MlflowConfig, MlflowExecutor, is_version as is_mlflow_version};
pub use simulated::SimulatedExecutor;
pub use webhook::{WebhookConfig, WebhookExecutor};

/// An executor as written in a release's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutorConfig {
    /// Drive the built-in simulator of this release's `simulator` source.
    Simulator,
    /// Set HAProxy server weights through its Runtime API.
    Haproxy(HaproxyConfig),
    /// Roll back a Kubernetes Deployment or abort an Argo Rollout.
    Kubernetes(KubernetesConfig),
    /// Set the weights of a Gateway API `HTTPRoute`'s two backends.
    GatewayApi(GatewayApiConfig),
    /// Run a program (argv, no shell), e.g. `helm rollback`.
    Command(CommandConfig),
    /// POST a signed JSON request to a webhook.
    Webhook(WebhookConfig),
    /// Move an MLflow Model Registry alias between versions of a registered model.
    Mlflow(MlflowConfig),
}

impl ExecutorConfig {
    /// The system resource this executor changes, derived from its own
    /// settings (not from the release's `target` string): an HAProxy
    /// backend on a socket, a Kubernetes workload, a webhook endpoint. Two
    /// releases may not act on one resource under different targets — their
    /// leases would not exclude each other. `None` where it cannot be known
    /// (a command) or is the release's own (the simulator).
    pub fn resource(&self) -> Option<String> {
        match self {
            ExecutorConfig::Simulator | ExecutorConfig::Command(_) => None,
            ExecutorConfig::Haproxy(h) => Some(format!("haproxy {} backend {}", h.socket.trim(), h.backend.trim())),
            ExecutorConfig::Kubernetes(k) => Some(format!(
                "kubernetes {} {:?} {}/{}",
                k.context.as_deref().unwrap_or("(current context)"),
                k.workload,
                k.namespace.trim(),
                k.name.trim()
            )),
            ExecutorConfig::Webhook(w) => {
                let url = w.url.split(['?', '#']).next().unwrap_or(&w.url);
                Some(format!("webhook {}", crate::secret::redact_url(url).trim_end_matches('/')))
            }
            ExecutorConfig::GatewayApi(g) => Some(format!(
                "httproute {} {}/{}",
                g.context.as_deref().unwrap_or("(current context)"),
                g.namespace.trim(),
                g.route.trim()
            )),
            ExecutorConfig::Mlflow(m) => Some(format!(
                "mlflow {} model {} alias {}",
                crate::secret::redact_url(m.tracking_uri.trim()).trim_end_matches('/'),
                m.model.trim(),
                m.alias.trim()
            )),
        }
    }

    /// Whether this executor can set the canary's share of traffic in
    /// steps (a release's `ramp` needs one that can). A complete table: a
    /// new executor must answer.
    pub fn ramps(&self) -> bool {
        match self {
            ExecutorConfig::Simulator | ExecutorConfig::Haproxy(_) | ExecutorConfig::GatewayApi(_) => true,
            ExecutorConfig::Kubernetes(k) => k.workload == Workload::InferenceService,
            ExecutorConfig::Command(_) | ExecutorConfig::Webhook(_) | ExecutorConfig::Mlflow(_) => false,
        }
    }

    /// Check every field at load, so a bad setting fails at start with its
    /// name, never at the moment a rollback is due. `Err(FieldError::of(field, expected))`,
    /// the field relative to the executor table.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            ExecutorConfig::Simulator => Ok(()),
            ExecutorConfig::Haproxy(h) => h.validate(),
            ExecutorConfig::Command(c) => c.validate(),
            ExecutorConfig::Webhook(w) => w.validate(),
            ExecutorConfig::Kubernetes(k) => k.validate(),
            ExecutorConfig::GatewayApi(g) => g.validate(),
            ExecutorConfig::Mlflow(m) => m.validate(),
        }
    }
}

/// `field` is wrong; `expected` says what would be right.
pub(crate) fn bad(field: &str, expected: &str) -> Result<(), FieldError> {
    Err(FieldError::new(field, expected))
}

pub(crate) use crate::field::is_http_url as http_url;

/// An executor could not plan, execute or verify.
#[derive(Debug, Error)]
pub enum ExecutorError {
    /// The plan names a target this executor was not configured for.
    #[error("plan targets `{requested}` but this executor only acts on `{configured}`")]
    TargetMismatch {
        /// Target in the plan.
        requested: String,
        /// Target declared in configuration.
        configured: String,
    },
    /// The permit was issued for a different plan.
    #[error("permit was issued for plan {permit_plan}, not {plan}")]
    PermitMismatch {
        /// Plan the permit covers.
        permit_plan: String,
        /// Plan presented.
        plan: String,
    },
    /// The executor cannot act at all: a secret variable unset, a file or
    /// program missing, a client that cannot be built. Fixed in configuration.
    #[error("action on `{target}` failed: {what}")]
    Setup {
        /// Target.
        target: String,
        /// What is missing or wrong.
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The system could not be reached (it may come back: nothing is retried blindly).
    #[error("action on `{target}` failed: {what}")]
    Unreachable {
        /// Target.
        target: String,
        /// What could not be reached.
        what: String,
        /// The transport's error.
        #[source]
        source: BoxError,
    },
    /// The system answered, refusing or failing the change, or with something unreadable.
    #[error("action on `{target}` failed: {answer}")]
    Refused {
        /// Target.
        target: String,
        /// What it answered (or what was wrong with the answer).
        answer: String,
    },
}

/// Any error, boxed, as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ExecutorError {
    /// `target`'s executor cannot act: `what` is missing or wrong.
    pub fn setup(target: &str, what: impl Into<String>) -> Self {
        ExecutorError::Setup { target: target.into(), what: what.into(), source: None }
    }

    /// `target`'s executor cannot act because of `source`.
    pub fn setup_from(target: &str, what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ExecutorError::Setup { target: target.into(), what: what.into(), source: Some(source.into()) }
    }

    /// `what` could not be reached.
    pub fn unreachable(target: &str, what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ExecutorError::Unreachable { target: target.into(), what: what.into(), source: source.into() }
    }

    /// What a Kubernetes API error means for `target`: a refusal (a status
    /// the API server answered), or an API server that could not be reached.
    pub fn kubernetes(target: &str, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => {
                ExecutorError::refused(target, format!("the Kubernetes API answered {}: {status}", status.code))
            }
            other => ExecutorError::unreachable(target, "the Kubernetes API is unreachable", other),
        }
    }

    /// The system refused or failed the change; `answer` says how.
    pub fn refused(target: &str, answer: impl Into<String>) -> Self {
        ExecutorError::Refused { target: target.into(), answer: answer.into() }
    }
}

/// What an action does.
#[derive(
    strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ActionKind {
    /// Send traffic back to the last-known-good revision.
    Rollback,
    /// Send all traffic to the canary.
    Promote,
    /// One step of a ramp: send `weight` percent of traffic to the canary
    /// (1–99) and the rest to the stable version. The release goes on.
    Raise {
        /// Percent of traffic the canary gets.
        weight: u8,
    },
}

impl ActionKind {
    /// The stored tag.
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// A refusal to plan a ramp step on an executor that cannot split traffic
/// (a release's configuration is refused earlier, at load; this is the
/// executor's own answer should a plan be asked for anyway).
pub(crate) fn cannot_raise(target: &str, what: &str) -> ExecutorError {
    ExecutorError::setup(target, format!("{what} cannot set the canary's share of traffic in steps (`ramp`)"))
}

/// Exactly what an action would change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActionPlan {
    /// Unique id, recorded with the intent and the outcome.
    pub id: String,
    /// What it does.
    pub kind: ActionKind,
    /// The declared target it touches.
    pub target: String,
    /// Revision traffic ends on.
    pub to_revision: String,
    /// Release clock time the plan was made, seconds.
    pub at_s: u64,
    /// Human-readable steps, in order.
    pub steps: Vec<String>,
}

impl ActionPlan {
    /// A plan with a fresh id.
    pub fn new(kind: ActionKind, target: &str, to_revision: &str, at_s: u64, steps: Vec<String>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            target: target.to_string(),
            to_revision: to_revision.to_string(),
            at_s,
            steps,
        }
    }
}

/// Proof that the intent to run `plan_id` is in the ledger. Only the ledger
/// constructs it; without one nothing executes.
#[derive(Debug)]
pub struct ExecutionPermit {
    plan_id: String,
    intent_seq: i64,
}

impl ExecutionPermit {
    /// Issued by the ledger right after the intent record is committed.
    pub(crate) fn issued_by_ledger(plan_id: &str, intent_seq: i64) -> Self {
        Self { plan_id: plan_id.to_string(), intent_seq }
    }

    /// Ledger sequence number of the recorded intent.
    pub fn intent_seq(&self) -> i64 {
        self.intent_seq
    }

    /// Fails unless this permit covers `plan`.
    pub fn check(&self, plan: &ActionPlan) -> Result<(), ExecutorError> {
        if self.plan_id == plan.id {
            Ok(())
        } else {
            Err(ExecutorError::PermitMismatch { permit_plan: self.plan_id.clone(), plan: plan.id.clone() })
        }
    }
}

/// Whether an executed action took effect, read back from the system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    /// The system is in the planned state.
    pub verified: bool,
    /// What was read back.
    pub observed: String,
}

/// Plans actions on one declared target. Safe in every mode: it changes nothing.
pub trait Planner: Send + Sync {
    /// The one target this planner may touch.
    fn target(&self) -> &str;

    /// The exact steps of a rollback.
    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError>;

    /// The exact steps of a promotion to `revision`.
    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError>;

    /// The exact steps of one ramp step: `weight` percent (1–99) of traffic
    /// to the canary `revision`. Executors that cannot split traffic refuse.
    fn plan_raise(&self, revision: &str, weight: u8, at_s: u64) -> Result<ActionPlan, ExecutorError>;
}

/// Changes a system. Reached only through [`Guarded`], which checks the
/// permit and the target once for every executor and hands over a
/// [`Checked`] plan that nothing else can make.
#[async_trait]
pub trait Executor: Planner {
    /// Carry out the plan.
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError>;

    /// Read the system back and check that the plan took effect.
    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError>;

    /// Reach the system without changing it (`config check`): what was read.
    async fn probe(&self) -> Result<String, ExecutorError>;
}
