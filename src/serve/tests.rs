use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::judge::{JudgeResult, Verdict};
use crate::orchestrator::{Observer, TickReport};
use crate::policy::{Decision, PolicyOutcome, Proposal, RollbackPlan};
use crate::run::gate::gate_verdict;

/// Flagger's webhook payload, as its docs (usage/webhooks.md) show it.
const FLAGGER_BODY: &str = r#"{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"85d557f47b","metadata":{"test":"all","token":"16688eb5e9f289f1991c"}}"#;

fn rollback() -> Decision {
    Decision::Rollback {
        plan: RollbackPlan {
            target: "t".into(),
            from_revision: "v42".into(),
            to_revision: "v41".into(),
            reason: "errors".into(),
        },
    }
}

/// A tick whose judge says `verdict` and whose policy decides `decision`.
fn tick(board: &GateBoard, verdict: Verdict, decision: Decision, now_s: u64) {
    let judge = JudgeResult {
        verdict,
        now_s,
        window_complete: now_s >= 1800,
        findings: vec![],
        summary: "s".into(),
        log_mining: None,
    };
    let outcome = PolicyOutcome { decision, trace: vec![] };
    board.observer("checkout", "v42").on_tick(&TickReport {
        tick: now_s / 10,
        now_s,
        duration_s: 1800,
        judge: &judge,
        outcome: &outcome,
        seq: 1,
        took: std::time::Duration::ZERO,
        budget: std::time::Duration::ZERO,
        consultation: None,
        observation: None,
    });
}

/// Every (decision × contract) cell: the gate answers policy's decision.
#[test]
fn every_decision_and_contract_cell() {
    use Contract::*;
    use GateVerdict::*;
    let hold = Decision::Hold { reason: "signal source failing".into() };
    let approval = Decision::RequireApproval {
        reason: "irreversible release".into(),
        proposed: Proposal::Rollback {
            plan: match rollback() {
                Decision::Rollback { plan } => plan,
                _ => unreachable!(),
            },
        },
    };
    let deny = Decision::Deny { reason: "rate limit".into() };
    let (ok, halt) = (StatusCode::OK, StatusCode::PRECONDITION_FAILED);
    // (decision, window running, verdict, [argo, flagger-rollout, confirm-traffic-increase, confirm-promotion])
    let cells = [
        (rollback(), true, Fail, [ok, halt, halt, halt]),
        (Decision::Promote, false, Pass, [ok, ok, ok, ok]),
        (Decision::Continue, true, Running, [ok, ok, ok, halt]),
        (Decision::Continue, false, Inconclusive, [ok, ok, halt, halt]),
        (hold.clone(), true, Inconclusive, [ok, ok, halt, halt]),
        (hold, false, Inconclusive, [ok, ok, halt, halt]),
        (approval, true, Inconclusive, [ok, ok, halt, halt]),
        (deny, true, Inconclusive, [ok, ok, halt, halt]),
    ];
    for (decision, running, verdict, statuses) in cells {
        assert_eq!(gate_verdict(&decision, running), verdict, "{decision:?} running={running}");
        for (contract, status) in
            [Argo, FlaggerRollout, FlaggerConfirmTrafficIncrease, FlaggerConfirmPromotion].into_iter().zip(statuses)
        {
            assert_eq!(contract.status(verdict), status, "{decision:?} × {contract:?}");
        }
    }
}

#[tokio::test]
async fn a_failing_canary_of_an_irreversible_release_gets_a_pause_not_a_rollback() {
    // The judge fails the canary, policy requires approval: Flagger must see no failed check.
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let approval = Decision::RequireApproval {
        reason: "irreversible release: a human decides".into(),
        proposed: Proposal::Rollback {
            plan: match rollback() {
                Decision::Rollback { plan } => plan,
                _ => unreachable!(),
            },
        },
    };
    tick(&board, Verdict::Fail, approval, 600);
    let (s, v) = ask(&board, "POST", "/v1/gates/checkout?contract=flagger-rollout", Some(FLAGGER_BODY)).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::OK, Some("inconclusive")));
    let (s, _) = ask(&board, "POST", "/v1/gates/checkout?contract=flagger-confirm-promotion", Some(FLAGGER_BODY)).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, v) = ask(&board, "GET", "/v1/gates/checkout", None).await;
    assert_eq!(
        (s, v["verdict"].as_str(), v["decision"]["decision"].as_str()),
        (StatusCode::OK, Some("inconclusive"), Some("require_approval"))
    );
}

