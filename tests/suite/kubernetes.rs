//! The Kubernetes executors against a local HTTP server that speaks the API
//! (objects in `fixtures/k8s/`), asserting the exact requests: verb, path,
//! query, content type, patch body, and the bearer token from the kubeconfig.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use backstop::executor::{Guarded, InferenceServiceRollback, KubernetesConfig, KubernetesExecutor, Planner, Workload};
use backstop::ledger::{Ledger, sqlite_url};
use backstop::policy::RollbackPlan;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    content_type: String,
    auth: String,
    body: Value,
}

#[derive(Clone)]
struct Cluster {
    deployment: Arc<Mutex<Value>>,
    rollout: Arc<Mutex<Value>>,
    isvc: Arc<Mutex<Value>>,
    /// The Gateway API `HTTPRoute` `shop/checkout`.
    route: Arc<Mutex<Value>>,
    status_subresource: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Pod log reads that answer 500 before the API recovers.
    log_failures: Arc<std::sync::atomic::AtomicUsize>,
}

/// Release time 0 of the pod-log tests, unix seconds (2026-11-28T10:00:00Z).
const LOG_START: i64 = 1_795_860_000;

/// A pod's log as `GET …/pods/{name}/log?timestamps=true&sinceTime=…` answers
/// it: RFC 3339 stamped lines from `sinceTime` (second precision) on. The
/// canary logs a new kind of error three times per 10 s step; the stable pods
/// an upstream timeout once a minute, and info lines.
fn pod_log(pod: &str, since: i64) -> String {
    let mut out = String::new();
    for t in (LOG_START - 30)..(LOG_START + 1800) {
        let line = match (pod.contains("canary"), (t - LOG_START).rem_euclid(60)) {
            (true, k) if k % 10 < 3 => format!("ERROR payment declined: card token tok_{t} rejected by gateway"),
            (false, 7) => format!("ERROR upstream timeout after 3000ms calling inventory-{t}"),
            (_, 30) => "INFO healthz ok".to_string(),
            _ => continue,
        };
        if t >= since {
            let stamp = jiff::Timestamp::from_second(t).unwrap() + jiff::SignedDuration::from_millis(250);
            out.push_str(&format!("{stamp} {line}\n"));
        }
    }
    out
}

const ISVC: &str = "/apis/serving.kserve.io/v1beta1/namespaces/shop/inferenceservices/fraud-scorer";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/checkout";

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("fixtures/k8s/{name}")).unwrap()).unwrap()
}

/// A `Status` failure as the API server answers one (apiVersion v1, with `reason` and `code`).
fn failure(code: StatusCode, reason: &str, message: &str) -> axum::response::Response {
    let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":message,"reason":reason,"details":{},"code":code.as_u16()});
    (code, axum::Json(status)).into_response()
}

/// A pod's log since `sinceTime`, or the API server's 500 while
/// `log_failures` lasts (each answer uses one up).
fn pod_log_answer(c: &Cluster, path: &str, query: &str) -> axum::response::Response {
    if c.log_failures.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        c.log_failures.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "container logs unavailable");
    }
    let query: std::collections::HashMap<String, String> = serde_urlencoded::from_str(query).unwrap();
    let since = query.get("sinceTime").map_or(0, |t| t.parse::<jiff::Timestamp>().unwrap().as_second());
    let pod = path.trim_end_matches("/log").rsplit('/').next().unwrap_or("");
    (StatusCode::OK, pod_log(pod, since)).into_response()
}

/// A JSON Patch of the HTTPRoute applies whole or not at all; a failed
/// `test` is the API server's 422.
fn patch_route(c: &Cluster, body: Value) -> axum::response::Response {
    let mut route = c.route.lock().unwrap();
    let mut next = route.clone();
    let applied = serde_json::from_value::<json_patch::Patch>(body).map(|p| json_patch::patch(&mut next, &p));
    match applied {
        Ok(Ok(())) => {
            *route = next;
            (StatusCode::OK, axum::Json(route.clone())).into_response()
        }
        _ => failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "the server rejected our request due to an error in our request",
        ),
    }
}

/// Records what a client sent: each test reads back the requests it caused.
fn seen(c: &Cluster, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Value) {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    c.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        content_type: h("content-type"),
        auth: h("authorization"),
        body: body.clone(),
    });
}

