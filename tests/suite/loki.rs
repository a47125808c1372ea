//! The Loki log source against a local server answering `GET
//! /loki/api/v1/query_range` as Loki documents it (streams of
//! `["<ns>", "<line>"]`, `direction`, `limit`, nanosecond `start`/`end`,
//! `X-Scope-OrgID`), then through `backstop watch`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use backstop::logs::{LogSourceConfig, LokiConfig};
use backstop::signals::{PromAuth, Side, SignalSource};
use serde_json::json;

/// Release time 0, unix seconds.
const START: f64 = 1_795_860_000.0;

/// A request's query parameters, tenant and authorization header.
type Request = (HashMap<String, String>, String, String);

#[derive(Clone, Default)]
struct Loki {
    seen: Arc<Mutex<Vec<Request>>>,
    /// Requests still to answer 503.
    failures: Arc<Mutex<usize>>,
    /// Unix seconds the lines are laid out from (the release's start).
    origin: f64,
}

/// The lines a side's query selects: the canary logs `ERROR stale price`
/// twice per 10 s step, the stable version `WARN slow` once; both log in two
/// streams (pods), as Loki returns them.
fn lines(query: &str, origin: f64) -> Vec<(i128, String, &'static str)> {
    let canary = query.contains("canary");
    let mut out = vec![];
    for step in -200i128..180 {
        let t0 = (origin as i128 + step * 10) * 1_000_000_000;
        if canary {
            out.push((t0 + 1_000_000_000, format!("ERROR stale price for sku-{step} served from cache"), "pod-a"));
            out.push((
                t0 + 6_000_000_000,
                format!("ERROR stale price for sku-{} served from cache", step + 1),
                "pod-b",
            ));
        } else {
            out.push((t0 + 4_000_000_000, format!("WARN slow query took {}ms", 200 + step), "pod-a"));
        }
    }
    out
}

async fn query_range(State(l): State<Loki>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    l.seen.lock().unwrap().push((q.clone(), h("x-scope-orgid"), h("authorization")));
    {
        let mut failures = l.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "too many outstanding requests").into_response();
        }
    }
    let query = q.get("query").cloned().unwrap_or_default();
    if !query.starts_with('{') {
        return (StatusCode::BAD_REQUEST, "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER")
            .into_response();
    }
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<i128>().ok()).unwrap_or(0);
    let (start, end, limit) = (num("start"), num("end"), num("limit") as usize);
    assert_eq!(q.get("direction").map(String::as_str), Some("forward"));
    let mut streams: HashMap<&str, Vec<serde_json::Value>> = HashMap::new();
    for (ns, line, pod) in
        lines(&query, l.origin).into_iter().filter(|(ns, _, _)| *ns >= start && *ns < end).take(limit)
    {
        streams.entry(pod).or_default().push(json!([ns.to_string(), line]));
    }
    let result: Vec<_> = streams
        .into_iter()
        .map(|(pod, values)| json!({"stream": {"app": "checkout", "pod": pod}, "values": values}))
        .collect();
    let body = json!({"status": "success", "data": {"resultType": "streams", "result": result,
        "stats": {"summary": {"bytesProcessedPerSecond": 0, "totalEntriesReturned": 0}}}});
    axum::Json(body).into_response()
}

async fn loki() -> (Loki, String) {
    loki_from(START).await
}

