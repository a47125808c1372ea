//! The simulator's model of one canary release: how many requests each side
//! serves per step, and what its metrics read, with faults injected by name.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Normal};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::signals::{BadDirection, MetricSpec};

/// A fault to inject into the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The canary's error ratio rises by `strength` (absolute, e.g. 0.05 = +5 points).
    ErrorSpike,
    /// The canary's p99 latency is multiplied by `1 + strength`.
    LatencyRegression,
    /// The canary's memory grows by `strength` × its base every 10 minutes.
    MemoryLeak,
    /// Canary pods restart: throughput per pod falls by `strength` (0..1), errors rise.
    CrashLoop,
    /// Bursts of errors (+`strength`) lasting 30 s every 2 minutes.
    IntermittentErrors,
    /// The canary's error ratio is multiplied by `1 + strength` (a low base
    /// rate doubled to quintupled: below the absolute tolerance, still a bug).
    SubtleErrors,
    /// Short bursts of errors (+`strength`) lasting 10 s every 5 minutes.
    ErrorBursts,
    /// The canary's memory grows by `strength` × its base every hour, steadily.
    SlowLeak,
}

impl FaultKind {
    /// Every fault kind, for corpus generation and `demo --scenario`.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::ErrorSpike,
        FaultKind::LatencyRegression,
        FaultKind::MemoryLeak,
        FaultKind::CrashLoop,
        FaultKind::IntermittentErrors,
        FaultKind::SubtleErrors,
        FaultKind::ErrorBursts,
        FaultKind::SlowLeak,
    ];

    /// The kebab-case name used on the command line and in scenario names.
    pub fn slug(self) -> &'static str {
        match self {
            FaultKind::ErrorSpike => "error-spike",
            FaultKind::LatencyRegression => "latency-regression",
            FaultKind::MemoryLeak => "memory-leak",
            FaultKind::CrashLoop => "crash-loop",
            FaultKind::IntermittentErrors => "intermittent-errors",
            FaultKind::SubtleErrors => "subtle-errors",
            FaultKind::ErrorBursts => "error-bursts",
            FaultKind::SlowLeak => "slow-leak",
        }
    }
}

/// A fault injected at `onset_s` with a kind-specific `strength`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Which fault.
    pub kind: FaultKind,
    /// Seconds after canary start when the fault begins.
    pub onset_s: u64,
    /// Kind-specific size (see [`FaultKind`]).
    pub strength: f64,
}

/// A start-up transient on the canary: latency and CPU are multiplied by
/// `1 + amplitude·exp(-t/tau_s)`. Healthy, not a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// Extra fraction at t = 0 (1.0 doubles latency).
    pub amplitude: f64,
    /// Decay time constant in seconds.
    pub tau_s: f64,
}

