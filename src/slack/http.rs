//! HTTP mode: Slack POSTs to the agent's listener. Every request's
//! signature is checked against the raw body before anything is parsed
//! ([`super::verify`]); a forged or stale one gets 401 and is recorded
//! (at most ten records a second, so a flood cannot fill the ledger). The
//! answer is what [`SlackApp::accept`] gives at once; slow work runs after,
//! so Slack hears back well within its 3 s. A retry (`X-Slack-Retry-Num`)
//! repeats its event id or trigger id and is acknowledged without acting again.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::app::{Accepted, Delivery, SlackApp};
use super::verify::verify;
use super::wire::{EventBody, Interaction, SlashCommand};
use crate::ledger::ChatOpsRecord;

#[derive(Clone)]
struct HttpState {
    app: Arc<SlackApp>,
    /// Unverified requests recorded: the second (high 32 bits) and the count in it.
    recorded: Arc<AtomicI64>,
}

/// The Slack routes, authenticated by signature (not by the API's tokens).
pub fn routes(app: Arc<SlackApp>) -> Router {
    let state = HttpState { app, recorded: Arc::new(AtomicI64::new(0)) };
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/interactive", post(interactive))
        .route("/slack/events", post(events))
        .with_state(state)
}

#[derive(Deserialize)]
struct InteractiveForm {
    payload: String,
}

#[derive(Serialize)]
struct Challenge {
    challenge: String,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `Err`: the answer to send — 401 (recorded) for a request Slack did not
/// sign, 200 without acting for a signed request already taken (a replay).
async fn verified(s: &HttpState, uri: &Uri, h: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    let secret = s.app.secrets.signing.as_deref().unwrap_or_default().as_bytes();
    let now_s = s.app.agent.runtime().agent.clock.now_ms() / 1000;
    let signature = header(h, "x-slack-signature");
    let checked = verify(secret, header(h, "x-slack-request-timestamp"), signature, body, now_s);
    let Err(e) = checked else {
        if s.app.first_delivery(signature.unwrap_or_default()).await {
            return Ok(());
        }
        tracing::warn!(path = uri.path(), "A signed Slack request was replayed; acknowledged, not acted on.");
        return Err(StatusCode::OK.into_response());
    };
    if may_record(&s.recorded, now_s) {
        let rec = ChatOpsRecord::Unverified { path: uri.path().to_string(), reason: e.to_string() };
        s.app.record("slack", &s.app.agent_actor(), rec).await;
    }
    tracing::warn!(path = uri.path(), reason = %e, "Refused a request to the Slack endpoints.");
    Err((StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response())
}

/// Unverified requests recorded per second: enough to see an attack, too few to fill the ledger.
const RECORDS_PER_S: i64 = 10;

fn may_record(slot: &AtomicI64, now_s: i64) -> bool {
    let mut ok = false;
    let _ = slot.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        let (second, count) = (v >> 32, v & 0xffff_ffff);
        let now = now_s & 0x7fff_ffff;
        ok = second != now || count < RECORDS_PER_S;
        Some(if second != now { (now << 32) | 1 } else { (now << 32) | (count + 1).min(RECORDS_PER_S + 1) })
    });
    ok
}

fn answer(app: &Arc<SlackApp>, accepted: Accepted) -> Response {
    let reply = accepted.reply.clone();
    app.start(accepted.work);
    match reply {
        Some(r) => axum::Json(r).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{what}: {e}\n")).into_response()
}

async fn commands(State(s): State<HttpState>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = verified(&s, &uri, &h, &body).await {
        return r;
    }
    let c: SlashCommand = match serde_urlencoded::from_bytes(&body) {
        Ok(c) => c,
        Err(e) => return bad("slash command form", e),
    };
    if !c.trigger_id.is_empty() && !s.app.first(&format!("trigger:{}", c.trigger_id)) {
        return StatusCode::OK.into_response();
    }
    answer(&s.app, s.app.accept(Delivery::Command(c)))
}

async fn interactive(State(s): State<HttpState>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = verified(&s, &uri, &h, &body).await {
        return r;
    }
    let form: InteractiveForm = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => return bad("interactivity form (expected a `payload` field)", e),
    };
    match serde_json::from_str::<Interaction>(&form.payload) {
        Ok(i) => answer(&s.app, s.app.accept(Delivery::Interaction(i))),
        Err(e) => bad("interactivity payload", e),
    }
}

async fn events(State(s): State<HttpState>, uri: Uri, h: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = verified(&s, &uri, &h, &body).await {
        return r;
    }
    match serde_json::from_slice::<EventBody>(&body) {
        Ok(EventBody::UrlVerification { challenge }) => axum::Json(Challenge { challenge }).into_response(),
        // A retry repeats the event id; `accept` acts on each id once.
        Ok(EventBody::EventCallback { event_id, event }) => {
            answer(&s.app, s.app.accept(Delivery::Event { event_id, event }))
        }
        Ok(EventBody::Other) => StatusCode::OK.into_response(),
        Err(e) => bad("event body", e),
    }
}
