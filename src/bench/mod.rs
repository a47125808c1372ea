//! `backstop bench`: speed and memory figures measured in one run, each next
//! to a baseline from the same run where one exists. Not a test: these
//! machines are shared, so only ratios within one run mean much.

mod agents;
mod compact;
pub mod model;
mod releases;

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

pub use agents::{AgentsReport, fresh_postgres, shared_agents};
pub use compact::{CompactReport, compaction};
pub use releases::{ReleasesReport, concurrent_releases, service_releases};

use crate::eval::peers::kayenta;
use crate::judge::{JudgeConfig, judge};
use crate::ledger::{Actor, Ledger, LedgerError, Record, ReleaseFinished};
use crate::signals::{BadDirection, MetricSeries, MetricSpec, Observation, Traffic};

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// What was measured.
    pub name: String,
    /// Our figure.
    pub result: String,
    /// A baseline from the same run, if any.
    pub baseline: String,
}

/// A synthetic observation: `metrics` metrics × `samples` samples per side;
/// every fourth metric (from the third) an error ratio and every fourth
/// (from the fourth) memory, so the sequential and trend tests run too.
pub fn synthetic_observation(metrics: usize, samples: usize, seed: u64) -> Observation {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 1.0).map_err(|_| ()).ok();
    let mut draw = |level: f64, sd: f64| level + sd * noise.as_ref().map_or(0.0, |n| n.sample(&mut rng));
    let series = (0..metrics)
        .map(|k| {
            let (unit, level, sd) = match k % 4 {
                2 => ("ratio", 0.01, 0.002),
                3 => ("MB", 500.0 + k as f64, 5.0),
                _ => ("ms", 100.0 + k as f64, 5.0),
            };
            let mut side = || (0..samples).map(|_| Some(draw(level, sd).max(0.0))).collect();
            MetricSeries {
                spec: MetricSpec { name: format!("m{k}"), unit: unit.into(), bad_direction: BadDirection::Up },
                baseline: side(),
                canary: side(),
            }
        })
        .collect();
    Observation {
        service: "bench".into(),
        step_s: 10,
        duration_s: samples as u64 * 10,
        now_s: samples as u64 * 10,
        traffic: Some(Traffic { baseline: vec![900; samples], canary: vec![100; samples] }),
        baseline_kind: Default::default(),
        metrics: series,
        logs: vec![],
        events: vec![],
        ml: Default::default(),
    }
}

fn time_per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(iterations.max(1))
}

fn ms(secs: f64) -> String {
    format!("{:.3} ms", secs * 1000.0)
}

/// Judge latency for one tick over `metrics` × `samples` against a baseline
/// of `kind`, with Kayenta's one judgement of the same data as the baseline.
pub fn judge_tick(metrics: usize, samples: usize, iterations: u32, kind: crate::signals::BaselineKind) -> BenchRow {
    let obs = Observation { baseline_kind: kind, ..synthetic_observation(metrics, samples, 1) };
    let cfg = JudgeConfig::default();
    let ours = time_per_call(iterations, || {
        std::hint::black_box(judge(&obs, &cfg));
    });
    let kay = time_per_call(iterations, || {
        for m in &obs.metrics {
            let x: Vec<f64> = m.canary.iter().flatten().copied().collect();
            let y: Vec<f64> = m.baseline.iter().flatten().copied().collect();
            std::hint::black_box(kayenta::classify(&x, &y, m.spec.bad_direction));
        }
    });
    BenchRow {
        name: format!("judge, one tick, {metrics} metrics × {samples} samples, {kind:?} baseline"),
        result: ms(ours),
        baseline: format!("Kayenta's judgement of the same data: {}", ms(kay)),
    }
}

/// Ledger appends per second at `url` from `writers` concurrent tasks (1 =
/// sequential: each append waits for its own commit; more = group commit).
pub async fn ledger_appends(url: &str, count: u32, writers: u32) -> Result<BenchRow, LedgerError> {
    let ledger = std::sync::Arc::new(Ledger::open(url).await?);
    let record = Record::ReleaseFinished(ReleaseFinished {
        status: crate::release::ReleaseStatus::Interrupted,
        ticks: 1,
        decided_at_s: 10,
        model_usage: crate::assessor::Usage::default(),
    });
    let writers = writers.max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (ledger, record) = (ledger.clone(), record.clone());
            let n = count / writers + u32::from(w < count % writers);
            tokio::spawn(async move {
                let actor = Actor::agent("bench");
                for _ in 0..n {
                    ledger.append("bench", &actor, 0, record.clone()).await?;
                }
                Ok::<(), LedgerError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|_| LedgerError::WriterGone)??;
    }
    let rate = f64::from(count) / start.elapsed().as_secs_f64();
    let backend = url.split(':').next().unwrap_or("?");
    let how = if writers == 1 { "sequential".to_string() } else { format!("from {writers} concurrent writers") };
    Ok(BenchRow {
        name: format!("ledger appends, {backend}, {count} {how}"),
        result: format!("{rate:.0} appends/s"),
        baseline: "none".into(),
    })
}

/// Time from a rollback decision to traffic shifted and verified on a real
/// HAProxy: intent in the ledger, Runtime API commands, weights read back.
pub async fn haproxy_rollback(socket: &str, ledger_url: &str, repeats: u32) -> Result<BenchRow, crate::Error> {
    use crate::executor::{Guarded, HaproxyConfig, HaproxyExecutor, Planner};
    let cfg = HaproxyConfig {
        socket: socket.into(),
        backend: "be".into(),
        canary_server: "canary".into(),
        stable_server: "stable".into(),
        full_weight: 100,
        drain_canary: true,
        timeout_s: 5,
    };
    let e = std::sync::Arc::new(HaproxyExecutor::new("haproxy/bench", cfg));
    let guarded = Guarded::new(e.clone());
    let ledger = Ledger::open(ledger_url).await?;
    let rollback = crate::policy::RollbackPlan {
        target: "haproxy/bench".into(),
        from_revision: "v2".into(),
        to_revision: "v1".into(),
        reason: "bench".into(),
    };
    let mut total = 0.0;
    for _ in 0..repeats.max(1) {
        e.command("set server be/canary state ready").await?;
        e.command("set server be/canary weight 10").await?;
        let start = Instant::now();
        let plan = e.plan_rollback(&rollback, 0)?;
        let permit = ledger
            .record_intent(&guarded, "bench", &Actor::agent("bench"), 0, &plan, (None, Default::default()))
            .await?;
        guarded.execute(&plan, permit).await?;
        if !guarded.verify(&plan).await?.verified {
            return Err(crate::executor::ExecutorError::refused("haproxy/bench", "did not verify").into());
        }
        total += start.elapsed().as_secs_f64();
    }
    Ok(BenchRow {
        name: "rollback decision to traffic shifted and verified, real HAProxy (backend `be`)".into(),
        result: ms(total / f64::from(repeats.max(1))),
        baseline: "none".into(),
    })
}

/// Render rows as a Markdown table.
pub fn render(rows: &[BenchRow]) -> String {
    let mut out = String::from("| benchmark | result | baseline in the same run |\n| --- | --- | --- |\n");
    for r in rows {
        out.push_str(&format!("| {} | {} | {} |\n", r.name, r.result, r.baseline));
    }
    out
}
