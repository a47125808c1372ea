//! The agent's HTTP API: releases, operator requests, approvals, the gate
//! endpoints, `/metrics`, health, and the dashboard. Every route but the
//! health checks needs an authenticated caller with the route's scope; every
//! request that changes something is recorded under the caller's identity
//! before it takes effect (by [`crate::run::agent::Agent`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::{Caller, Channel};
use crate::ledger::OperatorAction;
use crate::orchestrator::human::AnswerReply;
use crate::orchestrator::human::PersonAction;
use crate::policy::approval::{Answer, Principal, Ruling};
use crate::release::Registration;
use crate::run::agent::{AnswerError, OperateError, RegisterError, ReleaseView};
use crate::run::recorded::RecordedReport;

/// Largest request body the API reads: a registration or a reason is a few
/// hundred bytes; one request must not grow the ledger by megabytes.
pub const API_BODY_LIMIT: usize = 64 * 1024;

pub(super) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(BTreeMap::from([("error", message.to_string())]))).into_response()
}

async fn list(State(s): State<ApiState>) -> Response {
    Json(s.agent.list()).into_response()
}

async fn show(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match s.agent.get(&name) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no release named `{name}`")),
    }
}

/// What `GET …/report` finds for a release name.
pub(super) enum Found {
    /// The report, from the ledger.
    Report(Box<crate::report::Report>),
    /// No report: the status and why.
    Not(StatusCode, String),
}

/// The report of release `name` as the ledger holds it, judged nothing again.
pub(super) async fn report_of(s: &ApiState, name: &str) -> Found {
    let cfg = match s.agent.config_of(name).await {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return Found::Not(StatusCode::NOT_FOUND, format!("no release named `{name}`")),
        Err(e) => return Found::Not(StatusCode::SERVICE_UNAVAILABLE, crate::error::chain(&e)),
    };
    match crate::run::recorded::recorded_report(s.agent.runtime(), &cfg).await {
        Ok(RecordedReport::Ended { report, .. }) => Found::Report(report),
        Ok(RecordedReport::Nothing) => {
            Found::Not(StatusCode::NOT_FOUND, format!("release `{name}` has no record in the ledger yet"))
        }
        Ok(RecordedReport::InProgress { ticks, now_s }) => Found::Not(
            StatusCode::CONFLICT,
            format!(
                "release `{name}` is being judged ({ticks} ticks, {now_s} s into its window): its report exists when it ends"
            ),
        ),
        Err(e) => Found::Not(StatusCode::SERVICE_UNAVAILABLE, crate::error::chain(&e)),
    }
}

async fn report(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match report_of(&s, &name).await {
        Found::Report(r) => Json(*r).into_response(),
        Found::Not(status, message) => error(status, message),
    }
}

async fn register(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    let mut de = serde_json::Deserializer::from_slice(&body);
    let reg: Registration = match serde_path_to_error::deserialize(&mut de) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("request body: {}", crate::field::ShapeError::at(e.path(), e.inner().to_string()));
            return error(StatusCode::UNPROCESSABLE_ENTITY, msg);
        }
    };
    match s.agent.register(reg, &caller.actor()).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => {
            let status = match &e {
                RegisterError::Duplicate(_) => StatusCode::CONFLICT,
                RegisterError::Ledger(_) | RegisterError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, crate::error::chain(&e))
        }
    }
}

/// The body of an operator request or an answer: why, in the person's words.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Recorded in the ledger as typed (untrusted text).
    #[serde(default)]
    pub reason: String,
}

pub(super) fn reason_of(body: &axum::body::Bytes) -> Result<String, Box<Response>> {
    if body.is_empty() {
        return Ok(String::new());
    }
    serde_json::from_slice::<ReasonBody>(body).map(|b| b.reason).map_err(|e| {
        Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, format!("request body: expected {{\"reason\": TEXT}}: {e}")))
    })
}

/// What came of an operator request, a person's request or an answer: the
/// API answers it as JSON, the dashboard as a page.
pub(super) enum Done {
    /// Hold, resume or abort took effect: the release now.
    View(Box<ReleaseView>),
    /// Policy ruled on a person's request or answer.
    Ruled(Box<AnswerReply>),
}

/// Why a request failed: the HTTP status and the message.
pub(super) type Failed = (StatusCode, String);

impl Done {
    /// The HTTP status: 200, or policy's 403 refused / 409 stale or closed.
    pub(super) fn status(&self) -> StatusCode {
        let Done::Ruled(reply) = self else { return StatusCode::OK };
        match &reply.ruling {
            Ruling::Execute { .. } | Ruling::Rejected => StatusCode::OK,
            Ruling::Refused { .. } => StatusCode::FORBIDDEN,
            Ruling::Stale { .. } | Ruling::Closed { .. } => StatusCode::CONFLICT,
        }
    }
}

