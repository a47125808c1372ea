//! The Prometheus source against a real Prometheus scraping a real HAProxy's
//! exporter: samples per side, missing data for bad or empty queries, a
//! weight change made by the HAProxy executor seen in the next samples, and
//! Prometheus down as a source failure that holds the release.

use std::time::Duration;

use assert_cmd::Command;
use backstop::executor::{HaproxyConfig, HaproxyExecutor};
use backstop::signals::{BadDirection, PromMetric, PrometheusConfig, PrometheusSource, SignalSource, TimeZero};
use predicates::prelude::*;

use crate::support::haproxy::Haproxy;
use crate::support::prometheus::Prometheus;

fn metric(name: &str, query: &str) -> PromMetric {
    PromMetric { name: name.into(), unit: "weight".into(), bad_direction: BadDirection::Down, query: query.into() }
}

/// The HAProxy executor on the test's backend `be` (servers `stable` and `canary`).
fn executor(h: &Haproxy) -> HaproxyExecutor {
    HaproxyExecutor::new(
        "haproxy/checkout",
        HaproxyConfig {
            socket: h.unix_socket.display().to_string(),
            backend: "be".into(),
            canary_server: "canary".into(),
            stable_server: "stable".into(),
            full_weight: 100,
            drain_canary: false,
            timeout_s: 5,
        },
    )
}

