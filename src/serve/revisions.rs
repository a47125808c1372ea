//! Release memory over HTTP: `GET /v1/revisions` (every revision the ledger
//! remembers: quarantined or not, where verified) and `POST
//! /v1/revisions/{service}/{revision}/clear` with `{"reason": TEXT}`, an
//! approver lifting a quarantine as the identity of their token.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::ApiState;
use super::api::{error, reason_of};
use super::auth::{Caller, Channel};
use crate::policy::approval::{ClearRefused, Principal};
use crate::run::memory::{ClearError, RevisionView, clear, revisions};

async fn list(State(s): State<ApiState>) -> Response {
    match revisions(&s.agent.runtime().ledger).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, crate::error::chain(&e)),
    }
}

async fn clear_one(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((service, revision)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let reason = match reason_of(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match clear_as(&s, (&caller, Channel::Api), (&service, &revision), &reason).await {
        Ok(v) => Json(v).into_response(),
        Err((status, message)) => error(status, message),
    }
}

/// Lift `service`'s quarantine of `revision` as `caller`, through
/// `channel` (the API or the dashboard): the view after, or the status and
/// message to answer with (403 not an approver, 409 nothing to clear, 422
/// no reason, 503 the ledger).
pub(super) async fn clear_as(
    s: &ApiState,
    (caller, channel): (&Caller, Channel),
    (service, revision): (&str, &str),
    reason: &str,
) -> Result<RevisionView, (StatusCode, String)> {
    let rt = s.agent.runtime();
    let who = (&caller.actor_via(channel), &Principal::named(&caller.identity));
    let now_ms = rt.agent.clock.now_ms();
    clear(&rt.ledger, &rt.policy, (service, revision), who, (reason, now_ms)).await.map_err(|e| match e {
        ClearError::Refused(why) => {
            let status = match why {
                ClearRefused::NotAnApprover { .. } => StatusCode::FORBIDDEN,
                ClearRefused::NotQuarantined { .. } => StatusCode::CONFLICT,
                ClearRefused::NoReason => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, format!("not cleared: {why}"))
        }
        e @ ClearError::Ledger(_) => (StatusCode::SERVICE_UNAVAILABLE, crate::error::chain(&e)),
    })
}

/// The routes (authenticated by the agent's router: reading needs `read`, clearing `approve`).
pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/revisions", get(list)).route("/v1/revisions/{service}/{revision}/clear", post(clear_one))
}