#[tokio::test]
async fn a_passing_judge_under_a_policy_hold_does_not_promote() {
    // Freeze window, advisory autonomy, a required model missing, a model hold: all reach the gate as a hold.
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    tick(&board, Verdict::Pass, Decision::Hold { reason: "the model asks to hold for a human".into() }, 1800);
    let (s, v) = ask(&board, "POST", "/v1/gates/checkout?contract=flagger-promotion", Some(FLAGGER_BODY)).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::PRECONDITION_FAILED, Some("inconclusive")));
}

#[tokio::test]
async fn an_answer_names_its_revision_and_another_revision_gets_a_pause() {
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    tick(&board, Verdict::Pass, Decision::Promote, 1800);
    let (s, v) = ask(&board, "GET", "/v1/gates/checkout?revision=v42", None).await;
    assert_eq!((s, v["verdict"].as_str(), v["revision"].as_str()), (StatusCode::OK, Some("pass"), Some("v42")));
    let (s, v) = ask(&board, "GET", "/v1/gates/checkout?revision=v43&contract=flagger-confirm-promotion", None).await;
    assert_eq!(
        (s, v["verdict"].as_str(), v["revision"].as_str()),
        (StatusCode::PRECONDITION_FAILED, Some("inconclusive"), Some("v43"))
    );
    let (s, _) = ask(&board, "GET", "/v1/gates/checkout?revision=v43&contract=flagger-rollout", None).await;
    assert_eq!(s, StatusCode::OK, "a revision never judged must not count as a failed check");
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
    let resp = router(GateState { board: board.clone(), agent: None }).oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn argo_web_provider_always_gets_200_with_the_verdict() {
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let (s, v) = ask(&board, "GET", "/v1/gates/checkout", None).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::OK, Some("running")));
    tick(&board, Verdict::Fail, rollback(), 600);
    // Argo's web provider may POST a jsonBody of the user's choosing.
    let (s, v) = ask(&board, "POST", "/v1/gates/checkout", Some(r#"{"rollout":"checkout"}"#)).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::OK, Some("fail")));
    assert_eq!(v["now_s"], 600);
}

#[tokio::test]
async fn flagger_rollout_hook_fails_by_status_only_when_the_canary_fails() {
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let uri = "/v1/gates/checkout?contract=flagger-rollout";
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::OK);
    tick(&board, Verdict::Inconclusive, Decision::Continue, 600);
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::OK);
    tick(&board, Verdict::Fail, rollback(), 600);
    let (s, v) = ask(&board, "POST", uri, Some(FLAGGER_BODY)).await;
    assert_eq!((s, v["verdict"].as_str()), (StatusCode::PRECONDITION_FAILED, Some("fail")));
}

