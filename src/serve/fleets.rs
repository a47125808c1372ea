//! Fleet releases over HTTP: `GET /v1/fleets` lists every configured
//! `[[fleets]]` entry as one release with its waves — which wave runs or
//! bakes, how each member ended, and each revert — read from the ledger, so
//! any agent sharing it answers the same.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiState;
use super::api::error;

async fn list(State(s): State<ApiState>) -> Response {
    match s.agent.runtime().fleet_summaries().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, crate::error::chain(&e)),
    }
}

/// The route (reading needs `read`, as the agent's router checks).
pub fn routes() -> Router<ApiState> {
    Router::new().route("/v1/fleets", get(list))
}
