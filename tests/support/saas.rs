//! A local server speaking the documented wire formats of hosted metric
//! APIs, on a loopback port it chooses: Datadog's "Query timeseries points"
//! (`GET /api/v1/query`, `GET /api/v1/validate`), New Relic's NerdGraph
//! (`POST /graphql`, an NRQL `TIMESERIES` query) and Amazon CloudWatch's
//! Query API (`POST /`, in tests/support/cloudwatch.rs). Answers take the field
//! sets of the vendors' API references; errors take their shapes (Datadog:
//! 403 `{"errors": ["Forbidden"]}`, 400 with `errors`; NerdGraph: 401 for a
//! missing or wrong key, 200 with `errors` for NRQL it cannot parse).
//!
//! The data: series of `(unix seconds, value)` at 10 s, each answered to a
//! query that contains its marker (`version:canary`, `'checkout'`). The
//! fakes do not evaluate query languages: they check the shapes backstop
//! sends (keys, ranges, the rollup or `TIMESERIES` step) and refuse a query
//! that lacks them, as the real services would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const DD_API_KEY: &str = "dd-api-0123456789abcdef0123456789ab";
pub const DD_APP_KEY: &str = "dd-app-0123456789abcdef0123456789abcdef0123";
pub const NR_KEY: &str = "NRAK-TEST0123456789ABCDEFGHIJKL";
pub const NR_ACCOUNT: u64 = 1234567;

/// One series: (unix seconds, value; `None` a null).
pub type Points = Vec<(i64, Option<f64>)>;

#[derive(Default)]
pub struct Data {
    /// Marker → points.
    pub series: Vec<(String, Points)>,
    /// Every query asked: (query text, from, to) in unix seconds.
    pub asked: Vec<(String, i64, i64)>,
    /// Every request answers 503 while set.
    pub down: bool,
    /// AWS session tokens the fake STS and metadata service gave out.
    pub issued: Vec<String>,
    /// Session tokens CloudWatch requests were signed with.
    pub signed_with: Vec<String>,
    /// Credentials fetched: from STS, from the metadata service.
    pub fetched: (usize, usize),
    /// The metadata service answers 500 for credentials once it has given this many.
    pub imds_fails_after: Option<usize>,
}

pub type Shared = Arc<Mutex<Data>>;

pub struct FakeSaas {
    pub url: String,
    pub data: Shared,
}

impl FakeSaas {
    /// Both APIs on one loopback port.
    pub async fn start() -> FakeSaas {
        let data: Shared = Arc::default();
        let app = Router::new()
            .route("/api/v1/query", get(dd_query))
            .route("/api/v1/validate", get(dd_validate))
            .route("/graphql", post(nerdgraph))
            .route("/", post(super::cloudwatch::query_api))
            .route("/sts/", post(super::cloudwatch::sts))
            .route("/federation/credentials", get(super::cloudwatch::sso_role_credentials))
            .route("/v1/credentials", get(super::cloudwatch::container_credentials))
            .route("/token", post(super::cloudwatch::sso_oidc_token))
            .route("/latest/api/token", axum::routing::put(super::cloudwatch::imds_token))
            .route("/latest/meta-data/iam/security-credentials/", get(super::cloudwatch::imds_role))
            .route("/latest/meta-data/iam/security-credentials/{role}", get(super::cloudwatch::imds_credentials))
            .with_state(data.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSaas { url, data }
    }

    pub fn add(&self, marker: &str, points: Points) {
        self.data.lock().unwrap().series.push((marker.to_string(), points));
    }

    pub fn set_down(&self, down: bool) {
        self.data.lock().unwrap().down = down;
    }

    pub fn asked(&self) -> Vec<(String, i64, i64)> {
        self.data.lock().unwrap().asked.clone()
    }
}

/// The points of the series whose marker the query holds, in `[from, to]`.
pub fn points_of(data: &Data, query: &str, from: i64, to: i64) -> Option<Points> {
    let (_, points) = data.series.iter().find(|(marker, _)| query.contains(marker.as_str()))?;
    Some(points.iter().copied().filter(|(t, _)| *t >= from && *t <= to).collect())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn dd_forbidden() -> Response {
    (StatusCode::FORBIDDEN, axum::Json(json!({ "errors": ["Forbidden"] }))).into_response()
}

async fn dd_validate(State(data): State<Shared>, headers: HeaderMap) -> Response {
    if data.lock().unwrap().down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if header(&headers, "DD-API-KEY") != DD_API_KEY {
        return dd_forbidden();
    }
    axum::Json(json!({ "valid": true })).into_response()
}

async fn dd_query(
    State(data): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut data = data.lock().unwrap();
    if data.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if header(&headers, "DD-API-KEY") != DD_API_KEY || header(&headers, "DD-APPLICATION-KEY") != DD_APP_KEY {
        return dd_forbidden();
    }
    let (Some(from), Some(to), Some(query)) = (
        q.get("from").and_then(|v| v.parse::<i64>().ok()),
        q.get("to").and_then(|v| v.parse::<i64>().ok()),
        q.get("query"),
    ) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "errors": ["Bad Request"] }))).into_response();
    };
    data.asked.push((query.clone(), from, to));
    // A metric query is `aggregation:metric{scope}`; rolled up to the step backstop judges.
    let parses =
        query.split_once(':').is_some_and(|(a, rest)| !a.is_empty() && rest.contains('{') && rest.contains('}'));
    if !parses || !query.contains(".rollup(avg, 10)") {
        let why = format!("Error parsing query: \n unable to parse {query}: Rule 'scope_expr' didn't match");
        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "errors": [why] }))).into_response();
    }
    let series = match points_of(&data, query, from, to) {
        Some(points) if !points.is_empty() => {
            let (start, end) = (points[0].0 * 1000, points[points.len() - 1].0 * 1000);
            let pointlist: Vec<Value> = points.iter().map(|(t, v)| json!([(*t * 1000) as f64, v])).collect();
            vec![json!({
                "aggr": "avg", "attributes": {}, "display_name": "errors.ratio", "end": end,
                "expression": query, "interval": 10, "length": pointlist.len(), "metric": "errors.ratio",
                "pointlist": pointlist, "query_index": 0, "scope": "service:checkout", "start": start,
                "tag_set": [], "unit": null
            })]
        }
        _ => vec![],
    };
    axum::Json(json!({
        "status": "ok", "res_type": "time_series", "series": series, "from_date": from * 1000,
        "to_date": to * 1000, "group_by": [], "query": query, "message": ""
    }))
    .into_response()
}