async fn api(
    State(c): State<Cluster>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen(&c, &method, &uri, &headers, &body);
    let is_json_patch = headers.get("content-type").is_some_and(|v| v == "application/json-patch+json");
    let not_found = || failure(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
    let ok = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    match (method.as_str(), uri.path()) {
        ("GET", "/apis/apps/v1/namespaces/shop/deployments/broken") => {
            failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "etcdserver: request timed out")
        }
        ("GET", "/apis/apps/v1/namespaces/shop/deployments/checkout") => ok(c.deployment.lock().unwrap().clone()),
        ("GET", "/api/v1/namespaces/shop/pods") if uri.query().unwrap_or("").contains("track%3Dcanary") => {
            ok(fixture("pods-canary.json"))
        }
        ("GET", "/api/v1/namespaces/shop/pods") => ok(fixture("pods-stable.json")),
        ("GET", "/apis/events.k8s.io/v1/namespaces/shop/events") => ok(fixture("events.json")),
        ("GET", path) if path.starts_with("/api/v1/namespaces/shop/pods/") && path.ends_with("/log") => {
            pod_log_answer(&c, path, uri.query().unwrap_or(""))
        }
        ("GET", "/api/v1/namespaces/broken/pods") => {
            failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "boom")
        }
        ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/checkout") => {
            let patch: json_patch::Patch = serde_json::from_value(body).unwrap();
            let mut d = c.deployment.lock().unwrap();
            json_patch::patch(&mut d, &patch).unwrap();
            ok(d.clone())
        }
        ("GET", "/apis/apps/v1/namespaces/shop/replicasets") => ok(fixture("replicasets.json")),
        ("GET", "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout") => {
            ok(c.rollout.lock().unwrap().clone())
        }
        ("PATCH", "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout/status") if !c.status_subresource => {
            not_found()
        }
        ("PATCH", "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout/status")
        | ("PATCH", "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout") => {
            let mut r = c.rollout.lock().unwrap();
            json_patch::merge(&mut r, &body);
            ok(r.clone())
        }
        ("GET", ROUTE) => ok(c.route.lock().unwrap().clone()),
        ("PATCH", ROUTE) if is_json_patch => patch_route(&c, body),
        ("GET", ISVC) => ok(c.isvc.lock().unwrap().clone()),
        ("PATCH", ISVC) => {
            let mut o = c.isvc.lock().unwrap();
            json_patch::merge(&mut o, &body);
            ok(o.clone())
        }
        _ => not_found(),
    }
}

async fn cluster(status_subresource: bool) -> (Cluster, tempfile::TempDir, std::path::PathBuf) {
    let c = Cluster {
        deployment: Arc::new(Mutex::new(fixture("deployment.json"))),
        rollout: Arc::new(Mutex::new(fixture("rollout.json"))),
        isvc: Arc::new(Mutex::new(fixture("inferenceservice.json"))),
        route: Arc::new(Mutex::new(fixture("httproute.json"))),
        status_subresource,
        seen: Arc::new(Mutex::new(vec![])),
        log_failures: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().fallback(api).with_state(c.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: mock\n  context:\n    cluster: mock\n    user: ci\n    namespace: shop\ncurrent-context: mock\n\
             users:\n- name: ci\n  user:\n    token: test-token\n"
        ),
    )
    .unwrap();
    (c, dir, kubeconfig)
}

fn executor(workload: Workload, kubeconfig: &std::path::Path) -> KubernetesExecutor {
    let cfg = KubernetesConfig {
        workload,
        namespace: "shop".into(),
        name: "checkout".into(),
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
        inference_service_rollback: Default::default(),
    };
    KubernetesExecutor::new("k8s/shop/checkout", cfg).unwrap()
}

async fn roll_back(
    e: KubernetesExecutor,
    dir: &std::path::Path,
    to: &str,
) -> Result<String, backstop::executor::ExecutorError> {
    let ledger = Ledger::open(&sqlite_url(&dir.join("l.db"))).await.unwrap();
    let rb = RollbackPlan {
        target: "k8s/shop/checkout".into(),
        from_revision: "3".into(),
        to_revision: to.into(),
        reason: "r".into(),
    };
    let e = Guarded::new(std::sync::Arc::new(e));
    let plan = e.plan_rollback(&rb, 60).unwrap();
    let permit = ledger
        .record_intent(&e, "rel", &backstop::ledger::Actor::agent("test"), 0, &plan, (None, Default::default()))
        .await
        .unwrap();
    let out = e.execute(&plan, permit).await?;
    assert!(e.verify(&plan).await?.verified);
    Ok(out)
}