/// Hold, resume, abort, rollback or promote `name` for `caller`. A person's
/// rollback or promotion is ruled by policy (approvers only; for a rollback
/// every invariant and the rate limit hold, a promotion is refused while the
/// judge finds the canary failing) and needs a reason.
pub(super) async fn act(
    s: &ApiState,
    (caller, channel): (&Caller, Channel),
    name: &str,
    action: &str,
    reason: String,
) -> Result<Done, Failed> {
    let person = |a: PersonAction| Ok::<_, Failed>(Err(a));
    let step = match action {
        "hold" => Ok(OperatorAction::Hold),
        "resume" => Ok(OperatorAction::Resume),
        "abort" => Ok(OperatorAction::Abort),
        "rollback" => person(PersonAction::Rollback)?,
        "promote" => person(PersonAction::Promote)?,
        other => {
            let known = "use hold, resume, abort, rollback or promote";
            return Err((StatusCode::NOT_FOUND, format!("no action `{other}`: {known}")));
        }
    };
    match step {
        Ok(op) => match s.agent.operate(name, op, &caller.actor_via(channel), &reason).await {
            Ok(v) => Ok(Done::View(Box::new(v))),
            Err(e) => Err(operate_error(&e)),
        },
        Err(action) if reason.trim().is_empty() => {
            let what = match action {
                PersonAction::Rollback => "a rollback",
                PersonAction::Promote => "a promotion",
            };
            Err((StatusCode::UNPROCESSABLE_ENTITY, format!("request body: {what} needs {{\"reason\": TEXT}}")))
        }
        Err(action) => {
            let by = (caller.actor_via(channel), Principal::named(&caller.identity));
            s.agent
                .request(name, action, by, reason)
                .await
                .map(|r| Done::Ruled(Box::new(r)))
                .map_err(|e| operate_error(&e))
        }
    }
}

/// Approve or reject request `id` for `caller`; policy rules.
pub(super) async fn answer_request(
    s: &ApiState,
    (caller, channel): (&Caller, Channel),
    id: &str,
    verb: &str,
    reason: String,
) -> Result<Done, Failed> {
    let answer = match verb {
        "approve" => Answer::Approve,
        "reject" => Answer::Reject,
        other => return Err((StatusCode::NOT_FOUND, format!("no answer `{other}`: use approve or reject"))),
    };
    match s.agent.answer(id, (caller.actor_via(channel), Principal::named(&caller.identity)), answer, reason).await {
        Ok(reply) => Ok(Done::Ruled(Box::new(reply))),
        Err(e) => {
            let status = match &e {
                AnswerError::NotFound(_) => StatusCode::NOT_FOUND,
                AnswerError::Closed { .. } => StatusCode::CONFLICT,
                AnswerError::NoAnswer | AnswerError::Ledger(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            Err((status, crate::error::chain(&e)))
        }
    }
}

fn json_of(done: Result<Done, Failed>) -> Response {
    match done {
        Ok(d) => {
            let status = d.status();
            match d {
                Done::View(v) => (status, Json(*v)).into_response(),
                Done::Ruled(reply) => (status, Json(*reply)).into_response(),
            }
        }
        Err((status, message)) => error(status, message),
    }
}

async fn operate(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((name, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    match reason_of(&body) {
        Ok(reason) => json_of(act(&s, (&caller, Channel::Api), &name, &action, reason).await),
        Err(resp) => *resp,
    }
}

fn operate_error(e: &OperateError) -> Failed {
    let status = match e {
        OperateError::NotFound(_) => StatusCode::NOT_FOUND,
        OperateError::Ended(_) | OperateError::RequestOpen(_) => StatusCode::CONFLICT,
        OperateError::Ledger(_) | OperateError::NoAnswer => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, crate::error::chain(e))
}

async fn answer(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    match reason_of(&body) {
        Ok(reason) => json_of(answer_request(&s, (&caller, Channel::Api), &id, &verb, reason).await),
        Err(resp) => *resp,
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
            .parse()
            .unwrap_or(header::HeaderValue::from_static("text/plain")),
    );
    (headers, s.agent.render_metrics()).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if *s.agent.runtime().stop.borrow() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "stopping");
    }
    match s.agent.ready().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, crate::error::chain(&e)),
    }
}

/// The API's routes (the agent router in `serve` adds the dashboard, the
/// gates, authentication and the body limit).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/releases", get(list).post(register))
        .route("/v1/releases/{name}", get(show))
        .route("/v1/releases/{name}/report", get(report))
        .route("/v1/releases/{name}/{action}", post(operate))
        .route("/v1/approvals/{id}/{answer}", post(answer))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/healthz", get(healthz))
}