/// `SINCE a UNTIL b` in an NRQL query.
fn since_until(nrql: &str) -> Option<(i64, i64)> {
    let after = |word: &str| nrql.split(word).nth(1)?.split_whitespace().next()?.parse::<i64>().ok();
    Some((after("SINCE ")?, after("UNTIL ")?))
}

async fn nerdgraph(State(data): State<Shared>, headers: HeaderMap, body: axum::Json<Value>) -> Response {
    let mut data = data.lock().unwrap();
    if data.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if header(&headers, "API-Key") != NR_KEY {
        let errors =
            json!({ "errors": [{ "message": "Unauthorized", "extensions": { "errorClass": "UNAUTHORIZED" } }] });
        return (StatusCode::UNAUTHORIZED, axum::Json(errors)).into_response();
    }
    let vars = &body["variables"];
    if vars["account"] != NR_ACCOUNT {
        let e =
            json!({ "message": "Not authorized to access this account", "extensions": { "errorClass": "FORBIDDEN" } });
        return axum::Json(json!({ "data": { "actor": { "account": null } }, "errors": [e] })).into_response();
    }
    let document = body["query"].as_str().unwrap_or("");
    if document.contains("{ name }") {
        return axum::Json(json!({ "data": { "actor": { "account": { "name": "Checkout Team" } } } })).into_response();
    }
    let nrql = vars["nrql"].as_str().unwrap_or("");
    let range = since_until(nrql);
    let Some((from, to)) = range.filter(|_| nrql.starts_with("SELECT ") && nrql.contains("TIMESERIES 10 seconds"))
    else {
        let e = json!({ "message": "NRQL Syntax Error: Error at line 1 position 1, unexpected end of input",
                        "extensions": { "errorClass": "INVALID_INPUT" } });
        return axum::Json(json!({ "data": { "actor": { "account": { "nrql": null } } }, "errors": [e] }))
            .into_response();
    };
    data.asked.push((nrql.to_string(), from, to));
    let points: HashMap<i64, Option<f64>> = points_of(&data, nrql, from, to).unwrap_or_default().into_iter().collect();
    // TIMESERIES answers every bucket of the range, null where nothing was recorded.
    let results: Vec<Value> = (from..to)
        .step_by(10)
        .map(|t| json!({ "beginTimeSeconds": t, "endTimeSeconds": t + 10, "value": points.get(&t).copied().flatten() }))
        .collect();
    axum::Json(json!({ "data": { "actor": { "account": { "nrql": { "results": results } } } } })).into_response()
}
