//! The built-in canary simulator: the offline signal source behind `demo`,
//! and the generator of the synthetic scenario corpus.
//!
//! Samples are generated lazily, step by step, as time is observed, so an
//! action taken at time `t` (the simulated executor setting the canary weight
//! to 0) changes every sample after `t` and none before it.

mod corpus;
mod dynamics;
mod ml;

use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use corpus::{CorpusSpec, generate_corpus};
pub use dynamics::{FaultKind, FaultSpec, SimConfig, Warmup, metric_specs, metric_specs_of};
use dynamics::{ModelState, SideStep};
pub use ml::ModelSim;

use super::{Event, EventKind, LogLine, MetricSeries, Observation, Side, SignalError, SignalSource, Traffic};

/// What the simulator's traffic manager currently does: read back by the
/// simulated executor's `verify()`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimStatus {
    /// Share of traffic the canary gets now.
    pub canary_weight: f64,
    /// Revision serving the stable side.
    pub active_revision: String,
    /// Set once a rollback ran: the revision traffic went back to.
    pub rolled_back_to: Option<String>,
}

struct Inner {
    rng: ChaCha8Rng,
    /// Background log lines draw from their own stream, so turning them on
    /// leaves every metric of a seed unchanged.
    log_rng: ChaCha8Rng,
    model: ModelState,
    /// The served model's signals draw from their own stream too.
    ml_rng: ChaCha8Rng,
    ml: ml::MlState,
    steps: Vec<[SideStep; 2]>,
    logs: Vec<LogLine>,
    events: Vec<Event>,
    status: SimStatus,
}

/// Error lines of ordinary failures on both sides at `t`: one per failed
/// request (requests × error ratio), of three kinds, a fifth of them retried
/// and logged three times; at most 100 a side a step.
fn background_logs(g: &mut Inner, t: u64, st: &[SideStep; 2]) {
    use rand::Rng;
    for (side, s) in [(Side::Baseline, &st[0]), (Side::Canary, &st[1])] {
        let Some(Some(ratio)) = s.values.first() else { continue };
        let errors = ((s.requests as f64 * ratio).round() as usize).min(100);
        for _ in 0..errors {
            let r: f64 = g.log_rng.random();
            let n: u32 = g.log_rng.random_range(1..10_000);
            let message = if r < 0.6 {
                format!("ERROR upstream timeout calling inventory-{n} after 3000ms")
            } else if r < 0.9 {
                format!("ERROR payment declined: card token tok_{n:x} rejected by gateway")
            } else {
                format!("ERROR redis connection reset by peer (10.0.{}.{}:6379)", n % 256, n / 256)
            };
            let copies = if g.log_rng.random_bool(0.2) { 3 } else { 1 };
            for _ in 0..copies {
                g.logs.push(LogLine { t_s: t, target: side, level: "error".into(), message: message.clone() });
            }
        }
    }
}

/// A simulated canary release with a controllable traffic split.
pub struct Simulator {
    cfg: SimConfig,
    inner: Mutex<Inner>,
}

