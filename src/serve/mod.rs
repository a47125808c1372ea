//! The gate endpoint of `backstop serve`: rollout engines that already move
//! traffic (Argo Rollouts, Flagger) ask backstop what to do.
//!
//! The gate answers policy's **decision**, never a bare judge verdict, so no
//! engine can get around policy: an irreversible release, a freeze window, an
//! advisory autonomy or a model hold reach the engine as a pause, never as a
//! rollback or a promotion policy did not decide. [`gate_verdict`] and
//! [`Contract::status`] are the whole mapping, pure and tested cell by cell.
//!
//! - `GET|POST /v1/gates/{release}` — Argo Rollouts' `web` provider: always
//!   HTTP 200 with the answer as JSON (a non-2xx there is an Error).
//! - `?contract=flagger-rollout` — Flagger's `rollout` hook: non-2xx is a
//!   failed check (Flagger rolls back), so only `fail` gets 412.
//! - `?contract=flagger-confirm-traffic-increase` and
//!   `?contract=flagger-confirm-promotion` — Flagger halts while these are
//!   non-2xx: traffic grows only while the analysis runs clean or passed, and
//!   promotion only once policy promotes.
//! - `?revision=R` — the revision the engine is rolling out. Every answer
//!   names the revision it judged. Asked about another revision, the gate
//!   starts a new analysis of it (the earlier one is aborted: the engine has
//!   moved on) and answers for it; where it may not start one (a caller
//!   without the `register` scope, a malformed revision) it answers
//!   `inconclusive` (a pause), so a verdict is never applied to a revision it
//!   was not about.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod guard;
pub mod listen;

use crate::ledger::Actor;
use crate::orchestrator::human::OperatorState;
use crate::orchestrator::{Observer, ReleaseStatus, TickReport};
use crate::policy::Decision;
use crate::run::agent::Agent;
use auth::{Caller, Scope};

/// What the gate tells a rollout engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// Policy promotes.
    Pass,
    /// Policy rolls back.
    Fail,
    /// Policy continues and the window is still running.
    Running,
    /// Policy holds, asks a human, or denies (or the revision asked about is not
    /// the one judged): the engine should pause, neither promote nor roll back.
    Inconclusive,
}

/// Policy's decision as a gate verdict. `window_running`: the analysis
/// window has not ended yet.
pub fn gate_verdict(decision: &Decision, window_running: bool) -> GateVerdict {
    match decision {
        Decision::Rollback { .. } => GateVerdict::Fail,
        Decision::Promote => GateVerdict::Pass,
        Decision::Continue if window_running => GateVerdict::Running,
        Decision::Continue | Decision::Hold { .. } | Decision::RequireApproval { .. } | Decision::Deny { .. } => {
            GateVerdict::Inconclusive
        }
    }
}

/// Where the release a gate answers for stands, beyond its last tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum GatePhase {
    /// Being judged: the answer follows policy's decision at the last tick.
    #[default]
    Judging,
    /// An operator holds it: judged, never advanced.
    Held,
    /// It ended (policy, a person's answer, an abort, an expiry): the answer follows how.
    Ended {
        /// How it ended.
        status: Box<ReleaseStatus>,
    },
    /// It could not run (a broken configuration or backend).
    Failed,
}

/// The answer for a release in `phase` whose last tick decided `decision`:
/// the release's real state to its end, never `running` or `pass` for a
/// release a person or policy stopped.
pub fn gate_answer(decision: &Decision, window_running: bool, phase: &GatePhase) -> GateVerdict {
    match phase {
        GatePhase::Judging => gate_verdict(decision, window_running),
        GatePhase::Held | GatePhase::Failed => GateVerdict::Inconclusive,
        GatePhase::Ended { status } => ended_verdict(status),
    }
}

/// The verdict of an ended release. A failed or unverified rollback is
/// still a rollback policy decided (the engine should roll back too); a
/// promotion that did not take is a pause; every stop by a person is a pause.
pub fn ended_verdict(status: &ReleaseStatus) -> GateVerdict {
    use crate::executor::ActionKind;
    match status {
        ReleaseStatus::Promoted => GateVerdict::Pass,
        ReleaseStatus::RolledBack => GateVerdict::Fail,
        ReleaseStatus::ActionNotVerified { action, .. }
        | ReleaseStatus::ActionFailed { action, .. }
        | ReleaseStatus::ActionUnresolved { action, .. } => match action {
            ActionKind::Rollback => GateVerdict::Fail,
            ActionKind::Promote => GateVerdict::Inconclusive,
        },
        ReleaseStatus::Recommended { decision, .. } => gate_verdict(decision, false),
        ReleaseStatus::AwaitingApproval { .. }
        | ReleaseStatus::Held { .. }
        | ReleaseStatus::Denied { .. }
        | ReleaseStatus::Interrupted
        | ReleaseStatus::Aborted { .. } => GateVerdict::Inconclusive,
    }
}

