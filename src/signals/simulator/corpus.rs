//! The synthetic scenario corpus: healthy releases with every kind of
//! realistic nuisance, and faulty ones of every kind at three strengths and
//! two traffic levels. Parameters are drawn from fixed ranges with a seed, so
//! a development split and a held-out split differ only by seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{FaultKind, FaultSpec, SimConfig, Simulator, Warmup};
use crate::signals::{MetricSeries, Scenario, ScenarioData, Truth};

/// How much corpus to make.
#[derive(Debug, Clone)]
pub struct CorpusSpec {
    /// Seed for every draw; different seeds give disjoint splits.
    pub seed: u64,
    /// Scenarios per healthy family (8 families).
    pub good_per_family: usize,
    /// Scenarios per fault kind × strength × traffic level (30 cells).
    pub bad_per_cell: usize,
    /// Prefix for scenario names (e.g. `dev`, `holdout`).
    pub prefix: String,
}

const GOOD_FAMILIES: [&str; 8] = ["healthy", "noisy", "low-traffic", "warmup", "blips", "gaps", "improvement", "mixed"];

fn strengths(kind: FaultKind) -> [f64; 3] {
    match kind {
        FaultKind::ErrorSpike => [0.02, 0.05, 0.15],
        FaultKind::LatencyRegression => [0.35, 0.6, 1.5],
        FaultKind::MemoryLeak => [0.15, 0.3, 0.6],
        FaultKind::CrashLoop => [0.3, 0.5, 0.8],
        FaultKind::IntermittentErrors => [0.05, 0.1, 0.3],
    }
}

fn base(rng: &mut ChaCha8Rng, low_traffic: bool) -> SimConfig {
    let mut c = SimConfig {
        seed: rng.random(),
        total_rps: rng.random_range(50.0..300.0),
        canary_weight: rng.random_range(0.05..0.25),
        error_ratio: rng.random_range(0.0005..0.01),
        latency_p99_ms: rng.random_range(60.0..600.0),
        cpu_percent: rng.random_range(15.0..60.0),
        memory_mb: rng.random_range(200.0..2000.0),
        ..SimConfig::default()
    };
    if low_traffic {
        c.total_rps = rng.random_range(20.0..40.0);
        c.canary_weight = rng.random_range(0.02..0.05);
    }
    c
}

fn nuisance(rng: &mut ChaCha8Rng, c: &mut SimConfig, family: &str) {
    match family {
        "noisy" => c.noise = rng.random_range(2.0..3.0),
        "warmup" => {
            c.warmup = Some(Warmup { amplitude: rng.random_range(0.5..1.5), tau_s: rng.random_range(10.0..30.0) })
        }
        "blips" => c.blip_rate = rng.random_range(0.01..0.04),
        "gaps" => c.gap_rate = rng.random_range(0.01..0.05),
        "improvement" => c.improvement = rng.random_range(0.1..0.5),
        "mixed" | "realistic" => {
            c.noise = rng.random_range(1.0..2.0);
            if rng.random_bool(0.5) {
                c.blip_rate = rng.random_range(0.005..0.02);
            }
            if rng.random_bool(0.5) {
                c.gap_rate = rng.random_range(0.005..0.03);
            }
            if rng.random_bool(0.3) {
                c.warmup = Some(Warmup { amplitude: rng.random_range(0.3..1.0), tau_s: rng.random_range(10.0..25.0) });
            }
        }
        _ => {}
    }
}

/// Generate the corpus described by `spec`.
pub fn generate_corpus(spec: &CorpusSpec) -> Vec<Scenario> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut out = Vec::new();
    for family in GOOD_FAMILIES {
        for k in 0..spec.good_per_family {
            let mut c = base(&mut rng, family == "low-traffic");
            nuisance(&mut rng, &mut c, family);
            let name = format!("{}-good-{family}-{k:03}", spec.prefix);
            let desc = format!("healthy canary ({family})");
            out.push(record(c, name, desc, Truth { bad: false, onset_s: None, cause: None }));
        }
    }
    for kind in FaultKind::ALL {
        for (level, strength) in ["weak", "medium", "strong"].iter().zip(strengths(kind)) {
            for low in [false, true] {
                for k in 0..spec.bad_per_cell {
                    let mut c = base(&mut rng, low);
                    nuisance(&mut rng, &mut c, "realistic");
                    let max_onset = if kind == FaultKind::MemoryLeak { 60 } else { 120 };
                    let onset_s = rng.random_range(0..=max_onset) * 10;
                    c.fault = Some(FaultSpec { kind, onset_s, strength });
                    let traffic = if low { "low-traffic" } else { "traffic" };
                    let name = format!("{}-bad-{}-{level}-{traffic}-{k:03}", spec.prefix, kind.slug());
                    let desc = format!("{} of strength {strength} from {onset_s}s ({traffic})", kind.slug());
                    let truth = Truth { bad: true, onset_s: Some(onset_s), cause: Some(kind.slug().into()) };
                    out.push(record(c, name, desc, truth));
                }
            }
        }
    }
    out
}

fn round(v: Option<f64>, places: i32) -> Option<f64> {
    let f = 10f64.powi(places);
    v.map(|x| (x * f).round() / f)
}

fn record(mut cfg: SimConfig, name: String, description: String, truth: Truth) -> Scenario {
    cfg.service = "checkout".into();
    let obs = Simulator::new(cfg.clone()).observe_at(cfg.duration_s);
    let metrics = obs
        .metrics
        .into_iter()
        .map(|m| {
            let places = if m.spec.is_request_ratio() { 5 } else { 2 };
            MetricSeries {
                baseline: m.baseline.into_iter().map(|v| round(v, places)).collect(),
                canary: m.canary.into_iter().map(|v| round(v, places)).collect(),
                spec: m.spec,
            }
        })
        .collect();
    let data = ScenarioData {
        name: name.clone(),
        description,
        service: obs.service,
        step_s: obs.step_s,
        duration_s: obs.duration_s,
        traffic: obs.traffic,
        baseline_kind: Default::default(),
        metrics,
        logs: obs.logs,
        events: obs.events,
    };
    Scenario { path: format!("{name}.json").into(), data, truth: Some(truth) }
}