fn now() -> f64 {
    backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) as f64 / 1000.0
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy and Prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_both_sides_from_real_prometheus_and_fails_safe() {
    let h = Haproxy::start();
    let mut p = Prometheus::start(&format!("127.0.0.1:{}", h.metrics_port));
    let cfg = PrometheusConfig {
        auth: None,
        url: p.url.clone(),
        baseline: "stable".into(),
        canary: "canary".into(),
        step_s: 1,
        duration_s: 60,
        timeout_s: 5,
        traffic: None,
        metrics: vec![
            metric("weight", r#"haproxy_server_weight{proxy="be",server="{{ side }}"}"#),
            metric("broken", "sum(rate("),
            metric("empty", r#"haproxy_server_weight{proxy="no-such-backend",server="{{ side }}"}"#),
        ],
        distributions: vec![],
        labels: vec![],
    };
    let started = now();
    let source = PrometheusSource::starting_at(cfg, TimeZero::at(started)).unwrap();
    // Prometheus's first scrape lands at an offset of its own choosing: wait for samples.
    let mut obs = source.observe(0).await.unwrap();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        obs = source.observe((now() - started) as u64).await.unwrap();
        if obs.metrics[0].canary.iter().flatten().count() >= 3 {
            break;
        }
    }
    let weight = &obs.metrics[0];
    assert_eq!(weight.baseline.len(), obs.now_s as usize);
    assert!(
        weight.baseline.iter().flatten().all(|v| *v == 100.0) && weight.baseline.iter().flatten().count() >= 2,
        "{weight:?}"
    );
    assert!(
        weight.canary.iter().flatten().all(|v| *v == 10.0) && weight.canary.iter().flatten().count() >= 2,
        "{weight:?}"
    );
    assert!(obs.metrics[1].canary.iter().all(Option::is_none), "a bad query is missing data");
    assert!(obs.metrics[2].baseline.iter().all(Option::is_none), "an empty result is missing data");

    // The executor moves the weight; the next samples show it.
    let e = executor(&h);
    e.command("set server be/canary weight 0").await.unwrap();
    // Read until a scrape after the change lands (on loaded cores, later than the interval).
    let mut obs = source.observe((now() - started) as u64).await.unwrap();
    for _ in 0..60 {
        if obs.metrics[0].canary.iter().rev().flatten().next() == Some(&0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        obs = source.observe((now() - started) as u64).await.unwrap();
    }
    assert_eq!(obs.metrics[0].canary.iter().rev().flatten().next(), Some(&0.0), "{:?}", obs.metrics[0].canary);

    p.stop();
    let err = source.observe((now() - started) as u64).await.unwrap_err().to_string();
    assert!(err.contains("prometheus at") && err.contains("unavailable"), "{err}");
}

/// A blue/green switch has no stable side to compare with: the baseline is
/// the same server's window before the release (or one period earlier),
/// read from a real Prometheus by moving the query range back.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy and Prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_window_baseline_reads_the_past_from_real_prometheus() {
    use backstop::signals::{BaselineKind, BaselineWindow, PromBaseline, WindowKind};
    let h = Haproxy::start();
    let _p = Prometheus::start(&format!("127.0.0.1:{}", h.metrics_port));
    let url = _p.url.clone();
    let weight = metric("weight", r#"haproxy_server_weight{proxy="be",server="{{ side }}"}"#);
    let window = |kind, offset: Option<&str>, label: Option<&str>| {
        PromBaseline::Window(BaselineWindow {
            kind,
            offset: offset.map(str::to_string),
            label: label.map(str::to_string),
        })
    };
    let cfg = |baseline| PrometheusConfig {
        auth: None,
        url: url.clone(),
        baseline,
        canary: "canary".into(),
        step_s: 1,
        duration_s: 6,
        timeout_s: 5,
        traffic: None,
        metrics: vec![weight.clone()],
        distributions: vec![],
        labels: vec![],
    };
    // Let Prometheus record more than one window (6 s) of the canary at weight 10.
    let probe = PrometheusSource::starting_at(cfg("stable".into()), TimeZero::at(now())).unwrap();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let past =
            PrometheusSource::starting_at(cfg(window(WindowKind::Preceding, None, None)), TimeZero::at(now())).unwrap();
        if past.observe(0).await.unwrap().metrics[0].baseline.iter().flatten().count() >= 6 {
            break;
        }
    }
    drop(probe);
    // The release: the canary's server goes to weight 50.
    let e = executor(&h);
    // The release starts now; every sample of the earlier window was scraped before the change.
    let released = now();
    e.command("set server be/canary weight 50").await.unwrap();
    let preceding =
        PrometheusSource::starting_at(cfg(window(WindowKind::Preceding, None, None)), TimeZero::at(released)).unwrap();
    let seasonal = PrometheusSource::starting_at(
        cfg(window(WindowKind::Seasonal, Some("7s"), Some("stable"))),
        TimeZero::at(released),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let at = (now() - released) as u64;

    let obs = preceding.observe(at).await.unwrap();
    assert_eq!(obs.baseline_kind, BaselineKind::Preceding);
    let m = &obs.metrics[0];
    // The whole earlier window is in the past, so all of it is there at once.
    assert_eq!(m.baseline.len(), 6, "{m:?}");
    assert!(m.baseline.iter().flatten().count() >= 4 && m.baseline.iter().flatten().all(|v| *v == 10.0), "{m:?}");
    assert_eq!(m.canary.iter().rev().flatten().next(), Some(&50.0), "{m:?}");

    let obs = seasonal.observe(at).await.unwrap();
    assert_eq!(obs.baseline_kind, BaselineKind::Seasonal);
    let m = &obs.metrics[0];
    assert!(m.baseline.iter().flatten().count() >= 4 && m.baseline.iter().flatten().all(|v| *v == 100.0), "{m:?}");

    // A continued release read again from later (away too long, `run::resume`):
    // its canary moves, the window before stays before the release.
    let again = TimeZero { started_s: released, canary_s: released + 3.0 };
    let later = PrometheusSource::starting_at(cfg(window(WindowKind::Preceding, None, None)), again).unwrap();
    let m = &later.observe(at.saturating_sub(3)).await.unwrap().metrics[0];
    assert!(m.baseline.iter().flatten().count() >= 4 && m.baseline.iter().flatten().all(|v| *v == 10.0), "{m:?}");
    assert_eq!(m.canary.iter().rev().flatten().next(), Some(&50.0), "{m:?}");
}

#[test]
fn watch_holds_with_exit_3_while_prometheus_is_down() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("down.toml");
    std::fs::write(
        &cfg,
        crate::support::release_toml(
            "haproxy/checkout",
            r#"{ kind = "prometheus", url = "http://127.0.0.1:1", baseline = "stable", canary = "canary", step_s = 10, duration_s = 30, timeout_s = 2, metrics = [{ name = "errors", unit = "ratio", bad_direction = "up", query = "x{v=\"{{ side }}\"}" }] }"#,
            None,
        ),
    )
    .unwrap();
    Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "0"])
        .args(["--ledger", d.path().join("l.db").to_str().unwrap()])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("signal source failing").and(predicate::str::contains("127.0.0.1:1")));
}

