//! The synthetic scenario corpus: healthy releases with every kind of
//! realistic nuisance, and faulty ones of every kind at three strengths and
//! two traffic levels. Parameters are drawn from fixed ranges with a seed, so
//! a development split and a held-out split differ only by seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{FaultKind, FaultSpec, ModelSim, SimConfig, Simulator, Warmup};
use crate::signals::{BaselineKind, MetricSeries, Observation, Scenario, ScenarioData, Traffic, Truth};

/// How much corpus to make.
#[derive(Debug, Clone)]
pub struct CorpusSpec {
    /// Seed for every draw; different seeds give disjoint splits.
    pub seed: u64,
    /// Scenarios per healthy family (9 families; 6 for an earlier-window baseline).
    pub good_per_family: usize,
    /// Scenarios per fault kind × strength × traffic level (48 cells).
    pub bad_per_cell: usize,
    /// Prefix for scenario names (e.g. `dev`, `holdout`).
    pub prefix: String,
    /// What the baseline is: a concurrent canary (the classic corpus), or a
    /// release judged against the window before it or the same window a day earlier.
    pub baseline_kind: BaselineKind,
    /// Both sides log ordinary errors (`SimConfig::background_logs`); concurrent baselines only.
    pub background_logs: bool,
    /// Model releases instead ([`MODEL_FAMILIES`]): `good_per_family` of each family.
    pub model: bool,
}

/// Model-release families: (name, should it be rolled back).
pub const MODEL_FAMILIES: [(&str, bool); 6] = [
    ("retrain", false),
    ("label-delay", false),
    ("drift-stable", false),
    ("drift-falling-accuracy", true),
    ("schema-change", true),
    ("slower-model", true),
];

/// Healthy families of releases with no concurrent baseline: the nuisances
/// of a service compared with its own past.
const HISTORY_GOOD_FAMILIES: [&str; 6] = ["steady", "wander", "trend", "warmup", "improvement", "mixed"];

const GOOD_FAMILIES: [&str; 9] =
    ["healthy", "noisy", "low-traffic", "warmup", "blips", "gaps", "improvement", "mixed", "memory-warmup"];