#[tokio::test]
async fn flagger_confirm_promotion_waits_for_policy_to_promote() {
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let uri = "/v1/gates/checkout?contract=flagger-promotion";
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::PRECONDITION_FAILED);
    tick(&board, Verdict::Inconclusive, Decision::Hold { reason: "not enough data".into() }, 1800);
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::PRECONDITION_FAILED);
    tick(&board, Verdict::Pass, Decision::Promote, 1800);
    assert_eq!(ask(&board, "POST", uri, Some(FLAGGER_BODY)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unknown_release_and_contract_are_errors() {
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let (s, v) = ask(&board, "GET", "/v1/gates/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("nope"));
    let (s, _) = ask(&board, "GET", "/v1/gates/checkout?contract=spinnaker", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn with_a_token_only_the_bearer_gets_an_answer_and_healthz_stays_open() {
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let app = listen::with_token(router(GateState { board, agent: None }), Some("s3cret-token-0123456789".into()));
    let call = |auth: Option<&str>, uri: &str| {
        let mut req = Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    assert_eq!(call(None, "/v1/gates/checkout").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(call(Some("Bearer wrong"), "/v1/gates/checkout").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let ok = call(Some("Bearer s3cret-token-0123456789"), "/v1/gates/checkout").await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(call(None, "/healthz").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn half_open_connections_are_dropped_and_real_requests_still_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = listen::Limits {
        header_read: std::time::Duration::from_millis(300),
        connection: std::time::Duration::from_secs(5),
        max_connections: 64,
        per_client: 256,
    };
    tokio::spawn(listen::serve(listener, router(GateState { board, agent: None }), limits, std::future::pending()));
    // 200 clients that start a request and never finish its headers (more than the connection cap).
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"GET /v1/gates/checkout HTTP/1.1\r\nHost: x\r\n").await;
        stalled.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // Every one of them has been closed by the server by now.
    for s in &mut stalled {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(_)) | Ok(Err(_))), "a half-open connection was kept open");
    }
    // A real request is answered at once.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/gates/checkout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_string(&mut reply)).await.unwrap().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// The audit's M1: one client keeping 300 idle connections open made 95 %
/// of other clients' requests fail. Each address gets its own share.
#[tokio::test]
async fn one_client_holding_idle_connections_cannot_starve_another() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = listen::Limits {
        header_read: std::time::Duration::from_secs(30),
        connection: std::time::Duration::from_secs(60),
        max_connections: 256,
        per_client: 32,
    };
    tokio::spawn(listen::serve(listener, router(GateState { board, agent: None }), limits, std::future::pending()));
    // The attacker: 300 connections from 127.0.0.2 that send nothing.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(s) = sock.connect(addr).await {
            idle.push(s);
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Everyone else (127.0.0.1) is still answered, every time.
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/gates/checkout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(2), s.read_to_string(&mut reply)).await.unwrap().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    drop(idle);
}

/// The gate follows the release to its end (DESIGN: "the gate answers the
/// release's real state to its end"): for every ending a person or policy
/// gives a running release, and every contract, the answer is never
/// `running` or `pass` for a stopped release, and `fail` only where a
/// rollback was decided.
#[test]
fn every_ending_and_contract_cell() {
    use crate::executor::ActionKind;
    use crate::release::ReleaseStatus as S;
    use Contract::*;
    use GateVerdict::*;
    let held_by = |reason: &str| S::Held { reason: reason.into() };
    let endings: Vec<(&str, Option<S>, GateVerdict)> = vec![
        ("an operator's abort", Some(S::Aborted { reason: "stop".into() }), Inconclusive),
        ("a person's rollback", Some(S::RolledBack), Fail),
        ("a person's promotion", Some(S::Promoted), Pass),
        ("an approval answered: rolled back", Some(S::RolledBack), Fail),
        ("an approval rejected", Some(held_by("alice rejected apr-1")), Inconclusive),
        ("an approval expired", Some(held_by("approval request apr-1 expired unanswered")), Inconclusive),
        (
            "a rollback that did not verify",
            Some(S::ActionNotVerified { action: ActionKind::Rollback, observed: "w=10".into() }),
            Fail,
        ),
        (
            "a promotion that failed",
            Some(S::ActionFailed { action: ActionKind::Promote, error: "x".into() }),
            Inconclusive,
        ),
        ("the agent stopped", Some(S::Interrupted), Inconclusive),
        ("the release could not run", None, Inconclusive),
    ];
    for (what, ending, want) in endings {
        let board = GateBoard::default();
        board.register("checkout", "v42", 1800);
        tick(&board, Verdict::Inconclusive, Decision::Continue, 300);
        assert_eq!(board.get("checkout").unwrap().verdict, Running, "judging before the end");
        board.ended("checkout", "v42", ending.as_ref());
        let got = board.get("checkout").unwrap();
        assert_eq!(got.verdict, want, "{what}");
        for c in [Argo, FlaggerRollout, FlaggerConfirmTrafficIncrease, FlaggerConfirmPromotion] {
            let code = c.status(got.verdict);
            if want != Pass {
                let advances =
                    matches!(c, FlaggerConfirmTrafficIncrease | FlaggerConfirmPromotion) && code.is_success();
                assert!(!advances, "{what}: {c:?} answered {code}: the engine would go on");
            }
        }
        // A late tick of the ended loop changes nothing.
        tick(&board, Verdict::Pass, Decision::Promote, 1800);
        assert_eq!(board.get("checkout").unwrap().verdict, want, "{what}: after a late tick");
    }
}

/// An operator's hold pauses the gate at once, and a resume gives the answer back to policy.
#[test]
fn an_operators_hold_pauses_the_gate_at_once_and_a_resume_gives_it_back() {
    use GateVerdict::*;
    let board = GateBoard::default();
    board.register("checkout", "v42", 1800);
    tick(&board, Verdict::Inconclusive, Decision::Continue, 300);
    board.operator("checkout", crate::orchestrator::human::OperatorState::Held);
    let held = board.get("checkout").unwrap();
    assert_eq!(held.verdict, Inconclusive);
    assert_eq!(Contract::FlaggerConfirmTrafficIncrease.status(held.verdict), StatusCode::PRECONDITION_FAILED);
    tick(&board, Verdict::Inconclusive, Decision::Continue, 310);
    assert_eq!(board.get("checkout").unwrap().verdict, Inconclusive, "held through later ticks");
    board.operator("checkout", crate::orchestrator::human::OperatorState::Running);
    tick(&board, Verdict::Inconclusive, Decision::Continue, 320);
    assert_eq!(board.get("checkout").unwrap().verdict, Running);
}
