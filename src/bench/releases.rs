//! Many releases in one process: one tokio task per release, each judging
//! and deciding at every tick, as `watch` will.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::judge::{JudgeResult, judge};
use crate::ledger::{Actor, Append, LeaseOp, Ledger, Record, TickRecord};
use crate::policy::{History, ModelInput, PolicyFile, PolicyInput, PolicyOutcome, ReleaseFacts, RunMode, evaluate};
use crate::signals::simulator::{SimConfig, Simulator};

/// What one run of `n` releases measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReleasesReport {
    /// Releases watched.
    pub releases: usize,
    /// Ticks per release.
    pub ticks: u32,
    /// Ticks whose work ended after the next tick was due.
    pub missed: u64,
    /// Process CPU time / (wall time × cores), during the ticks.
    pub cpu_share: f64,
    /// Peak resident memory of the process so far, MiB.
    pub peak_rss_mib: f64,
    /// Mean work per tick per release, µs.
    pub mean_tick_us: f64,
    /// With a ledger: tick records appended (each with its lease renewal).
    pub appends: u64,
    /// With a ledger: appends per second of wall time.
    pub appends_per_s: f64,
    /// With a ledger: 99th percentile of one append's latency, ms.
    pub append_p99_ms: f64,
}

fn cpu_seconds() -> f64 {
    // utime + stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Watch `n` simulated releases for `ticks` ticks of `tick` each, starting
/// `start_s` seconds into every release (so the judge has history to chew).
pub async fn concurrent_releases(
    n: usize,
    ticks: u32,
    tick: Duration,
    start_s: u64,
    policy: &PolicyFile,
    ledger: Option<Arc<Ledger>>,
) -> ReleasesReport {
    let policy = Arc::new(policy.clone());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let missed = Arc::new(AtomicU64::new(0));
    let busy_ns = Arc::new(AtomicU64::new(0));
    let sims: Vec<Arc<Simulator>> = (0..n)
        .map(|i| {
            let s = Simulator::new(SimConfig { seed: i as u64, ..SimConfig::default() });
            s.observe_at(start_s);
            Arc::new(s)
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let t0 = tokio::time::Instant::now() + tick;
    let mut tasks = Vec::with_capacity(n);
    for (i, sim) in sims.into_iter().enumerate() {
        let (policy, missed, busy) = (policy.clone(), missed.clone(), busy_ns.clone());
        let (ledger, latencies) = (ledger.clone(), latencies.clone());
        // Releases start at different moments, so their ticks spread over the interval.
        let offset = tick.mul_f64(i as f64 / n.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            let facts = ReleaseFacts {
                release_id: format!("bench-{i}"),
                service: "bench".into(),
                target: format!("sim/{i}"),
                declared_targets: vec![format!("sim/{i}")],
                candidate_revision: "v2".into(),
                last_known_good: Some("v1".into()),
                irreversible: false,
                environment: "bench".into(),
            };
            for k in 0..ticks {
                let due = t0 + offset + tick * k;
                tokio::time::sleep_until(due).await;
                let started = Instant::now();
                let obs = sim.observe_at(start_s + 10 * (u64::from(k) + 1));
                let judged = judge(&obs, &policy.judge);
                let input = PolicyInput {
                    judge: &judged,
                    model: &ModelInput::NotConfigured,
                    release: &facts,
                    history: &History::default(),
                    mode: RunMode::Act,
                    signal_failure: None,
                    now_ms: 0,
                };
                let outcome = evaluate(&policy, &input);
                if let Some(l) = &ledger {
                    let t = Instant::now();
                    let ok = l.submit(tick_append(&facts, k, judged, outcome)).await.is_ok();
                    if ok && let Ok(mut v) = latencies.lock() {
                        v.push(t.elapsed().as_micros() as u64);
                    }
                }
                busy.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                if tokio::time::Instant::now() > due + tick {
                    missed.fetch_add(1, Ordering::Relaxed);
                }
                // Yield between releases so one busy task cannot starve the timers.
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let mut lat = latencies.lock().map(|v| v.clone()).unwrap_or_default();
    lat.sort_unstable();
    let p99 = lat.get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    ReleasesReport {
        appends: lat.len() as u64,
        appends_per_s: lat.len() as f64 / wall,
        append_p99_ms: p99 as f64 / 1000.0,
        releases: n,
        ticks,
        missed: missed.load(Ordering::Relaxed),
        cpu_share: (cpu_seconds() - cpu0) / (wall * cores),
        peak_rss_mib: peak_rss_mib(),
        mean_tick_us: busy_ns.load(Ordering::Relaxed) as f64 / 1000.0 / (n as f64 * f64::from(ticks)).max(1.0),
    }
}

/// A tick record with its lease renewal, as the orchestrator writes it.
fn tick_append(facts: &ReleaseFacts, k: u32, judged: JudgeResult, outcome: PolicyOutcome) -> Append {
    let tick = TickRecord {
        tick: u64::from(k) + 1,
        now_s: judged.now_s,
        mode: RunMode::Act,
        inputs_digest: String::new(),
        judge: judged,
        model: ModelInput::NotConfigured,
        consultation: None,
        prompt_version: None,
        tool_calls: vec![],
        decision: outcome.decision,
        rules: outcome.trace,
        lease: None,
    };
    Append {
        release_id: facts.release_id.clone(),
        actor: Actor::agent("bench"),
        at_ms: 0,
        record: Some(Record::Tick(Box::new(tick))),
        lease: Some(LeaseOp::Claim { target: facts.target.clone(), holder: "bench".into(), ttl_ms: 60_000 }),
    }
}
