//! What the agent shows of each release, kept current by its loop.

use std::sync::{Arc, PoisonError};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::executor::ActionPlan;
use crate::judge::JudgeResult;
use crate::ledger::{ActionResult, ApprovalRequested};
use crate::orchestrator::human::OperatorState;
use crate::orchestrator::seat::Waiting;
use crate::orchestrator::{Observer, ReleaseStatus, TickReport};
use crate::policy::Decision;
use crate::run::gate::GateObserver;
use crate::run::metrics::ActionLabels;

use super::{Agent, Key};

/// Where a release stands in the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReleaseState {
    /// Registered; first tick not yet judged.
    Starting,
    /// Being judged; acts within policy.
    Running,
    /// An operator held it: judged, never acted on.
    Held,
    /// Waiting for a human to answer an approval request.
    AwaitingApproval,
    /// Ended (see `status`).
    Finished,
    /// The agent stopped; the release continues when an agent starts again.
    Paused,
    /// Could not run (its configuration or a backend failed; see `error`).
    Failed,
    /// Another agent holds it (see `holder`), or this one waits its turn to
    /// claim it: not judged here; taken over if its holder stops.
    Standby,
}

impl ReleaseState {
    /// Every state, for gauges that must show zeros too.
    pub const ALL: [ReleaseState; 8] = [
        ReleaseState::Starting,
        ReleaseState::Running,
        ReleaseState::Held,
        ReleaseState::AwaitingApproval,
        ReleaseState::Finished,
        ReleaseState::Paused,
        ReleaseState::Failed,
        ReleaseState::Standby,
    ];

    /// Stored name.
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// A release as the API and dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    /// Configured or registered name.
    pub name: String,
    /// Ledger release id.
    pub release_id: String,
    /// Runtime.
    pub service: String,
    /// Target.
    pub target: String,
    /// Revision under judgement.
    pub candidate_revision: String,
    /// Where it stands.
    pub state: ReleaseState,
    /// Release time of the last tick, seconds.
    pub now_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// Policy's decision at the last tick.
    pub decision: Option<Decision>,
    /// The judge's result at the last tick (findings per metric).
    pub judge: Option<JudgeResult>,
    /// The series as last observed, for the dashboard's charts (not in the API's JSON).
    #[serde(skip)]
    pub observation: Option<Arc<crate::signals::Observation>>,
    /// The model's last consultation (verdict, cited evidence, or why none), when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consultation: Option<Arc<crate::assessor::Consultation>>,
    /// Metrics failing now.
    pub failing: Vec<String>,
    /// The open approval request, if any.
    pub pending_approval: Option<ApprovalRequested>,
    /// Ledger seq of the last tick.
    pub ledger_seq: i64,
    /// How it ended.
    pub status: Option<ReleaseStatus>,
    /// Why it could not run.
    pub error: Option<String>,
    /// Who registered it (`config` for configured releases).
    pub registered_by: String,
    /// The agent holding the release's target (judging and acting on it), as
    /// this agent last saw it; `None` before anyone claimed it, or when advising.
    pub holder: Option<String>,
}

/// Keeps the agent's table, the gate and the metrics current.
pub(super) struct AgentObserver {
    pub(super) agent: Arc<Agent>,
    pub(super) key: Key,
    pub(super) gate: GateObserver,
}

impl Observer for AgentObserver {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        self.gate.on_tick(t);
        let holder =
            (self.agent.mode == crate::policy::RunMode::Act).then(|| self.agent.runtime.agent.instance.clone());
        self.agent.metrics.tick(t.outcome.decision.label(), t.took, t.budget);
        if let Some(c) = t.consultation {
            self.agent.metrics.model_calls.inc_by(u64::from(c.usage.calls));
            self.agent.metrics.model_tokens(c.usage.prompt_tokens, c.usage.completion_tokens);
            if c.rejection.is_some() || c.error.is_some() {
                self.agent.metrics.model_rejections.inc();
            }
        }
        self.agent.update(&self.key, |v| {
            v.now_s = t.now_s;
            v.duration_s = t.duration_s;
            v.decision = Some(t.outcome.decision.clone());
            v.failing = t.judge.failing().map(|f| f.metric.clone()).collect();
            v.judge = Some(t.judge.clone());
            if let Some(o) = t.observation {
                v.observation = Some(o.clone());
            }
            if let Some(c) = t.consultation {
                v.consultation = Some(Arc::new(c.clone()));
            }
            v.ledger_seq = t.seq;
            if matches!(v.state, ReleaseState::Starting | ReleaseState::Standby) {
                v.state = ReleaseState::Running;
            }
            v.holder = holder;
        });
    }

    fn on_standby(&mut self, waiting: &Waiting) {
        let holder = crate::orchestrator::seat::holder_of(waiting).map(str::to_string);
        self.agent.update(&self.key, |v| {
            v.state = ReleaseState::Standby;
            v.holder = holder;
            // An open request is the holder's; an answer given here is relayed through the ledger.
            v.pending_approval = None;
        });
    }

    fn on_outcome(&mut self, plan: &ActionPlan, result: &ActionResult) {
        let labels = ActionLabels { action: plan.kind.label().into(), result: result.label().into() };
        self.agent.metrics.actions.get_or_create(&labels).inc();
    }

    fn on_approval(&mut self, request: Option<&ApprovalRequested>) {
        if let Some(r) = request {
            info!(release = %self.key.name, id = %r.request.id, "Approval request open.");
        } else if let Some(open) = self.agent.get(&self.key.name).and_then(|v| v.pending_approval) {
            let how = "closed (answered, expired or withdrawn; see the ledger)".to_string();
            self.agent.closed.lock().unwrap_or_else(PoisonError::into_inner).entry(open.request.id).or_insert(how);
        }
        let held = self.agent.table().get(&self.key.name).is_some_and(|e| *e.operator.borrow() == OperatorState::Held);
        self.agent.update(&self.key, |v| {
            v.pending_approval = request.cloned();
            v.state = match (request.is_some(), held) {
                (true, _) => ReleaseState::AwaitingApproval,
                (false, true) => ReleaseState::Held,
                (false, false) => ReleaseState::Running,
            };
        });
    }
}