#[tokio::test]
async fn deployment_rollback_patches_the_template_of_the_recorded_revision() {
    let (c, dir, kubeconfig) = cluster(true).await;
    let e = executor(Workload::Deployment, &kubeconfig);
    roll_back(e, dir.path(), "2").await.unwrap();
    let seen = c.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.auth == "Bearer test-token"), "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].uri, "/apis/apps/v1/namespaces/shop/deployments/checkout");
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].uri, "/apis/apps/v1/namespaces/shop/replicasets?&labelSelector=app%3Dcheckout");
    let patch = seen.iter().find(|s| s.method == "PATCH").unwrap();
    assert_eq!(patch.uri, "/apis/apps/v1/namespaces/shop/deployments/checkout?");
    assert_eq!(patch.content_type, "application/json-patch+json");
    let expected = json!([
        { "op": "replace", "path": "/spec/template", "value": {
            "metadata": { "labels": { "app": "checkout" } },
            "spec": { "containers": [ { "name": "checkout", "image": "registry.example/checkout:v41",
                                         "ports": [ { "containerPort": 8080, "protocol": "TCP" } ] } ] } } },
        { "op": "replace", "path": "/metadata/annotations", "value": {
            // Skip-set keys keep the Deployment's own values (it has no desired-replicas);
            // the rest come from the ReplicaSet.
            "deployment.kubernetes.io/revision": "3",
            "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}",
            "release-note": "checkout v41",
            "team": "payments" } },
    ]);
    assert_eq!(patch.body, expected);
}

#[tokio::test]
async fn an_unrecorded_revision_or_a_foreign_replicaset_is_refused() {
    let (c, dir, kubeconfig) = cluster(true).await;
    let e = executor(Workload::Deployment, &kubeconfig);
    // Revision 41 exists only on a ReplicaSet another Deployment owns.
    let err = roll_back(e, dir.path(), "41").await.unwrap_err().to_string();
    assert!(err.contains("no ReplicaSet of checkout has revision 41"), "{err}");
    assert!(c.seen.lock().unwrap().iter().all(|s| s.method == "GET"), "nothing may be patched");
}

#[tokio::test]
async fn argo_rollout_abort_uses_the_status_subresource() {
    let (c, dir, kubeconfig) = cluster(true).await;
    roll_back(executor(Workload::ArgoRollout, &kubeconfig), dir.path(), "stable").await.unwrap();
    let seen = c.seen.lock().unwrap().clone();
    let patch = seen.iter().find(|s| s.method == "PATCH").unwrap();
    assert_eq!(patch.uri, "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout/status?");
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, json!({ "status": { "abort": true } }));
}

#[tokio::test]
async fn argo_rollout_abort_falls_back_to_the_resource_on_404() {
    let (c, dir, kubeconfig) = cluster(false).await;
    let out = roll_back(executor(Workload::ArgoRollout, &kubeconfig), dir.path(), "stable").await.unwrap();
    assert!(out.contains("no status subresource"), "{out}");
    let patches: Vec<String> =
        c.seen.lock().unwrap().iter().filter(|s| s.method == "PATCH").map(|s| s.uri.clone()).collect();
    assert_eq!(
        patches,
        vec![
            "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout/status?".to_string(),
            "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/checkout?".to_string(),
        ]
    );
}

#[tokio::test]
async fn api_server_errors_are_clear_failures() {
    let (_c, dir, kubeconfig) = cluster(true).await;
    let cfg = KubernetesConfig {
        workload: Workload::Deployment,
        namespace: "shop".into(),
        name: "missing".into(),
        kubeconfig: Some(kubeconfig),
        context: None,
        inference_service_rollback: Default::default(),
    };
    let e = KubernetesExecutor::new("k8s/shop/checkout", cfg).unwrap();
    let err = roll_back(e, dir.path(), "2").await.unwrap_err().to_string();
    assert!(err.contains("k8s/shop/checkout") && err.contains("404"), "{err}");
    let cfg = KubernetesConfig {
        workload: Workload::Deployment,
        namespace: "shop".into(),
        name: "broken".into(),
        kubeconfig: Some(dir.path().join("kubeconfig-copy")),
        context: None,
        inference_service_rollback: Default::default(),
    };
    std::fs::copy(dir.path().join("kubeconfig"), dir.path().join("kubeconfig-copy")).unwrap();
    let e = KubernetesExecutor::new("k8s/shop/checkout", cfg).unwrap();
    let err = roll_back(e, dir.path(), "2").await.unwrap_err().to_string();
    assert!(err.contains("500") && err.contains("etcdserver: request timed out"), "{err}");
    assert!(
        KubernetesExecutor::new(
            "t",
            KubernetesConfig {
                workload: Workload::Deployment,
                namespace: "n".into(),
                name: "x".into(),
                kubeconfig: Some("/nonexistent/kubeconfig".into()),
                context: None,
                inference_service_rollback: Default::default(),
            }
        )
        .is_err()
    );
}

