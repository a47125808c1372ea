//! The Prometheus source against a real Prometheus scraping a real HAProxy's
//! exporter: samples per side, missing data for bad or empty queries, a
//! weight change made by the HAProxy executor seen in the next samples, and
//! Prometheus down as a source failure that holds the release.

use std::time::Duration;

use assert_cmd::Command;
use backstop::executor::{HaproxyConfig, HaproxyExecutor};
use backstop::signals::{BadDirection, PromMetric, PrometheusConfig, PrometheusSource, SignalSource};
use predicates::prelude::*;

use crate::support::haproxy::Haproxy;
use crate::support::prometheus::Prometheus;

fn metric(name: &str, query: &str) -> PromMetric {
    PromMetric { name: name.into(), unit: "weight".into(), bad_direction: BadDirection::Down, query: query.into() }
}

fn now() -> f64 {
    backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) as f64 / 1000.0
}

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
    };
    let started = now();
    let source = PrometheusSource::starting_at(cfg, started).unwrap();
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
    let e = HaproxyExecutor::new(
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
    );
    e.command("set server be/canary weight 0").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let obs = source.observe((now() - started) as u64).await.unwrap();
    assert_eq!(obs.metrics[0].canary.iter().rev().flatten().next(), Some(&0.0), "{:?}", obs.metrics[0].canary);

    p.stop();
    let err = source.observe((now() - started) as u64).await.unwrap_err().to_string();
    assert!(err.contains("prometheus at") && err.contains("unavailable"), "{err}");
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
