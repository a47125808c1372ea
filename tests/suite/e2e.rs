//! End to end on real programs: two instances of a small HTTP service, HAProxy
//! splitting traffic between them, Prometheus scraping HAProxy's exporter, a
//! load generator, and `backstop watch` acting on HAProxy. A healthy canary is
//! promoted; a canary that starts failing is rolled back (weight 0, verified).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::haproxy::{Haproxy, free_port};
use crate::support::prometheus::Prometheus;

/// One `backstop-testsvc` process on a free port; killed on drop.
struct Service {
    child: std::process::Child,
    port: u16,
}

impl Service {
    fn start() -> Service {
        let port = free_port();
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop-testsvc"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "backstop-testsvc did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Service { child, port }
    }

    async fn set_fault(&self, fault: &str) {
        let url = format!("http://127.0.0.1:{}/fault/{fault}", self.port);
        let r = reqwest::Client::new().post(url).send().await.unwrap();
        assert!(r.status().is_success(), "{fault}: {}", r.status());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// About 60 requests a second to the frontend until `stop`; bounded by `stop` and by time.
fn load(fe: u16, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let until = Instant::now() + Duration::from_secs(180);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            let _ = client.get(format!("http://127.0.0.1:{fe}/")).send().await;
            tokio::time::sleep(Duration::from_millis(16)).await;
        }
    });
}

const POLICY: &str = r#"version = 1
[rate_limit]
max_rollbacks = 3
window_minutes = 60
[judge]
warmup_s = 3
windows_s = [5, 10, 20]
min_window_samples = 3
consecutive_looks = 2
min_canary_requests = 20
# What an SRE would call a practical difference for this service.
[judge.metrics.latency_s]
absolute_tolerance = 0.05
[judge.metrics.resident_memory_bytes]
absolute_tolerance = 8e6
"#;

/// Error ratio from HAProxy's exporter; mean latency and resident memory
/// from the services' own `/metrics`, labelled `side` by Prometheus.
fn config(dir: &std::path::Path, prom: &str, socket: &str, duration_s: u64) -> std::path::PathBuf {
    let q = |code: &str| {
        format!(r#"sum(rate(haproxy_server_http_responses_total{{proxy="be",server="{{{{ side }}}}"{code}}}[5s]))"#)
    };
    let svc = |m: &str| format!(r#"sum(rate(testsvc_request_duration_seconds_{m}{{side="{{{{ side }}}}"}}[3s]))"#);
    let source = format!(
        r#"{{ kind = "prometheus", url = "{prom}", baseline = "stable", canary = "canary", step_s = 1, duration_s = {duration_s}, timeout_s = 3, metrics = [
  {{ name = "http_error_ratio", unit = "ratio", bad_direction = "up", query = '({five}) / ({all})' }},
  {{ name = "latency_s", unit = "s", bad_direction = "up", query = '({sum}) / ({count})' }},
  {{ name = "resident_memory_bytes", unit = "bytes", bad_direction = "up", query = 'process_resident_memory_bytes{{side="{{{{ side }}}}"}}' }},
] }}"#,
        five = q(r#",code="5xx""#),
        all = q(""),
        sum = svc("sum"),
        count = svc("count"),
    );
    let executor = format!(
        r#"{{ kind = "haproxy", socket = "{socket}", backend = "be", canary_server = "canary", stable_server = "stable" }}"#
    );
    let text = crate::support::release_toml("haproxy/checkout", &source, Some(&executor));
    let path = dir.join("backstop.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    path
}

fn watch(dir: &std::path::Path, cfg: &std::path::Path) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "1000", "--plain"])
        .args(["--policy", dir.join("policy.toml").to_str().unwrap(), "--ledger", dir.join("l.db").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn weight(socket: &str, server: &str) -> u32 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(format!("get weight be/{server}\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// One release on fresh programs: the canary gets `fault` (if any) after
/// 12 s of healthy traffic. Returns the dir holding the ledger.
#[allow(clippy::print_stdout)] // the time to shift traffic is this test's report
async fn release(fault: Option<&str>) -> tempfile::TempDir {
    let (stable, canary) = (Service::start(), Service::start());
    let fe = free_port();
    let h = Haproxy::start_in_front_of(stable.port, canary.port, fe);
    let (metrics, s_addr, c_addr) = (
        format!("127.0.0.1:{}", h.metrics_port),
        format!("127.0.0.1:{}", stable.port),
        format!("127.0.0.1:{}", canary.port),
    );
    let p =
        Prometheus::start_jobs(&[("haproxy", &metrics, ""), ("svc", &s_addr, "stable"), ("svc", &c_addr, "canary")]);
    let stop = Arc::new(AtomicBool::new(false));
    load(fe, stop.clone());
    let dir = tempfile::tempdir().unwrap();
    let socket = h.unix_socket.display().to_string();
    let cfg = config(dir.path(), &p.url, &socket, if fault.is_some() { 90 } else { 25 });
    let mut child = watch(dir.path(), &cfg);
    if let Some(fault) = fault {
        tokio::time::sleep(Duration::from_secs(12)).await;
        canary.set_fault(fault).await;
        let start = Instant::now();
        while weight(&socket, "canary").await != 0 {
            assert!(start.elapsed() < Duration::from_secs(60), "{fault}: no rollback within a minute of the fault");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("{fault}: fault start to traffic shifted on HAProxy: {:.1} s", start.elapsed().as_secs_f64());
    }
    let code = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap().code();
    stop.store(true, Ordering::Relaxed);
    let weights = (weight(&socket, "canary").await, weight(&socket, "stable").await);
    match fault {
        Some(f) => assert_eq!((code, weights), (Some(10), (0, 100)), "{f}: rolled back and verified"),
        None => assert_eq!((code, weights), (Some(0), (100, 0)), "healthy: promoted"),
    }
    let verified = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .args(["audit", "verify", "--ledger", dir.path().join("l.db").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(verified.success());
    dir
}

/// The metrics failing in the tick that decided the rollback, from the ledger.
async fn failing_metrics_at_rollback(dir: &std::path::Path) -> Vec<String> {
    let url = backstop::ledger::sqlite_url(&dir.join("l.db"));
    let ledger = backstop::ledger::Ledger::open(&url).await.unwrap();
    let records = ledger.list(None, 10_000).await.unwrap();
    let tick = records
        .iter()
        .filter(|r| r.kind == "tick")
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap())
        .find(|b| b["decision"]["decision"] == "rollback")
        .expect("a tick decided the rollback");
    tick["judge"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "failing")
        .map(|f| f["metric"].as_str().unwrap().to_string())
        .collect()
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy and Prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_slow_and_leaking_canaries_are_rolled_back_and_a_healthy_one_promoted_on_real_haproxy_and_prometheus() {
    for (fault, metric) in [("fail", "http_error_ratio"), ("slow", "latency_s"), ("leak", "resident_memory_bytes")] {
        let dir = release(Some(fault)).await;
        let failing = failing_metrics_at_rollback(dir.path()).await;
        assert!(failing.iter().any(|m| m == metric), "{fault}: the rollback cites {metric}, not only {failing:?}");
    }
    release(None).await;
}