async fn loki_from(origin: f64) -> (Loki, String) {
    let l = Loki { origin, ..Loki::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route("/loki/api/v1/query_range", axum::routing::get(query_range)).with_state(l.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (l, url)
}

fn config(url: &str, limit: u32) -> LokiConfig {
    LokiConfig {
        url: url.into(),
        baseline_query: r#"{app="checkout",track="stable"} |~ "(?i)error|warn""#.into(),
        canary_query: r#"{app="checkout",track="canary"} |~ "(?i)error|warn""#.into(),
        tenant: Some("shop".into()),
        // Cargo sets it for every test process: a variable no test has to set.
        auth: Some(PromAuth::Basic { username: "backstop".into(), password_env: "CARGO_PKG_NAME".into() }),
        limit,
        timeout_s: 5,
    }
}

fn source(url: &str, limit: u32) -> backstop::logs::WithLogs {
    source_offset(url, limit, 0)
}

fn source_offset(url: &str, limit: u32, baseline_offset_s: u64) -> backstop::logs::WithLogs {
    let scenario = backstop::signals::load_scenario(std::path::Path::new(
        "fixtures/scenarios/holdout/holdout-good-healthy-000.json",
    ))
    .unwrap();
    let inner = Arc::new(backstop::signals::ReplaySource::new(Arc::new(scenario.data)));
    LogSourceConfig::Loki(config(url, limit)).wrap(inner, None, START, baseline_offset_s).unwrap()
}

#[tokio::test]
async fn loki_lines_of_both_sides_arrive_once_with_tenant_and_credentials() {
    let (l, url) = loki().await;
    let s = source(&url, 5000);
    let first = s.observe(60).await.unwrap();
    let canary: Vec<u64> = first.logs.iter().filter(|x| x.target == Side::Canary).map(|x| x.t_s).collect();
    assert_eq!(canary, [1, 6, 11, 16, 21, 26, 31, 36, 41, 46, 51, 56], "time order across streams, none from before");
    assert!(first.logs.iter().filter(|x| x.target == Side::Baseline).all(|x| x.level == "warn"));
    let second = s.observe(120).await.unwrap();
    assert_eq!(second.logs.iter().filter(|x| x.target == Side::Canary).count(), 24, "no line twice, none lost");
    let seen = l.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, tenant, auth)| tenant == "shop" && auth == "Basic YmFja3N0b3A6YmFja3N0b3A="),
        "{seen:?}"
    );
    let starts: Vec<&str> = seen.iter().map(|(q, _, _)| q["start"].as_str()).collect();
    assert_eq!(starts, ["1795860000000000000", "1795860000000000000", "1795860060000000000", "1795860060000000000"]);
}

#[tokio::test]
async fn an_earlier_window_baseline_reads_its_lines_from_the_same_window_as_its_metrics() {
    let (l, url) = loki().await;
    // The metrics' baseline is the 10 minutes before the release (`preceding`): so are its lines.
    let s = source_offset(&url, 5000, 600);
    let obs = s.observe(60).await.unwrap();
    let baseline: Vec<(u64, &str)> =
        obs.logs.iter().filter(|x| x.target == Side::Baseline).map(|x| (x.t_s, x.message.as_str())).collect();
    let expected: Vec<(u64, String)> =
        (0..6).map(|k| (4 + 10 * k, format!("WARN slow query took {}ms", 140 + k))).collect();
    assert_eq!(
        baseline,
        expected.iter().map(|(t, m)| (*t, m.as_str())).collect::<Vec<_>>(),
        "placed on the release's clock"
    );
    let canary = obs.logs.iter().filter(|x| x.target == Side::Canary).count();
    assert_eq!(canary, 12, "the canary reads its own time");
    let seen = l.seen.lock().unwrap().clone();
    let starts: Vec<&str> = seen.iter().map(|(q, _, _)| q["start"].as_str()).collect();
    assert_eq!(starts, ["1795859400000000000", "1795860000000000000"], "baseline 600 s back, then the canary");
}

