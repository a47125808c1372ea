//! Many releases in one process: one tokio task per release, each judging
//! and deciding at every tick, as `watch` will.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Settings;
use crate::executor::ExecutorConfig;
use crate::judge::judge;
use crate::orchestrator::{Observer, TickReport};
use crate::policy::{History, ModelInput, PolicyFile, PolicyInput, ReleaseFacts, RunMode, evaluate};
use crate::release::ReleaseConfig;
use crate::run::{Runtime, RuntimeError};
use crate::signals::SourceConfig;
use crate::signals::simulator::{SimConfig, Simulator};

/// What one run of `n` releases measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReleasesReport {
    /// Releases watched.
    pub releases: usize,
    /// Ticks run, all releases together.
    pub ticks: u64,
    /// Ticks whose work ended after the next tick was due.
    pub missed: u64,
    /// Process CPU time / (wall time × cores), during the ticks.
    pub cpu_share: f64,
    /// Peak resident memory of the process so far, MiB.
    pub peak_rss_mib: f64,
    /// Mean work per tick per release, µs.
    pub mean_tick_us: f64,
    /// A tick's work (observe, judge, decide, its record committed), median and 99th percentile, ms.
    pub tick_ms: (f64, f64),
    /// With a ledger: appends while the releases ticked (starts, tick records with their
    /// lease renewals).
    pub appends: u64,
    /// With a ledger: those appends per second of wall time.
    pub appends_per_s: f64,
    /// With a ledger: one append's latency, submitted to committed, median and 99th percentile, ms.
    pub append_ms: (f64, f64),
    /// With a ledger: the writer's back-pressure (appends wait, never dropped).
    pub queue: crate::ledger::QueuePressure,
    /// With a ledger: appends as every release stopped at once (pause and end records),
    /// and their 99th-percentile latency, ms.
    pub stop: (u64, f64),
}

/// The `p`-th percentile of `v` (sorted here), in the units given.
fn percentile(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1))).copied().unwrap_or(0)
}