/// The simulated release. Every field has a default, so `{}` is a healthy release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Service name.
    pub service: String,
    /// Random seed: the same seed gives the same release.
    pub seed: u64,
    /// Seconds between samples.
    pub step_s: u32,
    /// Analysis window in seconds.
    pub duration_s: u64,
    /// Requests per second across both sides.
    pub total_rps: f64,
    /// Share of traffic sent to the canary (0..1).
    pub canary_weight: f64,
    /// Replicas across both sides; each side has its weight's share.
    pub pods: f64,
    /// Baseline error ratio.
    pub error_ratio: f64,
    /// Baseline p99 latency in ms.
    pub latency_p99_ms: f64,
    /// Baseline CPU in percent.
    pub cpu_percent: f64,
    /// Baseline memory in MB.
    pub memory_mb: f64,
    /// Noise multiplier (1 = typical, 3 = very noisy).
    pub noise: f64,
    /// Probability per step that a shared-infrastructure blip starts (hits both sides).
    pub blip_rate: f64,
    /// Probability per step that a scrape gap starts on one side.
    pub gap_rate: f64,
    /// Canary start-up transient.
    pub warmup: Option<Warmup>,
    /// Canary is better than baseline by this fraction (errors and latency).
    pub improvement: f64,
    /// The injected fault, if any.
    pub fault: Option<FaultSpec>,
    /// When the new version starts, seconds: warm-up and improvement apply
    /// from here (a run that records the window before a blue/green switch).
    pub release_at_s: u64,
    /// Standard deviation of the per-step innovation of a shared log-load
    /// that wanders as an AR(1) with coefficient 0.98 (0 = steady load).
    pub wander: f64,
    /// Load change over `duration_s` as a fraction (0.2 = load ramps up 20 %), a time-of-day shape.
    pub trend: f64,
    /// Load level multiplier (a day that is busier than the one before).
    pub level: f64,
    /// A new process's memory settling: the canary starts `amplitude` × its
    /// base below the warm baseline and catches up with time constant `tau_s`. Healthy.
    pub memory_warmup: Option<Warmup>,
    /// Both sides log an error line per failed request (three kinds of
    /// ordinary failure, some retried three times), so log templates are
    /// judged against a background, as in production.
    pub background_logs: bool,
    /// The service serves a model: prediction and feature histograms,
    /// delayed labels and a null-rate metric (docs/model-releases.md).
    pub model: Option<super::ml::ModelSim>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            service: "checkout".into(),
            seed: 7,
            step_s: 10,
            duration_s: 1800,
            total_rps: 100.0,
            canary_weight: 0.1,
            pods: 10.0,
            error_ratio: 0.002,
            latency_p99_ms: 180.0,
            cpu_percent: 35.0,
            memory_mb: 512.0,
            noise: 1.0,
            blip_rate: 0.0,
            gap_rate: 0.0,
            warmup: None,
            improvement: 0.0,
            fault: None,
            release_at_s: 0,
            wander: 0.0,
            trend: 0.0,
            level: 1.0,
            memory_warmup: None,
            background_logs: false,
            model: None,
        }
    }
}

impl SimConfig {
    /// Every number finite and within what the simulator can make sense of;
    /// `Err(FieldError::of(field, expected))`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, e: &str| Err(FieldError::of(f.to_string(), e.to_string()));
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && (lo..=hi).contains(&v);
        if !(1..=3600).contains(&self.step_s) {
            return bad("step_s", "seconds from 1 to 3600");
        }
        if self.duration_s < u64::from(self.step_s) || self.duration_s > 7 * 86_400 {
            return bad("duration_s", "seconds from one step to a week");
        }
        let fractions = [
            ("canary_weight", self.canary_weight),
            ("error_ratio", self.error_ratio),
            ("blip_rate", self.blip_rate),
            ("gap_rate", self.gap_rate),
            ("improvement", self.improvement),
        ];
        for (f, v) in fractions {
            if !within(v, 0.0, 1.0) {
                return bad(f, "a number from 0 to 1");
            }
        }
        let positive = [
            ("total_rps", self.total_rps, 1e7),
            ("pods", self.pods, 1e5),
            ("latency_p99_ms", self.latency_p99_ms, 1e7),
            ("cpu_percent", self.cpu_percent, 1e4),
            ("memory_mb", self.memory_mb, 1e8),
            ("noise", self.noise, 100.0),
            ("level", self.level, 1e3),
        ];
        for (f, v, hi) in positive {
            if !within(v, 0.0, hi) {
                return Err(FieldError::of(f.to_string(), format!("a finite number from 0 to {hi}")));
            }
        }
        if !within(self.wander, 0.0, 1.0) || !within(self.trend, -1.0, 10.0) {
            return bad("wander", "wander from 0 to 1 and trend from -1 to 10");
        }
        for (f, w) in [("warmup", &self.warmup), ("memory_warmup", &self.memory_warmup)] {
            if let Some(w) = w
                && !(within(w.amplitude, -10.0, 100.0) && within(w.tau_s, 0.0, 1e6))
            {
                return bad(f, "amplitude from -10 to 100 and tau_s from 0 to 10^6 seconds");
            }
        }
        if let Some(f) = &self.fault
            && !within(f.strength, -100.0, 100.0)
        {
            return bad("fault.strength", "a finite number from -100 to 100");
        }
        Ok(())
    }
}

