//! The HAProxy executor against a real HAProxy: weights change, are read
//! back, and a vanished socket is a clear failure, never a false success.

use assert_cmd::Command;
use backstop::executor::{Guarded, HaproxyConfig, HaproxyExecutor, Planner};
use backstop::ledger::{Ledger, sqlite_url};
use backstop::policy::RollbackPlan;
use predicates::prelude::*;

use crate::support::haproxy::Haproxy;

/// The executor for the test HAProxy's backend `be` (servers `canary` and `stable`).
pub(crate) fn executor(socket: &str) -> HaproxyExecutor {
    let cfg = HaproxyConfig {
        socket: socket.into(),
        backend: "be".into(),
        canary_server: "canary".into(),
        stable_server: "stable".into(),
        full_weight: 100,
        drain_canary: true,
        timeout_s: 5,
    };
    HaproxyExecutor::new("haproxy/checkout", cfg)
}

fn rollback_plan() -> RollbackPlan {
    RollbackPlan {
        target: "haproxy/checkout".into(),
        from_revision: "v42".into(),
        to_revision: "v41".into(),
        reason: "r".into(),
    }
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test]
async fn rollback_sets_the_canary_weight_to_zero_and_verifies_on_both_socket_kinds() {
    for use_tcp in [false, true] {
        let h = Haproxy::start();
        let socket = if use_tcp { h.tcp_socket.clone() } else { h.unix_socket.display().to_string() };
        let e = executor(&socket);
        assert_eq!(e.weight("canary").await.unwrap(), 10);
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&sqlite_url(&dir.path().join("l.db"))).await.unwrap();
        let plan = e.plan_rollback(&rollback_plan(), 300).unwrap();
        let g = Guarded::new(std::sync::Arc::new(executor(&socket)));
        let permit = ledger
            .record_intent(&g, "rel", &backstop::ledger::Actor::agent("test"), 0, &plan, (None, Default::default()))
            .await
            .unwrap();
        g.execute(&plan, permit).await.unwrap();
        let v = g.verify(&plan).await.unwrap();
        assert!(v.verified, "{}", v.observed);
        assert_eq!((e.weight("canary").await.unwrap(), e.weight("stable").await.unwrap()), (0, 100));
        let state = e.command("show servers state be").await.unwrap();
        assert!(state.contains("canary"), "{state}");
    }
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test]
async fn promotion_moves_all_weight_to_the_canary() {
    let h = Haproxy::start();
    let e = executor(&h.unix_socket.display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&sqlite_url(&dir.path().join("l.db"))).await.unwrap();
    let plan = e.plan_promote("v42", 1800).unwrap();
    let g = Guarded::new(std::sync::Arc::new(executor(&h.unix_socket.display().to_string())));
    let permit = ledger
        .record_intent(&g, "rel", &backstop::ledger::Actor::agent("test"), 0, &plan, (None, Default::default()))
        .await
        .unwrap();
    g.execute(&plan, permit).await.unwrap();
    assert!(g.verify(&plan).await.unwrap().verified);
    assert_eq!((e.weight("canary").await.unwrap(), e.weight("stable").await.unwrap()), (100, 0));
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test]
async fn a_vanished_socket_is_a_clear_error() {
    let mut h = Haproxy::start();
    let e = executor(&h.unix_socket.display().to_string());
    h.stop();
    let err = e.weight("canary").await.unwrap_err().to_string();
    assert!(err.contains("unreachable"), "{err}");
}

/// `watch` of `cfg` SIGKILLed at the pause point `point` of its first
/// action, then run again to its end: the second run's exit code and output.
fn killed_at_then_restarted(point: &str, cfg: &std::path::Path, ledger: &str) -> (i32, String, String) {
    use crate::support::agents::Agent;
    let mut a = Agent::watch(cfg, ledger, 0, &[("BACKSTOP_TEST_PAUSE_AT", point)]);
    a.wait_for(&format!("paused at {point}"), std::time::Duration::from_secs(60));
    a.kill9();
    Agent::watch(cfg, ledger, 0, &[]).finish(std::time::Duration::from_secs(60))
}

