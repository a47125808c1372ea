use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::judge::{JudgeResult, Verdict};
use crate::policy::{Decision, PolicyOutcome};

/// Flagger's webhook payload, as its docs (usage/webhooks.md) show it.
const FLAGGER_BODY: &str = r#"{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"85d557f47b","metadata":{"test":"all","token":"16688eb5e9f289f1991c"}}"#;

fn tick(board: &GateBoard, verdict: Verdict, complete: bool) {
    let judge = JudgeResult { verdict, now_s: 600, window_complete: complete, findings: vec![], summary: "s".into() };
    let outcome = PolicyOutcome { decision: Decision::Continue, trace: vec![] };
    board.observer("checkout").on_tick(&TickReport {
        tick: 60,
        now_s: 600,
        duration_s: 1800,
        judge: &judge,
        outcome: &outcome,
        seq: 1,
    });
}

async fn ask(board: &GateBoard, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router(board.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn argo_web_provider_always_gets_200_with_the_verdict() {
    let board = GateBoard::default();
    board.register("checkout", 1800);
    let (s, v) = ask(&board, "GET", "/v1/gates/checkout", None).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::OK, Some("running")));
    tick(&board, Verdict::Fail, false);
    // Argo's web provider may POST a jsonBody of the user's choosing.
    let (s, v) = ask(&board, "POST", "/v1/gates/checkout", Some(r#"{"rollout":"checkout"}"#)).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::OK, Some("fail")));
    assert_eq!(v["now_s"], 600);
}

#[tokio::test]
async fn flagger_rollout_hook_fails_by_status_only_when_the_canary_fails() {
    let board = GateBoard::default();
    board.register("checkout", 1800);
    let uri = "/v1/gates/checkout?contract=flagger-rollout";
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::OK);
    tick(&board, Verdict::Inconclusive, false);
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::OK);
    tick(&board, Verdict::Fail, false);
    let (s, v) = ask(&board, "POST", uri, Some(FLAGGER_BODY)).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::PRECONDITION_FAILED, Some("fail")));
}

#[tokio::test]
async fn flagger_confirm_promotion_waits_for_a_pass() {
    let board = GateBoard::default();
    board.register("checkout", 1800);
    let uri = "/v1/gates/checkout?contract=flagger-promotion";
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::PRECONDITION_FAILED);
    tick(&board, Verdict::Inconclusive, true);
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::PRECONDITION_FAILED);
    tick(&board, Verdict::Pass, true);
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_release_and_contract_are_errors() {
    let board = GateBoard::default();
    board.register("checkout", 1800);
    let (s, v) = ask(&board, "GET", "/v1/gates/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("nope"));
    let (s, _) = ask(&board, "GET", "/v1/gates/checkout?contract=spinnaker", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
