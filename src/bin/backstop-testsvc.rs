//! A small HTTP service to try backstop against: the end-to-end test runs two
//! of them behind HAProxy, and anyone can do the same by hand. One instance
//! can be told, at start or at run time, to fail (HTTP 500), slow down (each
//! request waits) or leak (each request keeps memory it never frees).
//!
//! ```text
//! backstop-testsvc --listen 127.0.0.1:8081 [--fault none|fail|slow|leak]
//! curl -X POST http://127.0.0.1:8081/fault/slow     # change the fault live
//! curl http://127.0.0.1:8081/metrics                 # Prometheus text format
//! ```
//!
//! Metrics: `testsvc_requests_total{code}`, `testsvc_request_duration_seconds`
//! (a histogram, measured inside the service) and
//! `process_resident_memory_bytes` (read from `/proc/self/status`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::{Parser, ValueEnum};

/// How long a request waits in `slow` mode.
const SLOW: Duration = Duration::from_millis(250);
/// What a request keeps in `leak` mode.
const LEAK_BYTES: usize = 256 * 1024;
/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Fault {
    None,
    Fail,
    Slow,
    Leak,
}

impl Fault {
    fn from_u8(v: u8) -> Fault {
        match v {
            1 => Fault::Fail,
            2 => Fault::Slow,
            3 => Fault::Leak,
            _ => Fault::None,
        }
    }
}

#[derive(Parser)]
#[command(about = "A small HTTP service that can be told to fail, slow down or leak")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// Fault at start.
    #[arg(long, value_enum, default_value = "none")]
    fault: Fault,
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    duration_sum: f64,
    buckets: [u64; BUCKETS.len()],
}

struct App {
    fault: AtomicU8,
    stats: Mutex<Stats>,
    leaked: Mutex<Vec<Vec<u8>>>,
    leaked_bytes: AtomicU64,
}

async fn serve_request(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    let start = Instant::now();
    let fault = Fault::from_u8(app.fault.load(Ordering::Relaxed));
    match fault {
        Fault::Slow => tokio::time::sleep(SLOW).await,
        Fault::Leak => {
            // Filled, not zeroed, so the pages are really resident.
            let kept = vec![0x5a_u8; LEAK_BYTES];
            if let Ok(mut l) = app.leaked.lock() {
                l.push(kept);
            }
            app.leaked_bytes.fetch_add(LEAK_BYTES as u64, Ordering::Relaxed);
        }
        Fault::None | Fault::Fail => {}
    }
    let (status, body) =
        if fault == Fault::Fail { (StatusCode::INTERNAL_SERVER_ERROR, "error\n") } else { (StatusCode::OK, "ok\n") };
    let took = start.elapsed().as_secs_f64();
    if let Ok(mut s) = app.stats.lock() {
        if status.is_success() {
            s.ok += 1;
        } else {
            s.errors += 1;
        }
        s.duration_sum += took;
        for (i, le) in BUCKETS.iter().enumerate() {
            if took <= *le {
                s.buckets[i] += 1;
            }
        }
    }
    (status, body)
}

async fn set_fault(State(app): State<Arc<App>>, Path(mode): Path<String>) -> (StatusCode, String) {
    match Fault::from_str(&mode, true) {
        Ok(f) => {
            app.fault.store(f as u8, Ordering::Relaxed);
            (StatusCode::OK, format!("fault: {mode}\n"))
        }
        Err(_) => (StatusCode::BAD_REQUEST, format!("unknown fault {mode:?}; expected none, fail, slow or leak\n")),
    }
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn metrics(State(app): State<Arc<App>>) -> String {
    let mut out = String::new();
    let (ok, errors, sum, buckets) = match app.stats.lock() {
        Ok(s) => (s.ok, s.errors, s.duration_sum, s.buckets),
        Err(_) => (0, 0, 0.0, [0; BUCKETS.len()]),
    };
    let _ = writeln!(out, "# TYPE testsvc_requests_total counter");
    let _ = writeln!(out, "testsvc_requests_total{{code=\"200\"}} {ok}");
    let _ = writeln!(out, "testsvc_requests_total{{code=\"500\"}} {errors}");
    let _ = writeln!(out, "# TYPE testsvc_request_duration_seconds histogram");
    for (le, n) in BUCKETS.iter().zip(buckets) {
        let _ = writeln!(out, "testsvc_request_duration_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "testsvc_request_duration_seconds_bucket{{le=\"+Inf\"}} {}", ok + errors);
    let _ = writeln!(out, "testsvc_request_duration_seconds_sum {sum}");
    let _ = writeln!(out, "testsvc_request_duration_seconds_count {}", ok + errors);
    let _ = writeln!(out, "# TYPE testsvc_leaked_bytes gauge");
    let _ = writeln!(out, "testsvc_leaked_bytes {}", app.leaked_bytes.load(Ordering::Relaxed));
    if let Some(rss) = resident_bytes() {
        let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Arc::new(App {
        fault: AtomicU8::new(args.fault as u8),
        stats: Mutex::new(Stats::default()),
        leaked: Mutex::new(Vec::new()),
        leaked_bytes: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/", get(serve_request))
        .route("/metrics", get(metrics))
        .route("/fault/{mode}", post(set_fault))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    axum::serve(listener, router).await?;
    Ok(())
}
