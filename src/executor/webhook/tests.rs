use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};

use super::*;
use crate::executor::{ExecutionPermit, Guarded};

// The signing secret is read from an environment variable; tests use `PATH`,
// which every test process has, instead of changing the environment.
const SECRET_ENV: &str = "PATH";

fn secret() -> Vec<u8> {
    std::env::var(SECRET_ENV).unwrap().into_bytes()
}

#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<(String, String, bool)>>>,
    fail_first: usize,
}

/// Verifies as a receiver would: the signature over the timestamp, the
/// request line it received (method, Host header, path) and the body.
async fn hook(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let ts: i64 = h(TIMESTAMP_HEADER).parse().unwrap_or(0);
    let host = h("host");
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = Signed { method: "POST", authority: &host, path };
    let good = sign(&secret(), ts, request, &body).as_deref() == Some(h(SIGNATURE_HEADER).as_str());
    let mut calls = r.calls.lock().unwrap();
    calls.push((h(IDEMPOTENCY_HEADER), String::from_utf8_lossy(&body).into_owned(), good));
    if !good {
        return StatusCode::UNAUTHORIZED;
    }
    if calls.len() <= r.fail_first { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
}

async fn state() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "revision": "v41" }))
}

async fn start(r: Receiver) -> String {
    let app = Router::new().route("/hook", post(hook)).route("/state", get(state)).with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn executor(base: &str, secret_env: &str) -> Result<Guarded, ExecutorError> {
    let cfg = WebhookConfig {
        url: format!("{base}/hook"),
        secret_env: secret_env.into(),
        verify_url: Some(format!("{base}/state")),
        timeout_s: 5,
        retries: 3,
        allow_http: true,
    };
    Ok(Guarded::new(Arc::new(WebhookExecutor::new("argo/checkout", "v42", cfg, Arc::new(crate::clock::SystemClock))?)))
}

fn plan(e: &Guarded) -> ActionPlan {
    let rb = RollbackPlan {
        target: "argo/checkout".into(),
        from_revision: "v42".into(),
        to_revision: "v41".into(),
        reason: "r".into(),
    };
    e.plan_rollback(&rb, 100).unwrap()
}

#[tokio::test]
async fn signed_post_is_retried_under_one_idempotency_key_and_verified() {
    let r = Receiver { fail_first: 2, ..Receiver::default() };
    let base = start(r.clone()).await;
    let e = executor(&base, SECRET_ENV).unwrap();
    let p = plan(&e);
    let out = e.execute(&p, ExecutionPermit::issued_by_ledger(&p.id, 1)).await.unwrap();
    assert!(out.contains("after 3 attempt(s)"), "{out}");
    let calls = r.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|(key, _, good)| key == &p.id && *good), "{calls:?}");
    let body: serde_json::Value = serde_json::from_str(&calls[0].1).unwrap();
    assert_eq!((body["action"].as_str(), body["to_revision"].as_str()), (Some("rollback"), Some("v41")));
    assert!(e.verify(&p).await.unwrap().verified);
}

#[tokio::test]
async fn a_missing_secret_fails_at_start() {
    let err = executor("http://127.0.0.1:9", "BACKSTOP_WEBHOOK_SECRET_THAT_IS_NOT_SET").err().unwrap().to_string();
    assert!(err.contains("BACKSTOP_WEBHOOK_SECRET_THAT_IS_NOT_SET"), "{err}");
}

#[tokio::test]
async fn gives_up_after_the_retries_with_the_last_error() {
    let r = Receiver { fail_first: 100, ..Receiver::default() };
    let base = start(r.clone()).await;
    let e = executor(&base, SECRET_ENV).unwrap();
    let p = plan(&e);
    let err = e.execute(&p, ExecutionPermit::issued_by_ledger(&p.id, 1)).await.unwrap_err().to_string();
    assert!(err.contains("gave up after 4 attempts") && err.contains("503"), "{err}");
}

#[test]
fn signature_matches_an_independent_hmac_and_binds_method_host_and_path() {
    // Python: hmac.new(b"key", b"1531420618.POST.hooks.example:8443/rollback?x=1.{}", hashlib.sha256).hexdigest()
    let (authority, path) = signed_parts("https://hooks.example:8443/rollback?x=1").unwrap();
    let req = Signed { method: "POST", authority: &authority, path: &path };
    let sig = sign(b"key", 1_531_420_618, req, b"{}").unwrap();
    assert_eq!(sig, "v1=04bb0bdd6cc03719983b3d3f18bf16689cb07a92a58cdf93df344ce85359c37b");
    // The same body and time at another path, host or method is another signature.
    for other in [
        Signed { path: "/promote?x=1", ..req },
        Signed { authority: "evil.example:8443", ..req },
        Signed { method: "PUT", ..req },
    ] {
        assert_ne!(sign(b"key", 1_531_420_618, other, b"{}").unwrap(), sig, "{other:?}");
    }
    assert_eq!(signed_parts("https://h.example/a").unwrap(), ("h.example".into(), "/a".into()));
}

/// A receiver that redirects, one that floods, one whose state answers 500.
async fn start_hostile(reached: Arc<Mutex<usize>>) -> String {
    let elsewhere = reached.clone();
    let app = Router::new()
        .route("/redirect", post(|| async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")]) }))
        .route(
            "/elsewhere",
            post(move || {
                let reached = elsewhere.clone();
                async move {
                    *reached.lock().unwrap() += 1;
                    StatusCode::OK
                }
            }),
        )
        .route("/flood", post(|| async { "x".repeat(3 * 1024 * 1024) }))
        .route(
            "/state",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(serde_json::json!({ "revision": "v41" }))) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://user:hunter2@{addr}")
}

#[tokio::test]
async fn redirects_are_not_followed_replies_are_capped_verify_needs_2xx_and_urls_are_redacted() {
    let reached = Arc::new(Mutex::new(0));
    let base = start_hostile(reached.clone()).await;
    let mk = |path: &str| {
        let cfg = WebhookConfig {
            url: format!("{base}{path}?token=s3cret"),
            secret_env: SECRET_ENV.into(),
            verify_url: Some(format!("{base}/state")),
            timeout_s: 5,
            retries: 0,
            allow_http: true,
        };
        Guarded::new(Arc::new(
            WebhookExecutor::new("argo/checkout", "v42", cfg, Arc::new(crate::clock::SystemClock)).unwrap(),
        ))
    };
    let e = mk("/redirect");
    let p = plan(&e);
    let err = e.execute(&p, ExecutionPermit::issued_by_ledger(&p.id, 1)).await.unwrap_err().to_string();
    assert!(err.contains("307"), "{err}");
    assert_eq!(*reached.lock().unwrap(), 0, "the signed body must not be re-posted elsewhere");
    let e = mk("/flood");
    let p = plan(&e);
    let out = e.execute(&p, ExecutionPermit::issued_by_ledger(&p.id, 1)).await.unwrap();
    assert!(out.len() < 5 * 1024, "{} bytes kept", out.len());
    for text in [err.as_str(), out.as_str(), &p.steps.join(" ")] {
        assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
    }
    let v = e.verify(&p).await.unwrap();
    assert!(!v.verified && v.observed.contains("500"), "{v:?}");
}