/// Through the real CLI: the API server answers 500 when the rollback reads
/// the Deployment, so `watch` holds for a human with the API's message and
/// exits 11, never 10; the ledger records the intent and the failed outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_holds_with_a_clear_message_when_the_api_server_answers_500() {
    let (c, dir, kubeconfig) = cluster(true).await;
    let cfg = dir.path().join("backstop.toml");
    let executor = format!(
        r#"{{ kind = "kubernetes", workload = "deployment", namespace = "shop", name = "broken", kubeconfig = "{}" }}"#,
        kubeconfig.display()
    );
    let source =
        r#"{ kind = "scenario", path = "fixtures/scenarios/holdout/holdout-bad-error-spike-strong-traffic-000.json" }"#;
    // A Deployment's last-known-good is its revision number.
    let toml = crate::support::release_toml("k8s/shop/broken", source, Some(&executor)).replace("\"v41\"", "\"2\"");
    std::fs::write(&cfg, toml).unwrap();
    let ledger = dir.path().join("l.db");
    let out = watch_flat_out(&cfg, &ledger).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(11), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Held for a human: the rollback failed"), "{stdout}");
    assert!(stdout.contains("etcdserver: request timed out"), "{stdout}");
    assert!(c.seen.lock().unwrap().iter().all(|s| s.method == "GET"), "nothing was changed");
    let l = Ledger::open(&sqlite_url(&ledger)).await.unwrap();
    let kinds: Vec<String> = l.list(None, 1000).await.unwrap().into_iter().map(|r| r.kind).collect();
    let intent = kinds.iter().position(|k| k == "intent").expect("intent recorded before the action");
    assert_eq!(kinds.get(intent + 1).map(String::as_str), Some("outcome"));
}

fn pods(namespace: &str, kubeconfig: &std::path::Path) -> backstop::signals::WithPodSignals {
    let scenario = backstop::signals::load_scenario(std::path::Path::new(
        "fixtures/scenarios/holdout/holdout-good-healthy-000.json",
    ))
    .unwrap();
    let inner = std::sync::Arc::new(backstop::signals::ReplaySource::new(std::sync::Arc::new(scenario.data)));
    backstop::signals::WithPodSignals::new(
        inner,
        backstop::signals::PodSignalsConfig {
            namespace: namespace.into(),
            baseline_selector: "app=checkout,track=stable".into(),
            canary_selector: "app=checkout,track=canary".into(),
            kubeconfig: Some(kubeconfig.to_path_buf()),
            context: None,
            events: true,
        },
        RELEASE_START,
    )
}

/// When the release in [`pods`] began: 2026-11-20T10:00:00Z, after the
/// baseline's readiness warning in `fixtures/k8s/events.json`.
const RELEASE_START: f64 = 1_795_168_800.0;

