//! The orchestrator: the one place that runs the loop — observe, judge,
//! decide, record, act, verify — and the only code that calls an executor.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::executor::{ActionPlan, Executor, Planner, Verification};
use crate::judge::{JudgeResult, Verdict, judge};
use crate::ledger::{Ledger, LedgerError, RecordKind, digest};
use crate::model::{Assessor, Consultation, Deliberation, Usage};
use crate::policy::{
    Decision, History, ModelInput, PolicyFile, PolicyInput, PolicyOutcome, Proposal, ReleaseFacts, RunMode, evaluate,
};
use crate::signals::{Observation, SignalSource};
use crate::{Error, telemetry};

/// What may act on the target. An advisory run holds only a [`Planner`], so
/// it has nothing that could execute.
pub enum Actuation {
    /// Dry run / advise: plans are shown, never executed.
    Advisory(Arc<dyn Planner>),
    /// Acting run: the executor for the one declared target.
    Live(Arc<dyn Executor>),
}

impl Actuation {
    fn mode(&self) -> RunMode {
        match self {
            Actuation::Advisory(_) => RunMode::Advise,
            Actuation::Live(_) => RunMode::Act,
        }
    }
}

/// How a release ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Promoted and verified.
    Promoted,
    /// Rolled back and verified.
    RolledBack,
    /// Held for a human: the action ran but the system does not show it
    /// took effect. Nothing is retried; the target's state needs a look.
    ActionNotVerified {
        /// Which action.
        action: crate::executor::ActionKind,
        /// What was read back.
        observed: String,
    },
    /// Held for a human: the action failed (the ledger holds the error), so
    /// the target may be in either state. Nothing is retried.
    ActionFailed {
        /// Which action.
        action: crate::executor::ActionKind,
        /// Error text.
        error: String,
    },
    /// Advisory run: this is what would have been done.
    Recommended {
        /// The decision.
        decision: Decision,
        /// The exact plan, when the decision acts.
        plan: Option<ActionPlan>,
    },
    /// A human must approve.
    AwaitingApproval {
        /// Why.
        reason: String,
        /// What would happen on approval.
        proposed: Proposal,
    },
    /// Held for a human.
    Held {
        /// Why.
        reason: String,
    },
    /// Policy refused.
    Denied {
        /// Why.
        reason: String,
    },
    /// Stopped by a signal between ticks; no action was left half done.
    Interrupted,
}

/// One tick, as shown to a live display.
pub struct TickReport<'a> {
    /// Tick number from 1.
    pub tick: u64,
    /// Release clock, seconds.
    pub now_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// The judge's result.
    pub judge: &'a JudgeResult,
    /// Policy's decision and trace.
    pub outcome: &'a PolicyOutcome,
    /// Ledger sequence number of the tick record.
    pub seq: i64,
}

/// Receives progress (a terminal display, plain log lines, or nothing).
pub trait Observer: Send {
    /// After each tick is recorded.
    fn on_tick(&mut self, _tick: &TickReport<'_>) {}
    /// Before an action runs (the intent is recorded).
    fn on_intent(&mut self, _plan: &ActionPlan) {}
    /// After an action ran and was verified.
    fn on_outcome(
        &mut self,
        _plan: &ActionPlan,
        _result: &Result<String, String>,
        _verification: Option<&Verification>,
    ) {
    }
}

/// A no-op observer.
pub struct Quiet;
impl Observer for Quiet {}

/// What `run_release` returns.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Release id in the ledger.
    pub release_id: String,
    /// How it ended.
    pub status: ReleaseStatus,
    /// Ticks judged.
    pub ticks: u64,
    /// Release time of the final decision, seconds.
    pub decided_at_s: u64,
    /// Judge result at the final tick.
    pub final_judge: Option<JudgeResult>,
    /// Rules that produced the final decision.
    pub final_rules: Vec<crate::policy::RuleHit>,
    /// The signal source's error at the final tick, if it failed.
    pub signal_failure: Option<String>,
    /// The last observation, for reports and charts.
    pub last_observation: Option<Observation>,
    /// The latest consultation of the model, if one happened.
    pub consultation: Option<Consultation>,
    /// Model calls and tokens spent on this release.
    pub model_usage: Usage,
    /// A model is configured for this run.
    pub model_configured: bool,
}

/// One release to run.
pub struct ReleaseRun<'a> {
    /// Facts for policy.
    pub facts: ReleaseFacts,
    /// Seconds of release time between ticks.
    pub tick_s: u64,
    /// Length of the analysis window, seconds.
    pub duration_s: u64,
    /// Real time to wait between ticks (an accelerated clock for demos, the tick itself live).
    pub pace: Duration,
    /// The policy.
    pub policy: &'a PolicyFile,
    /// The ledger.
    pub ledger: &'a Ledger,
    /// Flips to `true` to stop between ticks (SIGINT/SIGTERM).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The model, when one is configured; consulted at decision points only.
    pub model: Option<Arc<Assessor>>,
}