/// The protocol of the engine asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contract {
    /// Argo Rollouts' `web` provider: always 200, the JSON decides.
    Argo,
    /// Flagger's `rollout` webhook: non-2xx is a failed check.
    FlaggerRollout,
    /// Flagger's `confirm-traffic-increase` webhook: non-2xx halts traffic growth.
    FlaggerConfirmTrafficIncrease,
    /// Flagger's `confirm-promotion` webhook: non-2xx halts promotion.
    #[serde(alias = "flagger-promotion")]
    FlaggerConfirmPromotion,
}

impl Contract {
    /// The HTTP status this contract gets for `verdict`.
    pub fn status(self, verdict: GateVerdict) -> StatusCode {
        use GateVerdict::*;
        match (self, verdict) {
            (Contract::Argo, _) => StatusCode::OK,
            (Contract::FlaggerRollout, Fail) => StatusCode::PRECONDITION_FAILED,
            (Contract::FlaggerRollout, Pass | Running | Inconclusive) => StatusCode::OK,
            (Contract::FlaggerConfirmTrafficIncrease, Pass | Running) => StatusCode::OK,
            (Contract::FlaggerConfirmTrafficIncrease, Fail | Inconclusive) => StatusCode::PRECONDITION_FAILED,
            (Contract::FlaggerConfirmPromotion, Pass) => StatusCode::OK,
            (Contract::FlaggerConfirmPromotion, Fail | Running | Inconclusive) => StatusCode::PRECONDITION_FAILED,
        }
    }
}

/// What a gate answers for one release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateView {
    /// Release name.
    pub release: String,
    /// The revision this answer is about.
    pub revision: String,
    /// What the engine should do, from policy's decision.
    pub verdict: GateVerdict,
    /// Policy's decision at the last tick, with its reason.
    pub decision: Decision,
    /// Release time of the last tick, seconds.
    pub now_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// The judge's one-line summary.
    pub summary: String,
    /// Metrics failing now.
    pub failing: Vec<String>,
    /// Guards that fired (canary or shared breach), with where and when.
    #[serde(default)]
    pub guard_hits: Vec<crate::judge::GuardNote>,
    /// Judging, held by an operator, or ended (and how).
    #[serde(flatten)]
    pub phase: GatePhase,
}

/// The latest answer for every served release.
#[derive(Clone, Default)]
pub struct GateBoard {
    views: Arc<Mutex<HashMap<String, GateView>>>,
}

impl GateBoard {
    /// Register `release` (judging `revision`) before its first tick, so the gate answers `running`.
    pub fn register(&self, release: &str, revision: &str, duration_s: u64) {
        let view = GateView {
            release: release.into(),
            revision: revision.into(),
            verdict: GateVerdict::Running,
            decision: Decision::Continue,
            now_s: 0,
            duration_s,
            summary: "analysis starting".into(),
            failing: vec![],
            guard_hits: vec![],
            phase: GatePhase::Judging,
        };
        self.lock().insert(release.into(), view);
    }

    /// An operator held, resumed or aborted `release`: a hold or an abort
    /// pauses the engine at once (an abort's end follows with [`GateBoard::ended`]).
    pub fn operator(&self, release: &str, state: OperatorState) {
        let mut views = self.lock();
        let Some(view) = views.get_mut(release).filter(|v| !matches!(v.phase, GatePhase::Ended { .. })) else {
            return;
        };
        view.phase = match state {
            OperatorState::Running => GatePhase::Judging,
            OperatorState::Held | OperatorState::Aborted => GatePhase::Held,
        };
        view.verdict = gate_answer(&view.decision, view.now_s < view.duration_s, &view.phase);
    }

    /// `release` judging `revision` ended with `status` (or, `None`, could not run).
    pub fn ended(&self, release: &str, revision: &str, status: Option<&ReleaseStatus>) {
        let mut views = self.lock();
        let Some(view) = views.get_mut(release).filter(|v| v.revision == revision) else { return };
        view.phase = match status {
            Some(s) => GatePhase::Ended { status: Box::new(s.clone()) },
            None => GatePhase::Failed,
        };
        view.verdict = gate_answer(&view.decision, false, &view.phase);
        if let Some(s) = status {
            view.summary = format!("release ended: {}", s.label());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GateView>> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current view of `release`.
    pub fn get(&self, release: &str) -> Option<GateView> {
        self.lock().get(release).cloned()
    }

    /// An observer that keeps this board's entry for `release` current
    /// while it judges `revision` (not after another revision took over).
    pub fn observer(&self, release: &str, revision: &str) -> GateObserver {
        GateObserver { board: self.clone(), release: release.into(), revision: revision.into() }
    }
}

/// Updates a [`GateBoard`] at every tick.
pub struct GateObserver {
    board: GateBoard,
    release: String,
    revision: String,
}

impl Observer for GateObserver {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        let mut views = self.board.lock();
        let Some(view) = views.get_mut(&self.release).filter(|v| v.revision == self.revision) else { return };
        view.verdict = gate_answer(&t.outcome.decision, t.now_s < t.duration_s, &view.phase);
        view.decision = t.outcome.decision.clone();
        view.now_s = t.now_s;
        view.duration_s = t.duration_s;
        view.summary = t.judge.summary.clone();
        view.failing = t.judge.failing().map(|f| f.metric.clone()).collect();
        view.guard_hits = t.judge.guard_notes();
    }
}

#[derive(Deserialize)]
struct GateQuery {
    contract: Option<String>,
    revision: Option<String>,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(BTreeMap::from([("error", message)]))).into_response()
}