impl Simulator {
    /// A new release at t = 0 with the configured canary weight.
    pub fn new(cfg: SimConfig) -> Self {
        let events = vec![Event {
            t_s: 0,
            target: Side::Canary,
            kind: EventKind::Deploy,
            message: format!("{} canary rollout started at weight {:.0}%", cfg.service, cfg.canary_weight * 100.0),
        }];
        let inner = Inner {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            log_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6c6f_6773),
            model: ModelState::default(),
            ml_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6d6f_64656c),
            ml: ml::MlState::default(),
            steps: Vec::new(),
            logs: Vec::new(),
            events,
            status: SimStatus {
                canary_weight: cfg.canary_weight,
                active_revision: "stable".into(),
                rolled_back_to: None,
            },
        };
        Self { cfg, inner: Mutex::new(inner) }
    }

    /// The configuration this simulator runs.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    // A poisoned lock only means another task panicked mid-update; the
    // simulated state is still readable, so carry on with it.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Route `weight` of traffic to the canary from now on.
    pub fn set_canary_weight(&self, weight: f64) {
        self.lock().status.canary_weight = weight.clamp(0.0, 1.0);
    }

    /// Send all traffic back to `revision` and record that a rollback happened.
    pub fn roll_back_to(&self, revision: &str, now_s: u64) {
        let mut g = self.lock();
        g.status.canary_weight = 0.0;
        g.status.active_revision = revision.to_string();
        g.status.rolled_back_to = Some(revision.to_string());
        g.events.push(Event {
            t_s: now_s,
            target: Side::Canary,
            kind: EventKind::Rollback,
            message: format!("traffic returned to {revision}; canary weight 0"),
        });
    }

    /// Current traffic-manager state.
    pub fn status(&self) -> SimStatus {
        self.lock().status.clone()
    }

    fn generate_until(&self, g: &mut Inner, n: usize) {
        while g.steps.len() < n {
            let i = g.steps.len() as u64;
            let weight = g.status.canary_weight;
            let Inner { rng, model, .. } = g;
            let st = dynamics::step(&self.cfg, model, rng, i, weight);
            self.narrate(g, i, &st);
            if self.cfg.background_logs {
                background_logs(g, i * u64::from(self.cfg.step_s), &st);
            }
            if let Some(m) = &self.cfg.model {
                let t = i * u64::from(self.cfg.step_s);
                g.ml.step(m, &mut g.ml_rng, t, self.cfg.step_s, [st[0].requests, st[1].requests]);
                g.events.extend(ml::MlState::schema_event(m, t, self.cfg.step_s));
            }
            g.steps.push(st);
        }
    }

    /// Log lines and events a real release of this kind would emit (the fault's own).
    fn narrate(&self, g: &mut Inner, i: u64, st: &[SideStep; 2]) {
        let t = i * u64::from(self.cfg.step_s);
        let Some(fault) = &self.cfg.fault else { return };
        if t < fault.onset_s || st[1].requests == 0 {
            return;
        }
        let since = t - fault.onset_s;
        let (kind, level, msg) = match fault.kind {
            FaultKind::ErrorSpike
            | FaultKind::IntermittentErrors
            | FaultKind::SubtleErrors
            | FaultKind::ErrorBursts => {
                ("log", "error", "POST /checkout 500: NullPointerException in CartPricing.apply")
            }
            FaultKind::LatencyRegression => ("log", "warn", "slow query: SELECT * FROM carts took 412ms"),
            FaultKind::MemoryLeak if since >= 600 => ("log", "warn", "GC overhead above 40%, heap 91% used"),
            FaultKind::MemoryLeak | FaultKind::SlowLeak => return,
            FaultKind::CrashLoop => ("event", "error", "Back-off restarting failed container checkout"),
        };
        if !since.is_multiple_of(60) {
            return;
        }
        if kind == "event" {
            g.events.push(Event { t_s: t, target: Side::Canary, kind: EventKind::Restart, message: msg.into() });
        } else {
            g.logs.push(LogLine { t_s: t, target: Side::Canary, level: level.into(), message: msg.into() });
        }
    }

    /// Everything observed by `now_s` (generating the steps that ended by then).
    pub fn observe_at(&self, now_s: u64) -> Observation {
        let step = u64::from(self.cfg.step_s.max(1));
        let total = (self.cfg.duration_s / step) as usize;
        let n = ((now_s / step) as usize).min(total);
        let mut g = self.lock();
        self.generate_until(&mut g, n);
        let steps = &g.steps[..n];
        let mut metrics: Vec<MetricSeries> = metric_specs()
            .into_iter()
            .enumerate()
            .map(|(k, spec)| MetricSeries {
                spec,
                baseline: steps.iter().map(|s| s[0].values[k]).collect(),
                canary: steps.iter().map(|s| s[1].values[k]).collect(),
            })
            .collect();
        let ml = self.cfg.model.as_ref().map(|m| {
            let (signals, nulls) = g.ml.observe(m, n);
            metrics.push(nulls);
            signals
        });
        Observation {
            service: self.cfg.service.clone(),
            step_s: self.cfg.step_s,
            duration_s: self.cfg.duration_s,
            now_s,
            baseline_kind: Default::default(),
            traffic: Some(Traffic {
                baseline: steps.iter().map(|s| s[0].requests).collect(),
                canary: steps.iter().map(|s| s[1].requests).collect(),
            }),
            metrics,
            logs: g.logs.iter().filter(|l| l.t_s <= now_s).cloned().collect(),
            events: g.events.iter().filter(|e| e.t_s <= now_s).cloned().collect(),
            ml: ml.unwrap_or_default(),
        }
    }
}