fn failed_observation_result(now_s: u64, reason: &str) -> JudgeResult {
    JudgeResult {
        verdict: Verdict::Inconclusive,
        now_s,
        window_complete: false,
        findings: vec![],
        summary: format!("no observation: {reason}"),
    }
}

impl ReleaseRun<'_> {
    /// Run the release until a terminal decision, recording everything.
    pub async fn run(
        &self,
        source: &dyn SignalSource,
        actuation: &Actuation,
        observer: &mut dyn Observer,
    ) -> Result<RunOutcome, Error> {
        let f = &self.facts;
        let span = info_span!(telemetry::SPAN_RELEASE, release = %f.release_id, service = %f.service);
        self.run_inner(source, actuation, observer).instrument(span).await
    }

    async fn run_inner(
        &self,
        source: &dyn SignalSource,
        actuation: &Actuation,
        observer: &mut dyn Observer,
    ) -> Result<RunOutcome, Error> {
        let f = &self.facts;
        let mode = actuation.mode();
        let started = json!({ "facts": f, "source": source.name(), "mode": mode, "duration_s": self.duration_s,
            "policy_digest": digest(serde_json::to_string(self.policy).map_err(LedgerError::from)?.as_bytes()) });
        self.ledger.append(&f.release_id, RecordKind::ReleaseStarted, "agent", &started).await?;
        let tick_s = self.tick_s.max(1);
        let mut now_s = 0;
        let mut tick = 0;
        let mut model = Deliberation::new(self.model.clone());
        let mut stop = self.stop.clone();
        let mut last_obs: Option<Observation> = None;
        loop {
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                return self.interrupted(tick, now_s, last_obs, &model).await;
            }
            now_s = (now_s + tick_s).min(self.duration_s);
            tick += 1;
            let span = info_span!(telemetry::SPAN_TICK, tick, now_s);
            let (obs, failure) = match source.observe(now_s).instrument(span.clone()).await {
                Ok(o) => (Some(o), None),
                Err(e) => {
                    warn!(parent: &span, error = %e, "Signal source failed; holding.");
                    (None, Some(e.to_string()))
                }
            };
            if obs.is_some() {
                last_obs.clone_from(&obs);
            }
            let judged = match &obs {
                Some(o) => judge(o, &self.policy.judge),
                None => failed_observation_result(now_s, failure.as_deref().unwrap_or("unknown")),
            };
            let now_ms = wall_ms();
            let window_ms = i64::from(self.policy.rate_limit.window_minutes) * 60_000;
            let history = History {
                automated_rollbacks_ms: self.ledger.automated_rollbacks(&f.target, now_ms - window_ms).await?,
            };
            let decide = |model: &ModelInput| {
                let input = PolicyInput {
                    judge: &judged,
                    model,
                    release: f,
                    history: &history,
                    mode,
                    signal_failure: failure.as_deref(),
                    now_ms,
                };
                evaluate(self.policy, &input)
            };
            let (outcome, consulted) = model.decide(f, obs.as_ref(), &judged, decide).instrument(span.clone()).await;
            let consultation = if consulted { model.last() } else { None };
            let body = tick_record(tick, now_s, obs.as_ref(), &judged, &outcome, model.input(), consultation, mode)
                .map_err(LedgerError::from)?;
            let receipt = self.ledger.append(&f.release_id, RecordKind::Tick, "agent", &body).await?;
            info!(parent: &span, decision = outcome.decision.label(), verdict = ?judged.verdict, seq = receipt.seq, "Tick judged.");
            observer.on_tick(&TickReport {
                tick,
                now_s,
                duration_s: self.duration_s,
                judge: &judged,
                outcome: &outcome,
                seq: receipt.seq,
            });
            let terminal = match &outcome.decision {
                Decision::Continue => None,
                Decision::Hold { reason } => {
                    (now_s >= self.duration_s).then(|| ReleaseStatus::Held { reason: reason.clone() })
                }
                Decision::RequireApproval { reason, proposed } => {
                    Some(ReleaseStatus::AwaitingApproval { reason: reason.clone(), proposed: proposed.clone() })
                }
                Decision::Deny { reason } => Some(ReleaseStatus::Denied { reason: reason.clone() }),
                Decision::Promote | Decision::Rollback { .. } => {
                    Some(self.act(&outcome.decision, actuation, now_s, observer).await?)
                }
            };
            if let Some(status) = terminal {
                let model_usage = model.usage();
                let end = json!({ "status": status, "ticks": tick, "decided_at_s": now_s, "model_usage": model_usage });
                self.ledger.append(&f.release_id, RecordKind::ReleaseFinished, "agent", &end).await?;
                return Ok(RunOutcome {
                    release_id: f.release_id.clone(),
                    status,
                    ticks: tick,
                    decided_at_s: now_s,
                    final_judge: Some(judged),
                    final_rules: outcome.trace,
                    signal_failure: failure,
                    last_observation: last_obs,
                    consultation: model.last().cloned(),
                    model_usage,
                    model_configured: model.configured(),
                });
            }
            if !self.pace.is_zero() {
                match stop.as_mut() {
                    // Woken early by a stop signal; the check at the top of the loop ends the run.
                    Some(s) => {
                        let _ = tokio::time::timeout(self.pace, s.changed()).await;
                    }
                    None => tokio::time::sleep(self.pace).await,
                }
            }
        }
    }

    async fn interrupted(
        &self,
        ticks: u64,
        now_s: u64,
        last: Option<Observation>,
        model: &Deliberation,
    ) -> Result<RunOutcome, Error> {
        let status = ReleaseStatus::Interrupted;
        let end = json!({ "status": status, "ticks": ticks, "decided_at_s": now_s, "model_usage": model.usage() });
        self.ledger.append(&self.facts.release_id, RecordKind::ReleaseFinished, "agent", &end).await?;
        Ok(RunOutcome {
            release_id: self.facts.release_id.clone(),
            status,
            ticks,
            decided_at_s: now_s,
            final_judge: None,
            final_rules: vec![],
            signal_failure: None,
            last_observation: last,
            consultation: model.last().cloned(),
            model_usage: model.usage(),
            model_configured: model.configured(),
        })
    }

    async fn act(
        &self,
        decision: &Decision,
        actuation: &Actuation,
        now_s: u64,
        observer: &mut dyn Observer,
    ) -> Result<ReleaseStatus, Error> {
        let planner: &dyn Planner = match actuation {
            Actuation::Advisory(p) => p.as_ref(),
            Actuation::Live(e) => e.as_ref(),
        };
        let plan = match decision {
            Decision::Rollback { plan } => planner.plan_rollback(plan, now_s),
            _ => planner.plan_promote(&self.facts.candidate_revision, now_s),
        };
        let plan = match plan {
            Ok(p) => p,
            Err(e) => return Ok(ReleaseStatus::Denied { reason: e.to_string() }),
        };
        let Actuation::Live(executor) = actuation else {
            return Ok(ReleaseStatus::Recommended { decision: decision.clone(), plan: Some(plan) });
        };
        // No ledger write, no action: the permit exists only once the intent is committed.
        let permit = self.ledger.record_intent(&self.facts.release_id, "agent", &plan).await?;
        observer.on_intent(&plan);
        let span = info_span!("action", plan = %plan.id, kind = ?plan.kind, target = %plan.target);
        let result = executor.execute(&plan, permit).instrument(span.clone()).await.map_err(|e| e.to_string());
        let verification = match &result {
            Ok(_) => Some(executor.verify(&plan).instrument(span).await.map_err(|e| e.to_string())),
            Err(_) => None,
        };
        let verified = verification.as_ref().and_then(|v| v.as_ref().ok());
        observer.on_outcome(&plan, &result, verified);
        let body = json!({ "plan_id": plan.id, "result": result, "verification": verification });
        self.ledger.append(&self.facts.release_id, RecordKind::Outcome, "agent", &body).await?;
        Ok(match (result, verification) {
            (Err(error), _) => ReleaseStatus::ActionFailed { action: plan.kind, error },
            (Ok(_), Some(Ok(v))) if v.verified => match plan.kind {
                crate::executor::ActionKind::Rollback => ReleaseStatus::RolledBack,
                crate::executor::ActionKind::Promote => ReleaseStatus::Promoted,
            },
            (Ok(_), Some(Ok(v))) => ReleaseStatus::ActionNotVerified { action: plan.kind, observed: v.observed },
            (Ok(_), Some(Err(e))) => ReleaseStatus::ActionNotVerified { action: plan.kind, observed: e },
            (Ok(_), None) => ReleaseStatus::ActionNotVerified { action: plan.kind, observed: "not verified".into() },
        })
    }
}

#[allow(clippy::too_many_arguments)] // one record, built from exactly what the tick saw
fn tick_record(
    tick: u64,
    now_s: u64,
    obs: Option<&Observation>,
    judged: &JudgeResult,
    outcome: &PolicyOutcome,
    model: &ModelInput,
    consulted: Option<&Consultation>,
    mode: RunMode,
) -> Result<serde_json::Value, serde_json::Error> {
    let inputs_digest = match obs {
        Some(o) => digest(serde_json::to_string(o)?.as_bytes()),
        None => "none".into(),
    };
    Ok(json!({
        "tick": tick,
        "now_s": now_s,
        "mode": mode,
        "inputs_digest": inputs_digest,
        "judge": judged,
        "model": model,
        "consultation": consulted,
        "prompt_version": consulted.map(|c| c.prompt_version.as_str()),
        "tool_calls": consulted.map(|c| c.tool_calls.as_slice()).unwrap_or_default(),
        "decision": outcome.decision,
        "rules": outcome.trace,
    }))
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