/// A release on a source that cannot be reached
fn unreachable_release(dir: &std::path::Path, duration_s: u32) -> std::path::PathBuf {
    let cfg = dir.join("down.toml");
    let source = format!(
        r#"{{ kind = "prometheus", url = "http://127.0.0.1:1", baseline = "stable", canary = "canary", step_s = 10, duration_s = {duration_s}, timeout_s = 2, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "x{{v=\"{{{{ side }}}}\"}}" }}] }}"#
    );
    std::fs::write(&cfg, crate::support::release_toml("haproxy/checkout", &source, None)).unwrap();
    cfg
}

/// Fail fast: Prometheus down for the policy's `source.consecutive_failure_limit`
/// ticks in a row (6 by default) ends a 600-s window after 60 s with exit 3
/// and the cause, instead of holding to the window's end; the ledger shows
/// six ticks, not sixty.
#[test]
fn watch_ends_early_with_exit_3_when_prometheus_stays_down() {
    let d = tempfile::tempdir().unwrap();
    let cfg = unreachable_release(d.path(), 600);
    let ledger = d.path().join("l.db");
    let out = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "0"])
        .args(["--ledger", ledger.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("failed 6 ticks in a row") && text.contains("Connection refused"), "{text}");
    assert!(!text.contains("t=   70s"), "ended at the sixth tick: {text}");
    let list = Command::cargo_bin("backstop")
        .unwrap()
        .args(["audit", "list", "--ledger", ledger.to_str().unwrap()])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert_eq!(list.lines().filter(|l| l.contains(" tick ")).count(), 6, "{list}");
}