/// What the gate handler reads: the board, and the agent that starts a new
/// analysis when an engine asks about another revision (none: it only pauses).
#[derive(Clone)]
pub struct GateState {
    /// The answers.
    pub board: GateBoard,
    /// Starts analyses of new revisions.
    pub agent: Option<Arc<Agent>>,
}

/// A `contract` the gate does not speak.
#[derive(Debug, thiserror::Error)]
#[error(
    "query `contract`: unknown `{0}`; use argo, flagger-rollout, flagger-confirm-traffic-increase or flagger-confirm-promotion"
)]
struct UnknownContract(String);

fn contract_of(q: &GateQuery) -> Result<Contract, UnknownContract> {
    let Some(c) = q.contract.as_deref() else { return Ok(Contract::Argo) };
    serde_json::from_value::<Contract>(serde_json::Value::String(c.to_string()))
        .map_err(|_| UnknownContract(c.to_string()))
}

/// Why the gate did not start an analysis of the revision asked about.
#[derive(Debug, thiserror::Error)]
enum NotFollowed {
    /// `serve` without an agent behind its board (tests) only pauses.
    #[error("this gate does not start analyses")]
    NoAgent,
    /// Starting an analysis is a registration.
    #[error("the caller lacks the `register` scope needed to start an analysis")]
    NoRegisterScope,
    /// The agent refused it.
    #[error(transparent)]
    Refused(#[from] crate::run::agent::RevisionError),
}

/// Start judging `asked` when it is not the revision judged now and the
/// caller may; `Err` says why not (the answer then pauses).
async fn follow_revision(
    g: &GateState,
    caller: Option<&Caller>,
    release: &str,
    asked: &str,
) -> Result<(), NotFollowed> {
    let Some(agent) = &g.agent else { return Err(NotFollowed::NoAgent) };
    // No caller: `serve`, whose listener already checked its one token (or loopback).
    let by = caller.map_or(Actor::Pipeline { identity: "gate".into() }, Caller::actor);
    if caller.is_some_and(|c| !c.may(Scope::Register)) {
        return Err(NotFollowed::NoRegisterScope);
    }
    agent.new_revision(release, asked, &by).await.map_err(|e| {
        tracing::warn!(release, revision = asked, error = %crate::error::chain(&e), "Gate: no new analysis.");
        NotFollowed::from(e)
    })
}

async fn gate(
    State(g): State<GateState>,
    caller: Option<Extension<Caller>>,
    Path(release): Path<String>,
    Query(q): Query<GateQuery>,
    body: Option<Json<serde_json::Value>>,
) -> Response {
    if let Some(Json(b)) = &body {
        // Flagger says who is asking; Argo may send any jsonBody. Logged, never trusted.
        tracing::info!(release, caller = %b.get("name").and_then(|v| v.as_str()).unwrap_or("-"),
            phase = %b.get("phase").and_then(|v| v.as_str()).unwrap_or("-"), "Gate asked.");
    }
    let contract = match contract_of(&q) {
        Ok(c) => c,
        Err(e) => return bad_request(e.to_string()),
    };
    let Some(judged) = g.board.get(&release) else {
        let err = BTreeMap::from([("error", format!("no release named `{release}` is served"))]);
        return (StatusCode::NOT_FOUND, Json(err)).into_response();
    };
    let asked = q.revision.filter(|r| *r != judged.revision);
    let refused = match &asked {
        Some(r) => follow_revision(&g, caller.as_deref(), &release, r).await.err(),
        None => None,
    };
    let mut view = g.board.get(&release).unwrap_or(judged);
    if let Some(asked) = asked.filter(|r| *r != view.revision) {
        let why = refused.map_or_else(|| "no new analysis started".into(), |e| crate::error::chain(&e));
        view.summary = format!("revision {asked} is not the one judged ({}): pausing; {why}", view.revision);
        view.revision = asked;
        view.verdict = GateVerdict::Inconclusive;
        view.failing.clear();
    }
    (contract.status(view.verdict), Json(view)).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// The gate routes on `state`.
pub fn gate_routes(state: GateState) -> Router {
    Router::new().route("/v1/gates/{release}", get(gate).post(gate)).with_state(state)
}

/// The HTTP routes of `backstop serve`.
pub fn router(state: GateState) -> Router {
    gate_routes(state).route("/healthz", get(healthz))
}

#[cfg(test)]
mod tests;