/// Metrics the simulator reports, in this order.
pub fn metric_specs() -> Vec<MetricSpec> {
    let m = |name: &str, unit: &str, d| MetricSpec { name: name.into(), unit: unit.into(), bad_direction: d };
    vec![
        m("http_error_ratio", "ratio", BadDirection::Up),
        m("latency_p99_ms", "ms", BadDirection::Up),
        m("cpu_percent", "percent", BadDirection::Up),
        m("memory_mb", "MB", BadDirection::Up),
        m("throughput_per_pod_rps", "rps", BadDirection::Down),
    ]
}

/// Metrics a simulated release reports: [`metric_specs`], and the null
/// rate of its requests when it serves a model.
pub fn metric_specs_of(cfg: &SimConfig) -> Vec<MetricSpec> {
    let mut v = metric_specs();
    if cfg.model.is_some() {
        v.push(super::ml::null_metric());
    }
    v
}

/// One side's reading for one step. `None` values are missing samples.
#[derive(Debug, Clone, Default)]
pub struct SideStep {
    /// Requests served.
    pub requests: u64,
    /// One value per [`metric_specs`] entry.
    pub values: Vec<Option<f64>>,
}

/// Mutable generator state carried from step to step.
#[derive(Debug, Clone, Default)]
pub struct ModelState {
    blip_left: u32,
    gap_left: [u32; 2],
    /// The wandering log-load (see `SimConfig::wander`).
    load: f64,
}

/// AR(1) coefficient of the wandering load per step.
const WANDER_RHO: f64 = 0.98;

fn normal(rng: &mut ChaCha8Rng, sd: f64) -> f64 {
    Normal::new(0.0, sd.max(1e-12)).map(|d| d.sample(rng)).unwrap_or(0.0)
}

fn binomial(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    Binomial::new(n, p.clamp(0.0, 1.0)).map(|d| d.sample(rng)).unwrap_or(0)
}

/// One side's levels at a step before noise: error probability, p99
/// latency, CPU, memory, and the share of requests it still serves.
struct Levels {
    p: f64,
    lat: f64,
    cpu: f64,
    mem: f64,
    served: f64,
}

/// Whether a shared blip runs at this step (it lasts a few steps).
fn next_blip(cfg: &SimConfig, st: &mut ModelState, rng: &mut ChaCha8Rng) -> bool {
    if st.blip_left > 0 {
        st.blip_left -= 1;
        true
    } else if rng.random::<f64>() < cfg.blip_rate {
        st.blip_left = rng.random_range(0..3);
        true
    } else {
        false
    }
}

/// What the new version does to the canary `t_rel` s after its release
/// (at release time `t`): warm-up, improvement, and the fault. No draws.
fn released_canary(cfg: &SimConfig, t: f64, t_rel: f64, l: &mut Levels) {
    if let Some(w) = &cfg.warmup {
        let boost = 1.0 + w.amplitude * (-t_rel / w.tau_s.max(1.0)).exp();
        l.lat *= boost;
        l.cpu *= boost;
    }
    if let Some(w) = &cfg.memory_warmup {
        l.mem *= 1.0 - w.amplitude * (-t_rel / w.tau_s.max(1.0)).exp();
    }
    l.p *= 1.0 - cfg.improvement;
    l.lat *= 1.0 - cfg.improvement / 2.0;
    if let Some(f) = &cfg.fault
        && t >= f.onset_s as f64
    {
        fault(f, t - f.onset_s as f64, l);
    }
}

