//! SLO guards through the real CLI: `eval` over the guard scenarios with and
//! without a guarded policy, `watch` on a shared breach (the ledger and the
//! report show the hit), and `policy check` refusing a guard on a metric's
//! good side.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn backstop() -> Command {
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("RUST_LOG");
    c
}

fn eval(policy: Option<&str>) -> Vec<Value> {
    let mut c = backstop();
    c.args(["eval", "fixtures/scenarios/guards", "--format", "json"]);
    if let Some(p) = policy {
        c.args(["--policy", p]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["judges"]["backstop"]["results"].as_array().unwrap().clone()
}

fn find<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results.iter().find(|r| r["scenario"] == name).unwrap()
}

#[test]
fn eval_over_the_guard_scenarios_shows_each_semantic_and_its_hits() {
    let guarded = eval(Some("fixtures/policy/guards.toml"));
    let plain = eval(None);

    // Low-traffic canary over its guard: rolled back 60 s after onset, long before the statistics alone.
    let g = find(&guarded, "guard-low-traffic-canary-breach");
    let p = find(&plain, "guard-low-traffic-canary-breach");
    assert_eq!(g["decision"], "rollback");
    assert_eq!(g["decided_at_s"], 360);
    assert_eq!(g["guard_hits"][0]["breach"], "canary");
    assert!(p["decided_at_s"].as_u64().unwrap_or(u64::MAX) > 360, "{p}");

    // Shared breach: never promoted, never rolled back; a human is asked. Without a
    // guard the baseline's own jump holds it too.
    for r in [find(&guarded, "guard-shared-breach"), find(&plain, "guard-shared-breach")] {
        assert_eq!(r["decision"], "escalate", "{r}");
    }
    assert_eq!(find(&guarded, "guard-shared-breach")["guard_hits"][0]["breach"], "shared");

    // A preceding baseline already past the limit does not make the breach shared.
    let g = find(&guarded, "guard-preceding-baseline-breach");
    assert_eq!(g["decision"], "rollback", "{g}");
    assert_eq!(g["guard_hits"][0]["breach"], "canary");
    assert_eq!(find(&plain, "guard-preceding-baseline-breach")["decision"], "promote", "what the guard adds");

    // A spike shorter than for_s: no hit, no action.
    let g = find(&guarded, "guard-brief-spike");
    assert_eq!(g["decision"], "promote");
    assert!(g.get("guard_hits").is_none(), "{g}");
}

/// A folder with a `backstop.toml` replaying the shared-breach scenario.
fn shared_breach_release() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("backstop.toml");
    let scenario = crate::support::repo_path("fixtures/scenarios/guards/guard-shared-breach.json");
    let source = format!("{{ kind = \"scenario\", path = \"{scenario}\" }}");
    std::fs::write(&cfg, crate::support::release_toml("simulator/checkout", &source, None)).unwrap();
    (dir, cfg)
}

#[test]
fn watch_on_a_shared_breach_holds_and_the_ledger_and_report_show_the_guard() {
    let (dir, cfg) = shared_breach_release();
    let ledger = dir.path().join("l.db");
    let out = backstop()
        .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "0", "--format", "json"])
        .args(["--policy", "fixtures/policy/guards.toml", "--ledger", ledger.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "held for a human: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("incident-like condition on http_error_ratio"), "{text}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = rt.block_on(async {
        let l = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(&ledger)).await.unwrap();
        l.list(None, 10_000).await.unwrap()
    });
    let hit = records.iter().filter(|r| r.kind == "tick").find_map(|r| {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        body["rules"].as_array().unwrap().iter().any(|h| h["rule"] == "guard.shared_breach").then_some(body)
    });
    let hit = hit.expect("a tick records the shared-breach rule");
    assert_eq!(hit["judge"]["findings"][0]["guard"]["breach"], "shared");
    assert_eq!(hit["decision"]["decision"], "hold");

    // advise's Markdown scorecard has the guard column.
    let out = backstop()
        .args(["--config", cfg.to_str().unwrap(), "advise", "--pace-ms", "0", "--format", "markdown"])
        .args(["--policy", "fixtures/policy/guards.toml", "--ledger", ledger.to_str().unwrap()])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("| guard |"), "{md}");
    assert!(md.contains("both (incident) above 5.00% for 60s at t=460s"), "{md}");
}

#[test]
fn policy_check_refuses_a_guard_on_a_metrics_good_side() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        "version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n\
         [judge.metrics.throughput_per_pod_rps]\nmax = 50\n",
    )
    .unwrap();
    backstop()
        .args(["--config", "fixtures/config/simulator.toml", "policy", "check", policy.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("judge.metrics.throughput_per_pod_rps.max"))
        .stderr(predicate::str::contains("p.toml"))
        .stderr(predicate::str::contains("`min`"));
    // The same file is refused by the commands that run releases, before any tick.
    backstop()
        .args(["demo", "--tick-ms", "0", "--policy", policy.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("judge.metrics.throughput_per_pod_rps.max"));
    backstop()
        .args(["--config", "fixtures/config/simulator.toml", "policy", "check", "fixtures/policy/guards.toml"])
        .assert()
        .success();
}

/// The gate on a shared breach: Argo pauses (`inconclusive`), Flagger's
/// rollout check passes (no rollback), and the answer names the guard hit.
#[test]
fn the_gate_on_a_shared_breach_pauses_and_names_the_guard() {
    use std::time::{Duration, Instant};
    let (dir, cfg) = shared_breach_release();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .args(["--config", cfg.to_str().unwrap(), "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--policy", "fixtures/policy/guards.toml", "--pace-ms", "2"])
        .args(["--ledger", dir.path().join("l.db").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut argo = None;
    while Instant::now() < deadline {
        argo = crate::suite::watch::http_get(port, "/v1/gates/checkout");
        if argo.as_ref().is_some_and(|(_, b)| b.contains("\"guard_hits\":[{")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let flagger = crate::suite::watch::http_get(port, "/v1/gates/checkout?contract=flagger-rollout");
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let (code, body) = argo.expect("gate never answered");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["verdict"], "inconclusive", "{v}");
    assert_eq!(v["guard_hits"][0]["breach"], "shared", "{v}");
    assert_eq!(v["guard_hits"][0]["metric"], "http_error_ratio");
    assert_eq!(flagger.unwrap().0, 200, "no failed check, so Flagger does not roll back");
}
