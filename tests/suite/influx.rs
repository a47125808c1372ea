//! The InfluxDB source against a real InfluxDB 1.6 (Debian's): points
//! written by the test, read back with InfluxQL per side, a canary that fails
//! judged as one, a refused query named by `config check`, and a stopped
//! server a source failure that holds.

use std::time::Duration;

use assert_cmd::Command;

use crate::support::influx::Influx;

/// An hour ago, every 10 s for 20 minutes: an error ratio of 1 % on both
/// sides, the canary's rising to 20 % from 300 s after `t0`.
fn history(t0: i64) -> String {
    let mut text = String::new();
    for side in ["stable", "canary"] {
        for k in 0..=120i64 {
            let v = if side == "canary" && k * 10 >= 300 { 0.2 } else { 0.01 };
            text.push_str(&format!("errors,side={side} ratio={v} {}\n", t0 + k * 10));
        }
    }
    text
}

fn config(dir: &std::path::Path, url: &str, query: &str) -> std::path::PathBuf {
    let source = format!(
        r#"{{ kind = "influxdb", url = "{url}", database = "app", baseline = "stable", canary = "canary", step_s = 10, duration_s = 600, timeout_s = 5, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "{query}" }}] }}"#
    );
    let cfg = dir.join(format!("influx-{}.toml", query.len()));
    std::fs::write(&cfg, crate::support::release_toml("haproxy/checkout", &source, None)).unwrap();
    cfg
}

fn backstop(cfg: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .env("XDG_DATA_HOME", dir)
        .args(["--config", cfg.to_str().unwrap()])
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs InfluxDB")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_judged_from_real_influxdb_and_a_stopped_server_holds() {
    let t0 = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000 - 3600;
    let mut influx = Influx::start();
    influx.write("app", &history(t0)).await;
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("backstop")).unwrap();
    let query = r#"SELECT mean(\"ratio\") FROM \"errors\" WHERE \"side\" = '{{ side }}' AND {{ time_filter }} GROUP BY time({{ step }})"#;
    let cfg = config(d.path(), &influx.url, query);
    let ledger = d.path().join("l.db").display().to_string();

    let (code, out, err) = backstop(&cfg, d.path(), &["config", "check"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("influxdb http://127.0.0.1") && out.contains("InfluxDB 1.6"), "{out}");

    let window = [t0.to_string(), (t0 + 600).to_string()];
    let advise = ["advise", "--format", "json", "--ledger", &ledger, "--from", &window[0], "--to", &window[1]];
    let (code, out, err) = backstop(&cfg, d.path(), &advise);
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["recommendation"], "rollback", "{report}");
    assert!(report["decided_at_s"].as_u64().unwrap() >= 300, "not before the fault: {report}");

    // A query InfluxDB refuses: config check names the metric, the query and InfluxDB's words.
    let broken = config(
        d.path(),
        &influx.url,
        r#"SELEC \"ratio\" WHERE '{{ side }}' {{ time_filter }} GROUP BY time({{ step }})"#,
    );
    let (code, out, err) = backstop(&broken, d.path(), &["config", "check"]);
    let text = format!("{out}{err}");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("refuses the query of `errors`") && text.contains("error parsing query"), "{text}");

    influx.stop();
    let (_, out, err) = backstop(&cfg, d.path(), &advise);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    assert_eq!(report["recommendation"], "hold", "a stopped InfluxDB holds, never passes: {report}");
    assert!(report["headline"].as_str().unwrap().contains("signal source `influxdb http://127.0.0.1"), "{report}");
}

#[test]
fn an_influxdb_template_without_its_time_filter_is_refused_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        "http://127.0.0.1:1",
        r#"SELECT mean(\"ratio\") FROM \"errors\" WHERE \"side\" = '{{ side }}' GROUP BY time({{ step }})"#,
    );
    let (code, out, err) = backstop(&cfg, d.path(), &["watch", "--pace-ms", "0"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("metrics[0].query") && err.contains("{{ time_filter }}"), "{err}");
}