/// The fault `f`, `since` s after its onset.
fn fault(f: &FaultSpec, since: f64, l: &mut Levels) {
    match f.kind {
        FaultKind::ErrorSpike => l.p += f.strength,
        FaultKind::LatencyRegression => l.lat *= 1.0 + f.strength,
        FaultKind::MemoryLeak => l.mem *= 1.0 + f.strength * since / 600.0,
        FaultKind::CrashLoop => {
            l.served = 1.0 - f.strength.clamp(0.0, 0.95);
            l.p += f.strength * 0.2;
            l.cpu *= 1.0 + f.strength * 0.5;
        }
        FaultKind::IntermittentErrors => {
            if (since as u64 % 120) < 30 {
                l.p += f.strength;
            }
        }
        FaultKind::SubtleErrors => l.p *= 1.0 + f.strength,
        FaultKind::ErrorBursts => {
            if (since as u64 % 300) < 10 {
                l.p += f.strength;
            }
        }
        FaultKind::SlowLeak => l.mem *= 1.0 + f.strength * since / 3600.0,
    }
}

/// Generate step `i` for both sides (`[baseline, canary]`) with the canary at `weight`.
pub fn step(cfg: &SimConfig, st: &mut ModelState, rng: &mut ChaCha8Rng, i: u64, weight: f64) -> [SideStep; 2] {
    let step_s = f64::from(cfg.step_s.max(1));
    let t = (i as f64) * step_s;
    let blip = next_blip(cfg, st, rng);
    // Drawn only when asked for, so configurations without it keep their random stream.
    if cfg.wander > 0.0 {
        st.load = WANDER_RHO * st.load + normal(rng, cfg.wander);
    }
    let load = cfg.level * (1.0 + cfg.trend * t / cfg.duration_s.max(1) as f64) * st.load.exp();
    let released = t >= cfg.release_at_s as f64;
    let t_rel = t - cfg.release_at_s as f64;
    let offered = (cfg.total_rps * load * step_s * (1.0 + normal(rng, 0.05))).max(0.0).round() as u64;
    let to_canary = binomial(rng, offered, weight.clamp(0.0, 1.0));
    let shares = [1.0 - weight, weight];
    let mut out = [SideStep::default(), SideStep::default()];
    for (side, slot) in out.iter_mut().enumerate() {
        let canary = side == 1;
        let mut requests = if canary { to_canary } else { offered - to_canary };
        let mut l = Levels {
            p: cfg.error_ratio * load,
            lat: cfg.latency_p99_ms * load.sqrt(),
            cpu: cfg.cpu_percent * load,
            mem: cfg.memory_mb,
            served: 1.0,
        };
        if blip {
            l.p = l.p * 6.0 + 0.01;
            l.lat *= 1.8;
            l.cpu *= 1.3;
        }
        if canary && released {
            released_canary(cfg, t, t_rel, &mut l);
        }
        let Levels { p, lat, cpu, mem, served: served_factor } = l;
        requests = (requests as f64 * served_factor).round() as u64;
        let errors = binomial(rng, requests, p);
        // p99 over few requests is a noisy statistic: its spread widens as traffic falls.
        let lat_sd = cfg.noise * (0.04 + 0.6 / (requests.max(1) as f64).sqrt());
        let replicas = (cfg.pods * shares[side]).max(0.05);
        let has_traffic = requests > 0 && shares[side] > 0.0;
        let ratio = has_traffic.then(|| errors as f64 / requests as f64);
        let latency = has_traffic.then(|| lat * normal(rng, lat_sd).exp());
        let cpu_v = Some((cpu * (1.0 + normal(rng, 0.04 * cfg.noise))).max(0.0));
        let mem_v = Some(mem * (1.0 + normal(rng, 0.01 * cfg.noise)));
        let tput = (shares[side] > 0.0).then(|| requests as f64 / step_s / replicas);
        let gap = &mut st.gap_left[side];
        let missing = if *gap > 0 {
            *gap -= 1;
            true
        } else if rng.random::<f64>() < cfg.gap_rate {
            *gap = rng.random_range(0..6);
            true
        } else {
            false
        };
        slot.requests = requests;
        slot.values = if missing { vec![None; 5] } else { vec![ratio, latency, cpu_v, mem_v, tput] };
    }
    out
}
