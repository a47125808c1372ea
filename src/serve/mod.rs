//! The gate endpoint of `backstop serve`: rollout engines that already move
//! traffic (Argo Rollouts, Flagger) ask backstop for its verdict.
//!
//! - `GET|POST /v1/gates/{release}` — always HTTP 200 with the verdict as
//!   JSON, for Argo Rollouts' `web` metric provider, whose `jsonPath` and
//!   success/failure conditions decide (a non-2xx there is an Error).
//! - `?contract=flagger-rollout` — Flagger's webhook contract by status code:
//!   2xx while the canary is not failing, 412 once it fails (a failed check).
//! - `?contract=flagger-promotion` — for `confirm-promotion`: 2xx only once
//!   the window has passed, 412 otherwise (Flagger waits and asks again).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::judge::Verdict;
use crate::orchestrator::{Observer, TickReport};

/// What a gate answers for one release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateView {
    /// Release name.
    pub release: String,
    /// `pass`, `fail`, `running` (no failure yet, window not over) or `inconclusive`.
    pub verdict: String,
    /// Policy's decision at the last tick.
    pub decision: String,
    /// Release time of the last tick, seconds.
    pub now_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// The judge's one-line summary.
    pub summary: String,
    /// Metrics failing now.
    pub failing: Vec<String>,
}

/// The latest verdict of every served release.
#[derive(Clone, Default)]
pub struct GateBoard {
    views: Arc<Mutex<HashMap<String, GateView>>>,
}

impl GateBoard {
    /// Register `release` before its first tick, so the gate answers `running`.
    pub fn register(&self, release: &str, duration_s: u64) {
        let view = GateView {
            release: release.into(),
            verdict: "running".into(),
            decision: "continue".into(),
            now_s: 0,
            duration_s,
            summary: "analysis starting".into(),
            failing: vec![],
        };
        self.lock().insert(release.into(), view);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GateView>> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current view of `release`.
    pub fn get(&self, release: &str) -> Option<GateView> {
        self.lock().get(release).cloned()
    }

    /// An observer that keeps this board's entry for `release` current.
    pub fn observer(&self, release: &str) -> GateObserver {
        GateObserver { board: self.clone(), release: release.into() }
    }
}

/// Updates a [`GateBoard`] at every tick.
pub struct GateObserver {
    board: GateBoard,
    release: String,
}

impl Observer for GateObserver {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        let verdict = match (t.judge.verdict, t.judge.window_complete) {
            (Verdict::Fail, _) => "fail",
            (Verdict::Pass, _) => "pass",
            (Verdict::Inconclusive, false) => "running",
            (Verdict::Inconclusive, true) => "inconclusive",
        };
        let view = GateView {
            release: self.release.clone(),
            verdict: verdict.into(),
            decision: t.outcome.decision.label().into(),
            now_s: t.now_s,
            duration_s: t.duration_s,
            summary: t.judge.summary.clone(),
            failing: t.judge.failing().map(|f| f.metric.clone()).collect(),
        };
        self.board.lock().insert(self.release.clone(), view);
    }
}

#[derive(Deserialize)]
struct GateQuery {
    contract: Option<String>,
}

async fn gate(
    State(board): State<GateBoard>,
    Path(release): Path<String>,
    Query(q): Query<GateQuery>,
    body: Option<Json<serde_json::Value>>,
) -> Response {
    if let Some(Json(b)) = &body {
        // Flagger says who is asking; Argo may send any jsonBody. Logged, never trusted.
        tracing::info!(release, caller = %b.get("name").and_then(|v| v.as_str()).unwrap_or("-"),
            phase = %b.get("phase").and_then(|v| v.as_str()).unwrap_or("-"), "Gate asked.");
    }
    let Some(view) = board.get(&release) else {
        let err = BTreeMap::from([("error", format!("no release named `{release}` is served"))]);
        return (StatusCode::NOT_FOUND, Json(err)).into_response();
    };
    let status = match q.contract.as_deref() {
        None | Some("argo") => StatusCode::OK,
        Some("flagger-rollout") if view.verdict == "fail" => StatusCode::PRECONDITION_FAILED,
        Some("flagger-rollout") => StatusCode::OK,
        Some("flagger-promotion") if view.verdict == "pass" => StatusCode::OK,
        Some("flagger-promotion") => StatusCode::PRECONDITION_FAILED,
        Some(other) => {
            let err = BTreeMap::from([(
                "error",
                format!("unknown contract `{other}`; use argo, flagger-rollout or flagger-promotion"),
            )]);
            return (StatusCode::BAD_REQUEST, Json(err)).into_response();
        }
    };
    (status, Json(view)).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// The HTTP routes.
pub fn router(board: GateBoard) -> Router {
    Router::new().route("/v1/gates/{release}", get(gate).post(gate)).route("/healthz", get(healthz)).with_state(board)
}

#[cfg(test)]
mod tests;