/// Latencies of one run, µs: a tick's work, appends while ticking, appends while stopping.
#[derive(Clone, Default)]
struct Latencies {
    ticks: Arc<std::sync::Mutex<Vec<u64>>>,
    appends: Arc<std::sync::Mutex<Vec<u64>>>,
    stopping: Arc<std::sync::Mutex<Vec<u64>>>,
    /// Set once every release has had its ticks: appends from then on are the stop's.
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl Latencies {
    fn append(&self, d: Duration) {
        let to = if self.stopped.load(Ordering::Relaxed) { &self.stopping } else { &self.appends };
        to.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(d.as_micros() as u64);
    }

    fn take(v: &std::sync::Mutex<Vec<u64>>) -> Vec<u64> {
        std::mem::take(&mut *v.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

pub(super) fn cpu_seconds() -> f64 {
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

/// Tick counters shared by every release of one run.
#[derive(Clone, Default)]
struct Counters {
    ticks: Arc<AtomicU64>,
    busy_ns: Arc<AtomicU64>,
    missed: Arc<AtomicU64>,
    lat: Latencies,
}

impl Counters {
    /// One tick that took `took`; late when it overran its budget.
    fn tick(&self, took: Duration, late: bool) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        self.busy_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        if late {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
        self.lat.ticks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(took.as_micros() as u64);
    }
}

/// Process CPU and wall time from the start of a run.
struct Meter {
    cpu0: f64,
    wall0: Instant,
}

impl Meter {
    fn start() -> Self {
        Self { cpu0: cpu_seconds(), wall0: Instant::now() }
    }

    /// The report for `n` releases; `queue`: the ledger's back-pressure, if there is one.
    fn report(self, n: usize, c: &Counters, queue: crate::ledger::QueuePressure) -> ReleasesReport {
        let wall = self.wall0.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        let ms = |v: &mut Vec<u64>, p| percentile(v, p) as f64 / 1000.0;
        let (mut ticking, mut appends, mut stopping) =
            (Latencies::take(&c.lat.ticks), Latencies::take(&c.lat.appends), Latencies::take(&c.lat.stopping));
        let ticks = c.ticks.load(Ordering::Relaxed);
        ReleasesReport {
            tick_ms: (ms(&mut ticking, 50), ms(&mut ticking, 99)),
            appends: appends.len() as u64,
            appends_per_s: appends.len() as f64 / wall,
            append_ms: (ms(&mut appends, 50), ms(&mut appends, 99)),
            queue,
            stop: (stopping.len() as u64, ms(&mut stopping, 99)),
            releases: n,
            ticks,
            missed: c.missed.load(Ordering::Relaxed),
            cpu_share: (cpu_seconds() - self.cpu0) / (wall * cores),
            peak_rss_mib: peak_rss_mib(),
            mean_tick_us: c.busy_ns.load(Ordering::Relaxed) as f64 / 1000.0 / ticks.max(1) as f64,
        }
    }
}

/// The pure core only — judge and policy of `n` simulated releases for
/// `ticks` ticks of `tick` each, `start_s` seconds into every release (so the
/// judge has history to chew) — with no loop, source or ledger around it:
/// what the decision itself costs at scale. [`service_releases`] measures
/// the real loop.
pub async fn concurrent_releases(
    n: usize,
    ticks: u32,
    tick: Duration,
    start_s: u64,
    policy: &PolicyFile,
) -> ReleasesReport {
    let policy = Arc::new(policy.clone());
    let counters = Counters::default();
    let sims: Vec<Arc<Simulator>> = (0..n)
        .map(|i| {
            let s = Simulator::new(SimConfig { seed: i as u64, ..SimConfig::default() });
            s.observe_at(start_s);
            Arc::new(s)
        })
        .collect();
    let meter = Meter::start();
    let t0 = tokio::time::Instant::now() + tick;
    let mut tasks = Vec::with_capacity(n);
    for (i, sim) in sims.into_iter().enumerate() {
        let (policy, counters) = (policy.clone(), counters.clone());
        // Releases start at different moments, so their ticks spread over the interval.
        let start = t0 + tick.mul_f64(i as f64 / n.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            let facts = bench_facts(i);
            for k in 0..ticks {
                let due = start + tick * k;
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
                std::hint::black_box(evaluate(&policy, &input));
                counters.tick(started.elapsed(), tokio::time::Instant::now() > due + tick);
                // Yield between releases so one busy task cannot starve the timers.
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    meter.report(n, &counters, Default::default())
}

fn bench_facts(i: usize) -> ReleaseFacts {
    ReleaseFacts {
        release_id: format!("bench-{i}"),
        service: "bench".into(),
        target: format!("sim/{i}"),
        service_targets: 0,
        declared_targets: vec![format!("sim/{i}")].into(),
        candidate_revision: "v2".into(),
        last_known_good: Some("v1".into()),
        quarantine: None,
        last_known_good_from: None,
        irreversible: false,
        environment: "bench".into(),
    }
}

/// Counts one release's ticks through the real loop.
struct BenchObserver {
    ticks: u32,
    seen: u32,
    counters: Counters,
    done: Arc<AtomicU64>,
    releases: u64,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Observer for BenchObserver {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        self.counters.tick(t.took, !t.budget.is_zero() && t.took > t.budget);
        self.seen += 1;
        // Once every release has had its ticks, stop them all between ticks.
        if self.seen == self.ticks && self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.releases {
            self.counters.lat.stopped.store(true, Ordering::Relaxed);
            let _ = self.stop.send(true);
        }
    }
}

/// A healthy simulated release for the bench, acting through the simulator.
pub(super) fn bench_release(i: usize) -> ReleaseConfig {
    ReleaseConfig {
        name: format!("bench-{i}"),
        service: "bench".into(),
        target: format!("sim/{i}"),
        environment: "bench".into(),
        candidate_revision: "v2".into(),
        last_known_good: Some("v1".into()),
        irreversible: false,
        source: SourceConfig::Simulator(SimConfig { seed: i as u64, ..SimConfig::default() }),
        executor: Some(ExecutorConfig::Simulator),
        pods: None,
        logs: None,
        tick_s: None,
        ramp: None,
        labels: Default::default(),
    }
}

/// `n` simulated releases through the service's real loop — observe, judge,
/// decide, the rate-limit history read, the tick record with its lease
/// renewal — on the ledger at `ledger_url`, `tick` apart, until each has had
/// `ticks` ticks. Releases start at t=0 of their window.
pub async fn service_releases(
    n: usize,
    ticks: u32,
    tick: Duration,
    policy: &PolicyFile,
    ledger_url: &str,
) -> Result<ReleasesReport, RuntimeError> {
    let settings = Settings { releases: (0..n).map(bench_release).collect(), ..Settings::default() };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runtime = Runtime::open(settings, policy.clone(), ledger_url, stop_rx).await?;
    let counters = Counters::default();
    let lat = counters.lat.clone();
    runtime.ledger.observe_appends(Box::new(move |d| lat.append(d)));
    let prepared = runtime
        .settings
        .releases
        .iter()
        .map(|cfg| runtime.prepare(cfg, RunMode::Act, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let (done, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(stop_tx));
    let meter = Meter::start();
    let mut tasks = Vec::with_capacity(n);
    for (i, p) in prepared.into_iter().enumerate() {
        let runtime = runtime.clone();
        let mut observer = BenchObserver {
            ticks,
            seen: 0,
            counters: counters.clone(),
            done: done.clone(),
            releases: n as u64,
            stop: stop.clone(),
        };
        // Releases start at different moments, so their ticks spread over the interval.
        let offset = tick.mul_f64(i as f64 / n.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            runtime.run(&p.release, Some(tick), &mut observer, None).await.map(|_| ())
        }));
    }
    let mut failures = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            failures += 1;
        }
    }
    if failures > 0 {
        tracing::warn!(failures, "Some bench releases ended with an error.");
    }
    Ok(meter.report(n, &counters, runtime.ledger.queue_pressure()))
}