#[tokio::test]
async fn pod_restarts_oom_kills_and_crash_loops_become_canary_events_once() {
    use backstop::signals::{Side, SignalSource};
    let (c, _dir, kubeconfig) = cluster(true).await;
    let source = pods("shop", &kubeconfig);
    let obs = source.observe(120).await.unwrap();
    let canary: Vec<&str> =
        obs.events.iter().filter(|e| e.target == Side::Canary && e.t_s == 120).map(|e| e.kind.as_str()).collect();
    // Pod status first, then the pod's Warning events (the next test reads those).
    assert_eq!(canary, vec!["restart", "oom", "crashloop", "BackOff"], "{:?}", obs.events);
    assert!(
        obs.events.iter().any(|e| e
            .message
            .contains("checkout-canary-6b8c9d7e5f-x2k4p: container checkout was OOMKilled (exit 137)"))
    );
    use backstop::signals::EventKind::{CrashLoop, Oom, Restart};
    let baseline_status = |e: &&backstop::signals::Event| {
        e.target == Side::Baseline && e.t_s == 120 && matches!(e.kind, Restart | Oom | CrashLoop)
    };
    assert!(!obs.events.iter().any(|e| baseline_status(&e)), "healthy baseline pods' status");
    let again = source.observe(130).await.unwrap();
    assert_eq!(
        again
            .events
            .iter()
            .filter(|e| e.target == Side::Canary && e.kind == backstop::signals::EventKind::CrashLoop)
            .count(),
        1
    );
    let seen = c.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.uri == "/api/v1/namespaces/shop/pods?&labelSelector=app%3Dcheckout%2Ctrack%3Dcanary"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn warning_events_of_both_sides_pods_since_the_release_began_are_events_once() {
    use backstop::signals::{EventKind, Side, SignalSource};
    let (c, _dir, kubeconfig) = cluster(true).await;
    let source = pods("shop", &kubeconfig);
    let obs = source.observe(120).await.unwrap();
    let warnings: Vec<_> = obs
        .events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Other(r) if r == "BackOff" || r == "Unhealthy"))
        .collect();
    assert_eq!(warnings.len(), 2, "{:?}", obs.events);
    let backoff = warnings.iter().find(|e| e.target == Side::Canary).expect("the canary's BackOff");
    assert_eq!(
        backoff.message,
        "checkout-canary-6b8c9d7e5f-x2k4p: BackOff (4 times): Back-off restarting failed container checkout in pod \
         checkout-canary-6b8c9d7e5f-x2k4p_shop(0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b)"
    );
    // The baseline's warning during the release, its control characters gone; not the one from before it.
    let unhealthy = warnings.iter().find(|e| e.target == Side::Baseline).expect("the baseline's liveness warning");
    assert!(
        unhealthy.message.starts_with("checkout-5f6d7c8b9a-d3e4f: Unhealthy: Liveness probe failed"),
        "{unhealthy:?}"
    );
    assert!(!unhealthy.message.contains('\u{1b}'), "{unhealthy:?}");
    assert!(!obs.events.iter().any(|e| e.message.contains("Readiness") || e.message.contains("payments")));
    assert!(!obs.events.iter().any(|e| e.kind == EventKind::Other("Pulled".into())), "Normal events are not warnings");

    let again = source.observe(130).await.unwrap();
    let backoffs = again.events.iter().filter(|e| e.kind == EventKind::Other("BackOff".into())).count();
    assert_eq!(backoffs, 1, "the same occurrence is one event: {:?}", again.events);
    let seen = c.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|s| s.uri.starts_with("/apis/events.k8s.io/v1/namespaces/shop/events")), "{seen:?}");
}

#[tokio::test]
async fn pod_status_unavailable_leaves_the_metrics_deciding() {
    use backstop::signals::SignalSource;
    let (_c, _dir, kubeconfig) = cluster(true).await;
    let obs = pods("broken", &kubeconfig).observe(120).await.unwrap();
    assert!(!obs.metrics.is_empty());
    assert!(obs.events.iter().all(|e| e.kind != backstop::signals::EventKind::CrashLoop));
}

fn pod_logs(kubeconfig: &std::path::Path) -> backstop::logs::WithLogs {
    let scenario = backstop::signals::load_scenario(std::path::Path::new(
        "fixtures/scenarios/holdout/holdout-good-healthy-000.json",
    ))
    .unwrap();
    let inner = std::sync::Arc::new(backstop::signals::ReplaySource::new(std::sync::Arc::new(scenario.data)));
    let pods = backstop::signals::PodSignalsConfig {
        namespace: "shop".into(),
        baseline_selector: "app=checkout,track=stable".into(),
        canary_selector: "app=checkout,track=canary".into(),
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
        events: true,
    };
    let cfg = backstop::logs::LogSourceConfig::Kubernetes(backstop::logs::PodLogsConfig {
        container: Some("checkout".into()),
        limit_bytes: 1 << 20,
    });
    cfg.wrap(inner, Some(&pods), LOG_START as f64, 0).unwrap()
}