fn strengths(kind: FaultKind) -> [f64; 3] {
    match kind {
        FaultKind::ErrorSpike => [0.02, 0.05, 0.15],
        FaultKind::LatencyRegression => [0.35, 0.6, 1.5],
        FaultKind::MemoryLeak => [0.15, 0.3, 0.6],
        FaultKind::CrashLoop => [0.3, 0.5, 0.8],
        FaultKind::IntermittentErrors => [0.05, 0.1, 0.3],
        FaultKind::SubtleErrors => [1.0, 2.0, 4.0],
        FaultKind::ErrorBursts => [0.1, 0.2, 0.4],
        FaultKind::SlowLeak => [0.1, 0.2, 0.4],
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
        // A new process filling its caches: memory starts 20–60 % below the
        // warm baseline and catches up with a time constant of 2–7 minutes.
        "memory-warmup" => {
            c.memory_warmup =
                Some(Warmup { amplitude: rng.random_range(0.2..0.6), tau_s: rng.random_range(120.0..420.0) })
        }
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
    if spec.baseline_kind != BaselineKind::Concurrent {
        return generate_history(spec);
    }
    if spec.model {
        return generate_model(spec);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut out = Vec::new();
    for family in GOOD_FAMILIES {
        for k in 0..spec.good_per_family {
            let mut c = base(&mut rng, family == "low-traffic");
            nuisance(&mut rng, &mut c, family);
            c.background_logs = spec.background_logs;
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
                    c.background_logs = spec.background_logs;
                    let max_onset = if matches!(kind, FaultKind::MemoryLeak | FaultKind::SlowLeak) { 60 } else { 120 };
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
        ml: obs.ml,
    };
    Scenario { path: format!("{name}.json").into(), data, truth: Some(truth) }
}

/// Nuisances of a service compared with its own past: load that wanders
/// (AR(1)), a time-of-day ramp, a new version's warm-up, a busier day.
fn history_nuisance(rng: &mut ChaCha8Rng, c: &mut SimConfig, family: &str) {
    match family {
        "wander" => c.wander = rng.random_range(0.01..0.05),
        "trend" => c.trend = rng.random_range(-0.3..0.3),
        "warmup" => {
            c.warmup = Some(Warmup { amplitude: rng.random_range(0.5..1.5), tau_s: rng.random_range(10.0..30.0) })
        }
        "improvement" => c.improvement = rng.random_range(0.1..0.5),
        "mixed" | "realistic" => {
            c.wander = rng.random_range(0.0..0.03);
            c.trend = rng.random_range(-0.2..0.2);
            c.noise = rng.random_range(1.0..2.0);
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

/// The corpus for `preceding` and `seasonal` baselines: the new version
/// serves all traffic (a blue/green switch or a rolling update), so there is
/// no stable side, only the service's own past.
fn generate_history(spec: &CorpusSpec) -> Vec<Scenario> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let kind = spec.baseline_kind;
    let slug = if kind == BaselineKind::Seasonal { "seasonal" } else { "preceding" };
    let mut out = Vec::new();
    for family in HISTORY_GOOD_FAMILIES {
        for k in 0..spec.good_per_family {
            let mut c = base(&mut rng, false);
            history_nuisance(&mut rng, &mut c, family);
            let name = format!("{}-{slug}-good-{family}-{k:03}", spec.prefix);
            let desc = format!("healthy release ({family}), baseline = {slug} window");
            out.push(record_history(&mut rng, c, kind, name, desc, Truth { bad: false, onset_s: None, cause: None }));
        }
    }
    for fault in FaultKind::ALL {
        for (level, strength) in ["weak", "medium", "strong"].iter().zip(strengths(fault)) {
            for low in [false, true] {
                for k in 0..spec.bad_per_cell {
                    let mut c = base(&mut rng, low);
                    history_nuisance(&mut rng, &mut c, "realistic");
                    let max_onset = if matches!(fault, FaultKind::MemoryLeak | FaultKind::SlowLeak) { 60 } else { 120 };
                    let onset_s = rng.random_range(0..=max_onset) * 10;
                    c.fault = Some(FaultSpec { kind: fault, onset_s, strength });
                    let traffic = if low { "low-traffic" } else { "traffic" };
                    let name = format!("{}-{slug}-bad-{}-{level}-{traffic}-{k:03}", spec.prefix, fault.slug());
                    let desc = format!(
                        "{} of strength {strength} from {onset_s}s ({traffic}), baseline = {slug} window",
                        fault.slug()
                    );
                    let truth = Truth { bad: true, onset_s: Some(onset_s), cause: Some(fault.slug().into()) };
                    out.push(record_history(&mut rng, c, kind, name, desc, truth));
                }
            }
        }
    }
    out
}

/// One release with all traffic on the new version, and its reference: the
/// same run's window before the switch (`preceding`), or a healthy run of
/// the same service one day earlier at its own load level (`seasonal`).
fn record_history(
    rng: &mut ChaCha8Rng,
    mut cfg: SimConfig,
    kind: BaselineKind,
    name: String,
    description: String,
    truth: Truth,
) -> Scenario {
    cfg.service = "checkout".into();
    cfg.canary_weight = 1.0;
    let d = cfg.duration_s;
    let steps = (d / u64::from(cfg.step_s)) as usize;
    let (before, after) = if kind == BaselineKind::Seasonal {
        let yesterday =
            SimConfig { seed: rng.random(), warmup: None, improvement: 0.0, fault: None, level: 1.0, ..cfg.clone() };
        cfg.level = rng.random_range(0.92..1.08);
        let past = Simulator::new(yesterday).observe_at(d);
        (past, Simulator::new(cfg.clone()).observe_at(d))
    } else {
        // One run of twice the window; the release happens half-way.
        let mut run = cfg.clone();
        run.duration_s = 2 * d;
        run.release_at_s = d;
        if let Some(f) = run.fault.as_mut() {
            f.onset_s += d;
        }
        let whole = Simulator::new(run).observe_at(2 * d);
        (slice(&whole, 0, steps), slice(&whole, steps, steps))
    };
    let metrics = after
        .metrics
        .iter()
        .zip(&before.metrics)
        .map(|(a, b)| {
            let places = if a.spec.is_request_ratio() { 5 } else { 2 };
            let r = |v: &[Option<f64>]| v.iter().map(|x| round(*x, places)).collect();
            MetricSeries { spec: a.spec.clone(), baseline: r(&b.canary), canary: r(&a.canary) }
        })
        .collect();
    let traffic = match (&before.traffic, &after.traffic) {
        (Some(b), Some(a)) => Some(Traffic { baseline: b.canary.clone(), canary: a.canary.clone() }),
        _ => None,
    };
    let data = ScenarioData {
        name: name.clone(),
        description,
        service: cfg.service.clone(),
        step_s: cfg.step_s,
        duration_s: d,
        traffic,
        baseline_kind: kind,
        metrics,
        logs: vec![],
        events: vec![],
        ml: Default::default(),
    };
    Scenario { path: format!("{name}.json").into(), data, truth: Some(truth) }
}

/// Steps `from..from + n` of an observation, as their own series.
fn slice(o: &Observation, from: usize, n: usize) -> Observation {
    let cut = |v: &[Option<f64>]| v.get(from..from + n).map(<[_]>::to_vec).unwrap_or_default();
    let cut_n = |v: &[u64]| v.get(from..from + n).map(<[_]>::to_vec).unwrap_or_default();
    Observation {
        metrics: o
            .metrics
            .iter()
            .map(|m| MetricSeries { spec: m.spec.clone(), baseline: cut(&m.baseline), canary: cut(&m.canary) })
            .collect(),
        traffic: o.traffic.as_ref().map(|t| Traffic { baseline: cut_n(&t.baseline), canary: cut_n(&t.canary) }),
        ..o.clone()
    }
}

/// A served model's release of one family: everything drawn from fixed
/// ranges; the canary's change starts at a drawn onset.
fn model_release(rng: &mut ChaCha8Rng, family: &str) -> (SimConfig, Option<u64>) {
    let mut c = base(rng, false);
    nuisance(rng, &mut c, "realistic");
    let onset_s = rng.random_range(0..=60) * 10;
    let mut m = ModelSim {
        positive_rate: rng.random_range(0.1..0.5),
        accuracy: rng.random_range(0.8..0.97),
        label_share: rng.random_range(0.3..1.0),
        label_delay_s: rng.random_range(6..=60) * 10,
        change_at_s: onset_s,
        ..ModelSim::default()
    };
    let mut onset = Some(onset_s);
    match family {
        // A retrained model: scores move a little, quality the same.
        "retrain" => {
            m.prediction_shift = rng.random_range(-0.02..0.02);
            m.accuracy_drop = rng.random_range(-0.01..0.005);
            onset = None;
        }
        // Labels take one to four windows: quality cannot be known in time.
        "label-delay" => {
            m.label_delay_s = rng.random_range(2400..7200);
            onset = None;
        }
        // The canary's inputs or scores drift, labelled quality holds: an alert, not a rollback.
        "drift-stable" => {
            if rng.random_bool(0.5) {
                m.feature_shift = rng.random_range(0.4..1.0);
            } else {
                m.prediction_shift = rng.random_range(0.06..0.15);
            }
            onset = None;
        }
        "drift-falling-accuracy" => {
            m.prediction_shift = rng.random_range(0.04..0.15);
            m.accuracy_drop = rng.random_range(0.03..0.15);
        }
        "schema-change" => {
            m.schema_change = true;
            m.feature_shift = rng.random_range(0.3..0.8);
            m.accuracy_drop = rng.random_range(0.03..0.1);
        }
        // A bigger model: the same predictions, slower.
        _ => {
            c.fault =
                Some(FaultSpec { kind: FaultKind::LatencyRegression, onset_s, strength: rng.random_range(0.4..1.5) })
        }
    }
    c.model = Some(m);
    (c, onset)
}

/// The model-release corpus: `good_per_family` releases of every family in [`MODEL_FAMILIES`].
fn generate_model(spec: &CorpusSpec) -> Vec<Scenario> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut out = Vec::new();
    for (family, bad) in MODEL_FAMILIES {
        for k in 0..spec.good_per_family {
            let (c, onset) = model_release(&mut rng, family);
            let verdict = if bad { "bad" } else { "good" };
            let name = format!("{}-model-{verdict}-{family}-{k:03}", spec.prefix);
            let m = c.model.clone().unwrap_or_default();
            let desc = format!(
                "model release ({family}): accuracy {:.2} − {:.2}, score shift {:.2}, feature shift {:.2}, labels after {}s",
                m.accuracy, m.accuracy_drop, m.prediction_shift, m.feature_shift, m.label_delay_s
            );
            let truth = Truth { bad, onset_s: onset.filter(|_| bad), cause: bad.then(|| family.to_string()) };
            out.push(record(c, name, desc, truth));
        }
    }
    out
}