/// A query Prometheus itself refuses (a PromQL syntax error) stops `watch`
/// before its first tick and fails `config check`, both with exit 2 naming
/// the metric, the query and Prometheus' own error — not a window of warnings
/// ending in "not enough evidence".
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Prometheus")]
#[test]
fn a_query_prometheus_refuses_stops_watch_and_config_check_at_once_naming_it() {
    let p = Prometheus::start("127.0.0.1:1");
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    let source = format!(
        r#"{{ kind = "prometheus", url = "{}", baseline = "stable", canary = "canary", step_s = 10, duration_s = 600, timeout_s = 5, metrics = [{{ name = "up", unit = "ratio", bad_direction = "down", query = "up" }}, {{ name = "errors", unit = "ratio", bad_direction = "up", query = "sum(rate(x{{v=\"{{{{ side }}}}\"}}[1m])" }}] }}"#,
        p.url
    );
    std::fs::write(&cfg, crate::support::release_toml("haproxy/checkout", &source, None)).unwrap();
    let started = std::time::Instant::now();
    let watch = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "watch"])
        .args(["--ledger", d.path().join("l.db").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&watch.stderr);
    assert_eq!(watch.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`errors`") && err.contains("sum(rate(x{v=\"stable\"}[1m])") && err.contains("parse error"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "no tick was waited for");
    let check = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "config", "check"])
        .args(["--ledger", d.path().join("l.db").to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(2), "{out}");
    assert!(out.contains("`errors`") && out.contains("parse error"), "{out}");
}

/// Prometheus 2.42 (Debian 12) has no native histograms: classic `_bucket` series.
const SCORE_LE: [f64; 4] = [0.25, 0.5, 0.75, 1.0];

/// Share of a side's predictions per score bucket (the last is above 1.0, never used).
fn score_shares(drifted: bool) -> [f64; 5] {
    if drifted { [0.1, 0.15, 0.25, 0.5, 0.0] } else { [0.4, 0.3, 0.2, 0.1, 0.0] }
}

/// Thirty minutes of a fraud model's two versions, every 5 s, as OpenMetrics
/// text for `promtool`: a classic histogram of scores and a feedback counter
/// by outcome whose labels arrive 120 s after the prediction. From 600 s the
/// canary's scores drift and its accuracy falls from 92 % to 78 %.
fn model_history(t0: i64) -> String {
    let (dt, steps) = (5i64, 1800 / 5);
    let mut hist = String::from("# TYPE model_score histogram\n");
    let mut feedback = String::from("# TYPE model_feedback counter\n");
    for (version, rate) in [("stable", 40.0), ("canary", 10.0)] {
        let (mut cum, mut total) = ([0.0f64; 5], 0.0);
        for k in 0..=steps {
            let t = t0 + k * dt;
            let changed = version == "canary" && k * dt >= 600;
            for (c, s) in cum.iter_mut().zip(score_shares(changed)) {
                *c += rate * dt as f64 * s;
            }
            total += rate * dt as f64;
            let mut below = 0.0;
            for (le, c) in SCORE_LE.iter().zip(cum) {
                below += c;
                hist.push_str(&format!("model_score_bucket{{version=\"{version}\",le=\"{le}\"}} {below} {t}\n"));
            }
            hist.push_str(&format!("model_score_bucket{{version=\"{version}\",le=\"+Inf\"}} {total} {t}\n"));
            hist.push_str(&format!("model_score_count{{version=\"{version}\"}} {total} {t}\n"));
            hist.push_str(&format!("model_score_sum{{version=\"{version}\"}} {} {t}\n", total * 0.4));
        }
        for outcome in ["tp", "fp", "tn", "fn"] {
            let mut c = 0.0;
            for k in 0..=steps {
                let t = t0 + k * dt;
                // Labels arriving now are for predictions made 120 s ago, half of them labelled.
                let made = k * dt - 120;
                if made >= 0 {
                    let acc = if version == "canary" && made >= 600 { 0.78 } else { 0.92 };
                    let share = match outcome {
                        "tp" => 0.3 * acc,
                        "fn" => 0.3 * (1.0 - acc),
                        "tn" => 0.7 * acc,
                        _ => 0.7 * (1.0 - acc),
                    };
                    c += 0.5 * rate * dt as f64 * share;
                }
                feedback.push_str(&format!(
                    "model_feedback_total{{version=\"{version}\",outcome=\"{outcome}\"}} {c:.3} {t}\n"
                ));
            }
        }
    }
    format!("{hist}{feedback}# EOF\n")
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_canary_is_judged_from_real_prometheus_histogram_buckets_and_feedback_counters() {
    let t0 = now() as i64 - 2000;
    let _p = Prometheus::start_with_history(&model_history(t0));
    let cfg: PrometheusConfig = toml::from_str(&format!(
        r#"url = "{}"
           baseline = "stable"
           canary = "canary"
           step_s = 10
           duration_s = 1800
           metrics = []
           [[distributions]]
           name = "prediction_score"
           kind = "prediction"
           le = [0.25, 0.5, 0.75, 1.0]
           query = 'sum by (le) (increase(model_score_bucket{{version="{{{{ side }}}}"}}[{{{{ step }}}}]))'
           [[labels]]
           name = "label.fraud"
           delay_s = 120
           query = 'sum by (outcome) (increase(model_feedback_total{{version="{{{{ side }}}}"}}[{{{{ step }}}}]))'
        "#,
        _p.url
    ))
    .unwrap();
    let source = PrometheusSource::starting_at(cfg, TimeZero::at(t0 as f64)).unwrap();
    let obs = source.observe(1800).await.unwrap();
    let d = &obs.ml.distributions[0];
    assert_eq!(d.canary.len(), 180);
    // One step of the canary before the drift: 100 predictions, 40/30/20/10 by bucket.
    let early = d.canary[30].as_ref().expect("buckets of step 30");
    assert!((early.iter().sum::<f64>() - 100.0).abs() <= 2.0, "{early:?}");
    assert!((early[0] - 40.0).abs() <= 2.0 && early[4] == 0.0, "{early:?}");
    let late = d.canary[150].as_ref().unwrap();
    assert!((late[3] - 50.0).abs() <= 2.0, "{late:?}");
    let labels = &obs.ml.labels[0];
    assert!(
        labels.canary[5].is_none_or(|o| o.labelled() == 0),
        "nothing labelled before the delay: {:?}",
        labels.canary[5]
    );
    assert!(labels.baseline[100].is_some_and(|o| o.labelled() > 150), "{:?}", labels.baseline[100]);

    let j = backstop::judge::judge(&obs, &backstop::judge::JudgeConfig::default());
    assert_eq!(j.verdict, backstop::judge::Verdict::Fail, "{}", j.summary);
    let quality = j.findings.iter().find(|f| f.metric == "label.fraud").unwrap();
    assert_eq!(quality.status, backstop::judge::MetricStatus::Failing, "{}", quality.explanation);
    let drift = j.findings.iter().find(|f| f.metric == "prediction_score").unwrap();
    assert!(drift.effect.unwrap() > 0.2, "{}", drift.explanation);
}

/// An hour ago, every 10 s for 20 minutes: an error ratio of 1 % on both
/// sides, the canary's rising to 20 % from 300 s after `t0`.
fn error_history(t0: i64) -> String {
    let mut text = String::from("# TYPE errors_ratio gauge\n");
    for side in ["stable", "canary"] {
        for k in 0..=120i64 {
            let v = if side == "canary" && k * 10 >= 300 { 0.2 } else { 0.01 };
            text.push_str(&format!("errors_ratio{{v=\"{side}\"}} {v} {}\n", t0 + k * 10));
        }
    }
    text + "# EOF\n"
}

/// `advise --from/--to` judges a past window of real Prometheus data (backfilled
/// an hour back) as fast as it can be read — a 600-s window in far less
/// than 600 s of ticks — with progress on stderr and a new analysis id; a
/// window that has not ended yet and `--from` on recorded data are refused.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Prometheus")]
#[test]
fn advise_judges_a_past_prometheus_window_at_once() {
    let t0 = now() as i64 - 3600;
    let p = Prometheus::start_with_history(&error_history(t0));
    let d = tempfile::tempdir().unwrap();
    let source = format!(
        r#"{{ kind = "prometheus", url = "{}", baseline = "stable", canary = "canary", step_s = 10, duration_s = 600, timeout_s = 5, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "errors_ratio{{v=\"{{{{ side }}}}\"}}" }}] }}"#,
        p.url
    );
    let cfg = d.path().join("past.toml");
    std::fs::write(&cfg, crate::support::release_toml("haproxy/checkout", &source, None)).unwrap();
    let ledger = d.path().join("l.db");
    let advise = |extra: &[String]| {
        Command::cargo_bin("backstop")
            .unwrap()
            .env_remove("BACKSTOP_CONFIG")
            .args(["--config", cfg.to_str().unwrap(), "advise", "--format", "json"])
            .args(["--ledger", ledger.to_str().unwrap()])
            .args(extra)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    };
    let out = advise(&["--from".into(), t0.to_string(), "--to".into(), (t0 + 600).to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["recommendation"], "rollback", "{report}");
    assert!(report["release_id"].as_str().unwrap().contains("/advise/"), "{report}");
    assert!(report["decided_at_s"].as_u64().unwrap() >= 300, "not before the fault: {report}");
    assert!(err.contains("advise: checkout: t=") && err.contains("rollback"), "progress on stderr: {err}");

    // A window that has not ended, and --from on a source without a past.
    let soon = (now() as i64 - 60).to_string();
    let out = advise(&["--from".into(), soon]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a past window must have ended"));
    let out = Command::cargo_bin("backstop")
        .unwrap()
        .args(["--config", "fixtures/config/replay.toml", "advise", "--release", "bad", "--from", "1700000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("replays recorded data"));
}