#[tokio::test]
async fn pod_logs_of_both_sides_are_read_from_where_the_last_tick_ended() {
    use backstop::signals::{Side, SignalSource};
    let (c, _dir, kubeconfig) = cluster(true).await;
    let source = pod_logs(&kubeconfig);
    let first = source.observe(60).await.unwrap();
    let canary =
        first.logs.iter().filter(|l| l.target == Side::Canary && l.message.starts_with("ERROR payment")).count();
    // Steps 0..60 s: three lines in each of six steps, nothing from before the release.
    assert_eq!(canary, 18, "{:?}", first.logs);
    assert!(first.logs.iter().all(|l| l.t_s <= 60));
    let timeouts: Vec<(u64, &str)> = first
        .logs
        .iter()
        .filter(|l| l.message.starts_with("ERROR upstream"))
        .map(|l| (l.t_s, l.level.as_str()))
        .collect();
    assert_eq!(timeouts, [(7, "error"), (7, "error")], "one line per stable pod");
    assert!(first.logs.iter().any(|l| l.level == "info"));
    let second = source.observe(120).await.unwrap();
    let payment: Vec<u64> =
        second.logs.iter().filter(|l| l.message.starts_with("ERROR payment")).map(|l| l.t_s).collect();
    assert_eq!(payment.len(), 36, "no line twice, none lost");
    let seen = c.seen.lock().unwrap().clone();
    let logs: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).filter(|u| u.contains("/log?")).collect();
    assert!(
        logs.iter().any(|u| u.starts_with("/api/v1/namespaces/shop/pods/checkout-canary-6b8c9d7e5f-x2k4p/log?")
            && u.contains("container=checkout")
            && u.contains("timestamps=true")
            && u.contains("sinceTime=2026-11-28T10%3A00%3A00Z")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|u| u.contains("sinceTime=2026-11-28T10%3A01%3A00Z")),
        "the second tick reads from 60 s: {logs:?}"
    );
    assert!(seen.iter().all(|s| s.auth == "Bearer test-token" && s.method == "GET"));
}

#[tokio::test]
async fn a_new_error_template_in_canary_pod_logs_fails_the_canary() {
    use backstop::judge::MetricStatus;
    use backstop::signals::SignalSource;
    let (_c, _dir, kubeconfig) = cluster(true).await;
    let source = pod_logs(&kubeconfig);
    let policy = backstop::policy::PolicyFile::load(std::path::Path::new("policies/default.toml")).unwrap();
    let mut failing = None;
    for now in (60..=900).step_by(60) {
        let r = backstop::judge::judge(&source.observe(now).await.unwrap(), &policy.judge);
        let metrics_ok = r.findings.iter().filter(|f| f.log.is_none()).all(|f| f.status != MetricStatus::Failing);
        assert!(metrics_ok, "a healthy scenario's metrics: {:?}", r.findings);
        if let Some(f) = r.findings.iter().find(|f| f.status == MetricStatus::Failing) {
            failing = Some((now, f.clone()));
            break;
        }
    }
    let (at, f) = failing.expect("the canary's new error template fails within 15 minutes");
    let log = f.log.as_ref().expect("a log-template finding");
    assert!(log.template.contains("payment declined"), "{log:?}");
    assert_eq!((log.baseline_lines, log.level.as_str()), (0, "error"));
    assert!(at <= 600, "failed at {at} s");
}

#[tokio::test]
async fn a_pod_log_outage_loses_no_lines_and_leaves_the_metrics_deciding() {
    use backstop::signals::{Side, SignalSource};
    let (c, _dir, kubeconfig) = cluster(true).await;
    c.log_failures.store(1, std::sync::atomic::Ordering::SeqCst);
    let source = pod_logs(&kubeconfig);
    let first = source.observe(60).await.unwrap();
    assert!(!first.metrics.is_empty(), "metrics still observed");
    assert!(first.logs.iter().all(|l| l.target == Side::Canary), "the baseline's read failed: {:?}", first.logs);
    let second = source.observe(120).await.unwrap();
    let baseline =
        second.logs.iter().filter(|l| l.target == Side::Baseline && l.message.starts_with("ERROR upstream")).count();
    assert_eq!(baseline, 4, "two pods, two minutes, read after the outage");
}

fn kserve(kubeconfig: &std::path::Path, how: InferenceServiceRollback) -> KubernetesExecutor {
    let cfg = KubernetesConfig {
        workload: Workload::InferenceService,
        namespace: "shop".into(),
        name: "fraud-scorer".into(),
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
        inference_service_rollback: how,
    };
    KubernetesExecutor::new("k8s/shop/checkout", cfg).unwrap()
}