#[tokio::test]
async fn a_limit_cut_read_resumes_at_its_last_line() {
    let (l, url) = loki().await;
    let s = source(&url, 5);
    let mut obs = s.observe(120).await.unwrap();
    for now in [130, 140, 150] {
        obs = s.observe(now).await.unwrap();
    }
    let canary: Vec<u64> = obs.logs.iter().filter(|x| x.target == Side::Canary).map(|x| x.t_s).collect();
    // Four reads of at most five lines, each resuming at the last line it
    // has (Loki's `start` is inclusive, so that line comes again and is
    // dropped): 5 + 4 + 4 + 4 lines, in order, none twice, none skipped.
    assert_eq!(canary, (0..17).map(|i| 1 + 5 * i).collect::<Vec<u64>>());
    assert!(l.seen.lock().unwrap().iter().all(|(q, _, _)| q["limit"] == "5"));
}

#[tokio::test]
async fn loki_unavailable_loses_nothing_and_a_bad_query_is_named() {
    let (l, url) = loki().await;
    *l.failures.lock().unwrap() = 2;
    let s = source(&url, 5000);
    let first = s.observe(60).await.unwrap();
    assert!(first.logs.is_empty() && !first.metrics.is_empty(), "metrics still observed");
    let second = s.observe(120).await.unwrap();
    assert_eq!(second.logs.iter().filter(|x| x.target == Side::Canary).count(), 24, "read from the release start");
    let e = backstop::logs::loki_streams(400, "parse error at line 1, col 1: syntax error").unwrap_err();
    assert_eq!(e.to_string(), "loki answered 400: parse error at line 1, col 1: syntax error");
}

#[tokio::test]
async fn an_unset_credential_variable_is_named() {
    let mut cfg = config("http://127.0.0.1:9", 10);
    cfg.auth = Some(PromAuth::Bearer { token_env: "BACKSTOP_TEST_LOKI_UNSET".into() });
    let inner = Arc::new(backstop::signals::ReplaySource::new(Arc::new(
        backstop::signals::load_scenario(std::path::Path::new(
            "fixtures/scenarios/holdout/holdout-good-healthy-000.json",
        ))
        .unwrap()
        .data,
    )));
    let e = LogSourceConfig::Loki(cfg).wrap(inner, None, START, 0).err().unwrap();
    assert!(e.to_string().contains("BACKSTOP_TEST_LOKI_UNSET") && e.to_string().contains("auth.token_env"), "{e}");
}

#[test]
fn watch_judges_loki_lines_and_recommends_rolling_back_a_new_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) as f64 / 1000.0;
    let (_l, url) = rt.block_on(loki_from(now));
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("loki.toml");
    let release = healthy_release();
    let logs = format!(
        "logs = {{ source = \"loki\", url = \"{url}\", tenant = \"shop\", \
         baseline_query = '{{app=\"checkout\",track=\"stable\"}}', canary_query = '{{app=\"checkout\",track=\"canary\"}}' }}\n"
    );
    std::fs::write(&cfg, release + &logs).unwrap();
    let run = |cfg: &std::path::Path, ledger: &str| {
        assert_cmd::Command::cargo_bin("backstop")
            .unwrap()
            .env_remove("BACKSTOP_CONFIG")
            .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "0"])
            .args(["--ledger", d.path().join(ledger).to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run(&cfg, "with-logs.db");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(11), "rollback recommended, no executor: {stdout}");
    assert!(stdout.contains("log template"), "{stdout}");
    // The same release without the log source promotes: the lines decided.
    let plain = d.path().join("plain.toml");
    std::fs::write(&plain, healthy_release()).unwrap();
    let out = run(&plain, "plain.db");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_logs_section_with_a_wrong_field_is_named() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    let release = healthy_release();
    std::fs::write(&cfg, release + "logs = { source = \"kubernetes\" }\n").unwrap();
    let out = assert_cmd::Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml") && stderr.contains("releases[0].logs.source") && stderr.contains("pods"),
        "{stderr}"
    );
}

/// A release replaying a healthy recorded canary, no log source.
fn healthy_release() -> String {
    crate::support::release_toml(
        "checkout",
        r#"{ kind = "scenario", path = "fixtures/scenarios/holdout/holdout-good-healthy-000.json" }"#,
        None,
    )
}
