//! The VictoriaMetrics source against a real single-node VictoriaMetrics:
//! data written by the test through its import API, read back through its
//! Prometheus-compatible API with a MetricsQL-only query, a canary that fails
//! judged as one, `config check` naming the server, and a stopped server a
//! source failure.

use std::time::Duration;

use assert_cmd::Command;

use crate::support::victoria::Victoria;

/// An hour ago, every 10 s for 20 minutes: an error ratio of 1 % on both
/// sides, the canary's rising to 20 % from 300 s after `t0`. Milliseconds.
fn history(t0: i64) -> String {
    let mut text = String::new();
    for side in ["stable", "canary"] {
        for k in 0..=120i64 {
            let v = if side == "canary" && k * 10 >= 300 { 0.2 } else { 0.01 };
            text.push_str(&format!("errors_ratio{{v=\"{side}\"}} {v} {}\n", (t0 + k * 10) * 1000));
        }
    }
    text
}

fn backstop(cfg: &std::path::Path, ledger: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap()])
        .args(args)
        .args(["--ledger", ledger.to_str().unwrap()])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap()
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs VictoriaMetrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_judged_from_real_victoriametrics_with_metricsql_and_a_stopped_server_holds() {
    let t0 = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000 - 3600;
    let mut vm = Victoria::start();
    vm.import(&history(t0)).await;
    let d = tempfile::tempdir().unwrap();
    // `WITH` templates are MetricsQL: Prometheus would refuse this query.
    let query = r#"WITH (e = errors_ratio{v=\"{{ side }}\"}) e"#;
    let source = format!(
        r#"{{ kind = "victoriametrics", url = "{}", baseline = "stable", canary = "canary", step_s = 10, duration_s = 600, timeout_s = 5, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "{query}" }}] }}"#,
        vm.url
    );
    let cfg = d.path().join("vm.toml");
    std::fs::write(&cfg, crate::support::release_toml("haproxy/checkout", &source, None)).unwrap();
    let ledger = d.path().join("l.db");

    std::fs::create_dir(d.path().join("backstop")).unwrap();
    let check = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .env("XDG_DATA_HOME", d.path())
        .args(["--config", cfg.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{text}");
    assert!(text.contains("victoriametrics http://127.0.0.1") && text.contains(": VictoriaMetrics, version"), "{text}");

    let window = [t0.to_string(), (t0 + 600).to_string()];
    let out = backstop(&cfg, &ledger, &["advise", "--format", "json", "--from", &window[0], "--to", &window[1]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recommendation"], "rollback", "{report}");
    assert!(report["decided_at_s"].as_u64().unwrap() >= 300, "not before the fault: {report}");
    let errors = report["judge"]["findings"].as_array().and_then(|f| f.iter().find(|m| m["metric"] == "errors"));
    assert!(errors.is_some_and(|m| m["status"] == "failing"), "{report}");

    vm.stop();
    let out = backstop(&cfg, &ledger, &["advise", "--format", "json", "--from", &window[0], "--to", &window[1]]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recommendation"], "hold", "a stopped VictoriaMetrics holds, never passes: {report}");
    let headline = report["headline"].as_str().unwrap();
    assert!(headline.contains("signal source `victoriametrics at http://127.0.0.1"), "names the source: {headline}");
}