#[tokio::test]
async fn kserve_canary_rollback_sends_canary_traffic_to_zero_and_reads_it_back() {
    let (c, dir, kubeconfig) = cluster(true).await;
    let out = roll_back(kserve(&kubeconfig, InferenceServiceRollback::Traffic), dir.path(), "1").await.unwrap();
    assert!(out.contains("canaryTrafficPercent = 0"), "{out}");
    let seen = c.seen.lock().unwrap().clone();
    let patch = seen.iter().find(|s| s.method == "PATCH").expect("one patch");
    assert!(patch.uri.starts_with(ISVC), "{patch:?}");
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, json!({ "spec": { "predictor": { "canaryTrafficPercent": 0 } } }));
    let isvc = c.isvc.lock().unwrap().clone();
    assert_eq!(isvc["spec"]["predictor"]["canaryTrafficPercent"], 0);
    assert_eq!(isvc["spec"]["predictor"]["model"]["storageUri"], "gs://models/fraud-scorer/v2", "model left alone");
    assert!(seen.iter().all(|s| s.auth == "Bearer test-token"));
}

#[tokio::test]
async fn kserve_rollback_to_the_previous_storage_uri_removes_the_canary_split() {
    let (c, dir, kubeconfig) = cluster(true).await;
    let e = kserve(&kubeconfig, InferenceServiceRollback::StorageUri);
    roll_back(e, dir.path(), "gs://models/fraud-scorer/v1").await.unwrap();
    let isvc = c.isvc.lock().unwrap().clone();
    assert_eq!(isvc["spec"]["predictor"]["model"]["storageUri"], "gs://models/fraud-scorer/v1");
    assert!(isvc["spec"]["predictor"].get("canaryTrafficPercent").is_none(), "{isvc}");
    assert_eq!(isvc["spec"]["predictor"]["model"]["modelFormat"]["name"], "sklearn", "the rest of the spec stays");
}

#[tokio::test]
async fn a_kserve_read_back_that_disagrees_is_not_verified() {
    let (c, _dir, kubeconfig) = cluster(true).await;
    let e = Guarded::new(std::sync::Arc::new(kserve(&kubeconfig, InferenceServiceRollback::Traffic)));
    let rb = RollbackPlan {
        target: "k8s/shop/checkout".into(),
        from_revision: "2".into(),
        to_revision: "1".into(),
        reason: "r".into(),
    };
    let plan = e.plan_rollback(&rb, 60).unwrap();
    // Nothing was patched: the canary still has 10 %.
    let v = e.verify(&plan).await.unwrap();
    assert!(!v.verified && v.observed.contains("canaryTrafficPercent 10"), "{v:?}");
    assert!(c.seen.lock().unwrap().iter().all(|s| s.method == "GET"));
}

