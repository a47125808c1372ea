//! End to end on real programs: two instances of a small HTTP service, HAProxy
//! splitting traffic between them, Prometheus scraping HAProxy's exporter, a
//! load generator, and `backstop watch` acting on HAProxy. A healthy canary is
//! promoted; a canary that starts failing is rolled back (weight 0, verified).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::support::haproxy::{Haproxy, free_port};
use crate::support::prometheus::Prometheus;

/// One instance of the service; `failing` makes it answer 500.
async fn service(failing: Arc<AtomicBool>) -> u16 {
    let app =
        Router::new().route(
            "/",
            get(move || {
                let failing = failing.clone();
                async move {
                    if failing.load(Ordering::Relaxed) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
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
"#;

fn config(dir: &std::path::Path, prom: &str, socket: &str, duration_s: u64) -> std::path::PathBuf {
    let q = |code: &str| {
        format!(r#"sum(rate(haproxy_server_http_responses_total{{proxy="be",server="{{{{ side }}}}"{code}}}[5s]))"#)
    };
    let source = format!(
        r#"{{ kind = "prometheus", url = "{prom}", baseline = "stable", canary = "canary", step_s = 1, duration_s = {duration_s}, timeout_s = 3, metrics = [{{ name = "http_error_ratio", unit = "ratio", bad_direction = "up", query = '({five}) / ({all})' }}] }}"#,
        five = q(r#",code="5xx""#),
        all = q(""),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_and_healthy_canary_promoted_on_real_haproxy_and_prometheus() {
    for failing_run in [true, false] {
        let canary_fails = Arc::new(AtomicBool::new(false));
        let stable = service(Arc::new(AtomicBool::new(false))).await;
        let canary = service(canary_fails.clone()).await;
        let fe = free_port();
        let h = Haproxy::start_in_front_of(stable, canary, fe);
        let p = Prometheus::start(&format!("127.0.0.1:{}", h.metrics_port));
        let stop = Arc::new(AtomicBool::new(false));
        load(fe, stop.clone());
        let dir = tempfile::tempdir().unwrap();
        let socket = h.unix_socket.display().to_string();
        let cfg = config(dir.path(), &p.url, &socket, if failing_run { 90 } else { 25 });
        let mut child = watch(dir.path(), &cfg);
        let code = if failing_run {
            tokio::time::sleep(Duration::from_secs(12)).await;
            canary_fails.store(true, Ordering::Relaxed);
            let fault = Instant::now();
            while weight(&socket, "canary").await != 0 {
                assert!(fault.elapsed() < Duration::from_secs(60), "no rollback within a minute of the fault");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!("fault start to traffic shifted on HAProxy: {:.1} s", fault.elapsed().as_secs_f64());
            tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap().code()
        } else {
            tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap().code()
        };
        stop.store(true, Ordering::Relaxed);
        if failing_run {
            assert_eq!(code, Some(10), "rolled back and verified");
            assert_eq!((weight(&socket, "canary").await, weight(&socket, "stable").await), (0, 100));
        } else {
            assert_eq!(code, Some(0), "promoted");
            assert_eq!((weight(&socket, "canary").await, weight(&socket, "stable").await), (100, 0));
        }
        let verified = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
            .args(["audit", "verify", "--ledger", dir.path().join("l.db").to_str().unwrap()])
            .status()
            .unwrap();
        assert!(verified.success());
    }
}