fn config(dir: &tempfile::TempDir, socket: &str) -> std::path::PathBuf {
    let cfg = dir.path().join("haproxy.toml");
    std::fs::write(
        &cfg,
        crate::support::release_toml(
            "haproxy/checkout",
            r#"{ kind = "scenario", path = "fixtures/scenarios/holdout/holdout-bad-error-spike-strong-traffic-000.json" }"#,
            Some(&format!(
                r#"{{ kind = "haproxy", socket = "{socket}", backend = "be", canary_server = "canary", stable_server = "stable" }}"#
            )),
        ),
    )
    .unwrap();
    cfg
}

fn watch(dir: &tempfile::TempDir, cfg: &std::path::Path) -> assert_cmd::assert::Assert {
    Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "0"])
        .args(["--ledger", dir.path().join("l.db").to_str().unwrap()])
        .assert()
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[test]
fn watch_rolls_back_on_real_haproxy_and_fails_safe_when_it_is_gone() {
    let mut h = Haproxy::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, &h.unix_socket.display().to_string());
    watch(&dir, &cfg).code(10).stdout(predicate::str::contains("rolled back and the rollback verified"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = executor(&h.unix_socket.display().to_string());
    assert_eq!(rt.block_on(e.weight("canary")).unwrap(), 0);
    // The same release run again continues it: already rolled back, nothing runs twice.
    watch(&dir, &cfg).code(10).stdout(predicate::str::contains("recorded earlier"));
    // HAProxy gone (a fresh ledger, so a new release): the rollback cannot run;
    // watch holds for a human, names the error, exits 11, never 10.
    h.stop();
    let fresh = tempfile::tempdir().unwrap();
    watch(&fresh, &cfg).code(11).stdout(
        predicate::str::contains("Held for a human: the rollback failed").and(predicate::str::contains("unreachable")),
    );
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[test]
fn killed_mid_rollback_on_real_haproxy_the_restart_reads_the_weights_and_never_acts_twice() {
    let h = Haproxy::start();
    let socket = h.unix_socket.display().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = executor(&socket);
    for (point, expect_code, canary_after) in [("after_intent", 11, 10), ("after_execute", 10, 0)] {
        rt.block_on(e.command("set server be/canary weight 10")).unwrap();
        rt.block_on(e.command("set server be/canary state ready")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&dir, &socket);
        let ledger = dir.path().join("l.db").to_str().unwrap().to_string();
        // Restart: HAProxy's own state decides — untouched ⇒ held (exit 11), changed ⇒ reconciled (exit 10).
        let (code, out, err) = killed_at_then_restarted(point, &cfg, &ledger);
        assert_eq!(code, expect_code, "{point}: {out}\n{err}");
        assert_eq!(rt.block_on(e.weight("canary")).unwrap(), canary_after, "{point}: no blind retry, no undo");
        Command::cargo_bin("backstop").unwrap().args(["audit", "verify", "--ledger", &ledger]).assert().success();
        // Release memory survives the kill: v42 quarantined before the intent; v41 verified
        // on the backend only where the restart found the rollback done.
        let out =
            Command::cargo_bin("backstop").unwrap().args(["revisions", "--ledger", &ledger, "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(list.lines().any(|l| l.contains("v42") && l.contains("QUARANTINED")), "{point}: {list}");
        let v41_verified = list.lines().any(|l| l.contains("v41") && l.contains("verified on haproxy/checkout"));
        assert_eq!(v41_verified, canary_after == 0, "{point}: {list}");
    }
}

/// A release on the test HAProxy's backend, ramped 5 → 25 → 50 → promotion,
/// each step judged 300 s, judging the recorded `scenario`.
fn ramp_config(dir: &tempfile::TempDir, socket: &str, scenario: &str) -> std::path::PathBuf {
    let cfg = dir.path().join("haproxy.toml");
    let text = crate::support::release_toml(
        "haproxy/checkout",
        &format!(r#"{{ kind = "scenario", path = "fixtures/scenarios/holdout/{scenario}.json" }}"#),
        Some(&format!(
            r#"{{ kind = "haproxy", socket = "{socket}", backend = "be", canary_server = "canary", stable_server = "stable" }}"#
        )),
    ) + "ramp = { steps = [5, 25, 50, 100], min_judged_s = 300 }\n";
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// The weights HAProxy answered when each action was read back, as recorded.
fn read_back(dir: &tempfile::TempDir) -> Vec<(String, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acts = rt.block_on(crate::support::actions(&dir.path().join("l.db")));
    acts.into_iter().map(|a| (a.kind, a.observed)).collect()
}

/// Item 3 of the ecosystem issue on real HAProxy: each step's weights are
/// set through the Runtime API and read back; a healthy canary is promoted
/// from the last step, a failing one rolled back to weight 0 from its step.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[test]
fn a_ramp_on_real_haproxy_sets_each_steps_weights_then_promotes_or_rolls_back_from_its_step() {
    let h = Haproxy::start();
    let socket = h.unix_socket.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    watch(&dir, &ramp_config(&dir, &socket, "holdout-good-healthy-000")).code(0);
    let seen = read_back(&dir);
    let want = [
        ("raise 5", "be: canary weight 5, stable weight 95"),
        ("raise 25", "be: canary weight 25, stable weight 75"),
        ("raise 50", "be: canary weight 50, stable weight 50"),
        ("promote", "be: canary weight 100, stable weight 0"),
    ];
    assert_eq!(seen, want.map(|(k, o)| (k.to_string(), o.to_string())));
    assert_eq!((h.weight("canary"), h.weight("stable")), (100, 0));

    let h = Haproxy::start();
    let socket = h.unix_socket.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    watch(&dir, &ramp_config(&dir, &socket, "holdout-bad-error-spike-strong-traffic-000")).code(10);
    let seen = read_back(&dir);
    let (last, raises) = seen.split_last().unwrap();
    assert_eq!(last, &("rollback".to_string(), "be: canary weight 0, stable weight 100".to_string()));
    assert!(!raises.is_empty() && raises.iter().all(|(k, _)| k.starts_with("raise")), "{seen:?}");
    assert_eq!((h.weight("canary"), h.weight("stable")), (0, 100));
}

/// Killed mid-raise, the restart asks HAProxy what happened: a raise that
/// took effect is reconciled and the ramp goes on from that step; one that
/// never reached HAProxy is held for a human — never run again blindly.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[test]
fn killed_mid_raise_on_real_haproxy_the_restart_goes_on_from_the_step_haproxy_has_or_holds() {
    for (point, expect_code, canary_after) in [("after_intent", 12, 10), ("after_execute", 0, 100)] {
        let h = Haproxy::start();
        let dir = tempfile::tempdir().unwrap();
        let cfg = ramp_config(&dir, &h.unix_socket.display().to_string(), "holdout-good-healthy-000");
        let ledger = dir.path().join("l.db").to_str().unwrap().to_string();
        let (code, out, err) = killed_at_then_restarted(point, &cfg, &ledger);
        assert_eq!(code, expect_code, "{point}: {out}\n{err}");
        assert_eq!(h.weight("canary"), canary_after, "{point}: no blind retry");
        let kinds: Vec<(String, String)> = read_back(&dir).into_iter().collect();
        let first = &kinds[0];
        assert_eq!(first.0, "raise 5", "{point}: {kinds:?}");
        let reconciled = point == "after_execute";
        assert_eq!(first.1.contains("canary weight 5,"), reconciled, "{point}: {kinds:?}");
        // The report read back from the ledger lists each raise that took effect once:
        // the reconciled one is not counted again beside its record.
        let report = Command::cargo_bin("backstop")
            .unwrap()
            .env_remove("BACKSTOP_CONFIG")
            .args(["--config", cfg.to_str().unwrap(), "advise", "--format", "json", "--ledger", &ledger])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
        let weights = crate::support::raise_weights(&report["ramp"]);
        let want: &[u64] = if reconciled { &[5, 25, 50] } else { &[] };
        assert_eq!(weights, want, "{point}: {report}");
        Command::cargo_bin("backstop").unwrap().args(["audit", "verify", "--ledger", &ledger]).assert().success();
    }
}