/// `backstop watch --pace-ms 0` of `cfg` into `ledger`, off the runtime's
/// threads (the API server the test serves runs on them).
async fn watch_flat_out(cfg: &std::path::Path, ledger: &std::path::Path) -> std::process::Output {
    let args =
        ["--config", &cfg.display().to_string(), "watch", "--pace-ms", "0", "--ledger", &ledger.display().to_string()]
            .map(str::to_string);
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
            .env_remove("BACKSTOP_CONFIG")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `backstop watch` of a recorded release whose traffic is the Gateway API
/// route `shop/checkout` (fixtures/k8s/httproute.json), ramped 5 → 25 → 50
/// → promotion, each step judged 300 s: its exit code and output.
async fn watch_ramp(dir: &std::path::Path, kubeconfig: &std::path::Path, scenario: &str) -> (Option<i32>, String) {
    let executor = format!(
        r#"{{ kind = "gateway_api", namespace = "shop", route = "checkout", canary_backend = "checkout-v2", stable_backend = "checkout-v1", kubeconfig = "{}" }}"#,
        kubeconfig.display()
    );
    let source = format!(r#"{{ kind = "scenario", path = "fixtures/scenarios/{scenario}.json" }}"#);
    let toml = crate::support::release_toml("gw/shop/checkout", &source, Some(&executor))
        + "ramp = { steps = [5, 25, 50, 100], min_judged_s = 300 }\n";
    let cfg = dir.join("backstop.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = watch_flat_out(&cfg, &dir.join("l.db")).await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// The (canary, stable) weights each PATCH of the route set in its split
/// rule (rule 1: `checkout-v1` at index 0, `checkout-v2` at 1), in order,
/// checking that every write is preceded by a test of the backend's name.
fn route_weights(c: &Cluster) -> Vec<(u64, u64)> {
    let seen = c.seen.lock().unwrap();
    let patches = seen.iter().filter(|s| s.method == "PATCH" && s.uri.starts_with(ROUTE));
    patches
        .map(|p| {
            assert_eq!(p.content_type, "application/json-patch+json", "{p:?}");
            let ops = p.body.as_array().expect("a JSON Patch is an array");
            let op = |path: &str| ops.iter().find(|o| o["path"] == path).map(|o| o["value"].clone());
            for (j, name) in [(0, "checkout-v1"), (1, "checkout-v2")] {
                assert_eq!(op(&format!("/spec/rules/1/backendRefs/{j}/name")), Some(json!(name)), "{ops:?}");
            }
            assert!(ops.iter().all(|o| !o["path"].as_str().unwrap().starts_with("/spec/rules/0")), "{ops:?}");
            let w = |j: usize| op(&format!("/spec/rules/1/backendRefs/{j}/weight")).and_then(|v| v.as_u64()).unwrap();
            (w(1), w(0))
        })
        .collect()
}

/// Item 3 of the ecosystem issue on the Gateway API: backstop drives the
/// route's weights 5 → 25 → 50 itself, each step read back, the rule that
/// routes test traffic untouched, and promotes from the last step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_api_ramp_raises_the_route_step_by_step_and_promotes_from_the_last() {
    let (c, dir, kubeconfig) = cluster(true).await;
    let (code, out) = watch_ramp(dir.path(), &kubeconfig, RAMP_GOOD).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(route_weights(&c), [(5, 95), (25, 75), (50, 50), (100, 0)]);
    let acts: Vec<(String, String)> =
        crate::support::actions(&dir.path().join("l.db")).await.into_iter().map(|a| (a.kind, a.result)).collect();
    let want = [("raise 5", "verified"), ("raise 25", "verified"), ("raise 50", "verified"), ("promote", "verified")];
    assert_eq!(acts, want.map(|(k, r)| (k.to_string(), r.to_string())));
    let route = c.route.lock().unwrap().clone();
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["weight"], 1, "the header-matched rule is left alone");
    assert_eq!(route["spec"]["rules"][1]["backendRefs"][1]["port"], 8080, "the rest of each backendRef stays");
    assert!(out.contains("raise to 25%"), "{out}");
}

/// A canary that fails mid-ramp is rolled back from the step it reached:
/// its weight goes to 0 and no step comes after the fault is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_mid_ramp_is_rolled_back_to_zero_from_its_step() {
    let (c, dir, kubeconfig) = cluster(true).await;
    let (code, out) = watch_ramp(dir.path(), &kubeconfig, RAMP_BAD).await;
    assert_eq!(code, Some(10), "{out}");
    let weights = route_weights(&c);
    let (last, raises) = weights.split_last().unwrap();
    assert_eq!(*last, (0, 100), "rollback sends the canary's weight to 0: {weights:?}");
    assert!(!raises.is_empty() && raises.len() < 3, "the fault (onset 410 s) came before the last step: {weights:?}");
    assert_eq!(raises, &[(5, 95), (25, 75)][..raises.len()]);
    let last = crate::support::actions(&dir.path().join("l.db")).await.pop().expect("an action");
    assert_eq!((last.kind.as_str(), last.result.as_str()), ("rollback", "verified"));
}

/// A route that lost one of the two backends (edited by hand, say) is
/// refused with both names, and nothing is patched: the ramp never writes
/// a weight it cannot place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_both_backends_is_refused_by_name_and_never_patched() {
    let (c, dir, kubeconfig) = cluster(true).await;
    c.route.lock().unwrap()["spec"]["rules"][1]["backendRefs"].as_array_mut().unwrap().remove(0);
    let (code, out) = watch_ramp(dir.path(), &kubeconfig, RAMP_GOOD).await;
    assert_eq!(code, Some(12), "held for a human: {out}");
    assert!(out.contains("`checkout-v2`") && out.contains("`checkout-v1`"), "{out}");
    assert!(route_weights(&c).is_empty(), "nothing patched");
    let last = crate::support::actions(&dir.path().join("l.db")).await.pop().expect("an action");
    assert_eq!((last.kind.as_str(), last.result.as_str()), ("raise 5", "failed"));
}

/// Recorded releases the ramp tests judge: one healthy, one whose errors spike from 410 s.
const RAMP_GOOD: &str = "holdout/holdout-good-healthy-000";
const RAMP_BAD: &str = "holdout/holdout-bad-error-spike-strong-traffic-000";