#[async_trait]
impl SignalSource for Simulator {
    fn name(&self) -> String {
        format!("simulator:{}", self.cfg.service)
    }

    async fn observe(&self, now_s: u64) -> Result<Observation, SignalError> {
        Ok(self.observe_at(now_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_logs_leave_the_metrics_alone_and_follow_each_sides_errors() {
        let cfg = SimConfig { error_ratio: 0.01, total_rps: 200.0, ..SimConfig::default() };
        let plain = Simulator::new(cfg.clone()).observe_at(1800);
        let logged = Simulator::new(SimConfig { background_logs: true, ..cfg }).observe_at(1800);
        assert_eq!(plain.metrics, logged.metrics, "the same seed gives the same release");
        assert!(plain.logs.is_empty());
        let lines = |side| logged.logs.iter().filter(|l| l.target == side).count() as f64;
        let requests = |v: &[u64]| v.iter().sum::<u64>() as f64;
        let t = logged.traffic.as_ref().unwrap();
        let (b, c) = (lines(Side::Baseline) / requests(&t.baseline), lines(Side::Canary) / requests(&t.canary));
        // One line per failed request, 1.4 per failure with retries: about 1.4 % of requests on each side.
        assert!((0.008..0.025).contains(&b) && (0.005..0.03).contains(&c), "baseline {b}, canary {c}");
        assert!(logged.logs.iter().all(|l| l.level == "error" && l.message.starts_with("ERROR ")));
    }

    #[test]
    fn same_seed_same_release() {
        let a = Simulator::new(SimConfig::default()).observe_at(600);
        let b = Simulator::new(SimConfig::default()).observe_at(600);
        assert_eq!(a, b);
        let c = Simulator::new(SimConfig { seed: 8, ..SimConfig::default() }).observe_at(600);
        assert_ne!(a, c);
    }

    #[test]
    fn rollback_empties_canary_traffic_after_not_before() {
        let sim = Simulator::new(SimConfig::default());
        let before = sim.observe_at(300);
        sim.roll_back_to("v1", 300);
        let after = sim.observe_at(600);
        assert_eq!(before.traffic.as_ref().unwrap().canary, after.traffic.as_ref().unwrap().canary[..30]);
        assert!(after.traffic.unwrap().canary[30..].iter().all(|&n| n == 0));
        assert_eq!(sim.status().rolled_back_to.as_deref(), Some("v1"));
    }

    #[test]
    fn error_spike_raises_canary_errors_after_onset() {
        let cfg = SimConfig {
            fault: Some(FaultSpec { kind: FaultKind::ErrorSpike, onset_s: 300, strength: 0.1 }),
            ..SimConfig::default()
        };
        let obs = Simulator::new(cfg).observe_at(900);
        let err = &obs.metrics[0];
        let mean = |v: &[Option<f64>]| v.iter().flatten().sum::<f64>() / v.iter().flatten().count() as f64;
        assert!(mean(&err.canary[..30]) < 0.02);
        assert!(mean(&err.canary[30..]) > 0.07);
        assert!(obs.logs.iter().any(|l| l.target == Side::Canary && l.level == "error"));
    }
}
