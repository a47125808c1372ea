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

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

pub mod api;
pub mod auth;
pub mod dashboard;
mod fleet_gate;
pub mod guard;
pub mod listen;
pub mod fleets;
pub mod revisions;
pub mod signing;

use crate::ledger::Actor;
use crate::run::agent::Agent;
pub use crate::run::gate::{GateBoard, GatePhase, GateVerdict, GateView};
use auth::{Authenticator, Caller, Scope};

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
    match fleet_gate::fleet_part(&g, &release).await {
        Some(Ok(fleet_gate::FleetPart::Whole(f))) => return fleet_gate::whole(&f, q.revision.as_deref(), contract),
        Some(Ok(fleet_gate::FleetPart::Member(f, m))) => {
            let mut view = fleet_gate::member_view(&f, m, g.board.get(&release));
            // A member's revision is the fleet's: asked about another, pause (never start one alone).
            if let Some(asked) = q.revision.filter(|r| *r != view.revision) {
                view.summary = format!("revision {asked} is not the one judged ({}): pausing", view.revision);
                view.revision = asked;
                view.verdict = GateVerdict::Inconclusive;
            }
            return (contract.status(view.verdict), Json(view)).into_response();
        }
        Some(Err(why)) => return fleet_gate::unreadable(&release, &why, contract),
        None => {}
    }
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

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The agent.
    pub agent: Arc<Agent>,
    /// How callers are recognised.
    pub auth: Arc<Authenticator>,
    /// Signs and checks dashboard form tokens and shared links.
    pub signer: Arc<signing::Signer>,
}

/// Everything `backstop agent` answers: the API, the dashboard and the
/// gates, behind authentication and the API's body limit.
pub fn agent_router(state: ApiState) -> Router {
    let gates = gate_routes(GateState { board: state.agent.gates.clone(), agent: Some(state.agent.clone()) });
    let auth = state.auth.clone();
    api::routes()
        .merge(revisions::routes())
        .merge(fleets::routes())
        .merge(dashboard::routes())
        .with_state(state)
        .merge(gates)
        .layer(axum::middleware::from_fn_with_state(auth, auth::authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(api::API_BODY_LIMIT))
}

/// The HTTP routes of `backstop serve`.
pub fn router(state: GateState) -> Router {
    gate_routes(state).route("/healthz", get(healthz))
}

#[cfg(test)]
mod tests;
