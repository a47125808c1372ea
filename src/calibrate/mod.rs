//! Tolerances learned from a service's past releases (`backstop calibrate`).
//!
//! A tolerance is the smallest harmful shift that counts. The policy's
//! defaults (20 % of the baseline's level, 0.5 points of error ratio) fit a
//! typical service; a service whose canary pods always run a little hotter,
//! or whose latency is quieter than most, is better judged with its own.
//! Calibration replays the service's past **healthy** releases through the
//! judge and finds, per metric, the smallest tolerance at which none of them
//! (at most `max_false_rollback_rate` of them) would have failed on that
//! metric, adds a quarter as margin, and clamps the result to the policy's
//! `[calibration]` bounds — never looser than `max_*`, never tighter than
//! `min_*`. Past faulty releases, when given, are replayed before and after
//! so the report shows what the new tolerances cost in caught faults.
//!
//! Pure: releases in, a [`Calibration`] out. The CLI writes it to the ledger
//! (a `calibration` record) and `watch`/`agent` apply the service's newest one
//! when the policy opts in (`[calibration] apply = true`).

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::judge::{JudgeConfig, MetricStatus, Verdict, judge};
use crate::signals::{ReplaySource, ScenarioData};

/// `[calibration]` in the policy: whether and within what bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrationSettings {
    /// `watch` and `agent` judge a service with its newest calibration from the ledger (opt-in).
    pub apply: bool,
    /// With `apply`: on start, re-calibrate each configured service with a Prometheus source
    /// from its past releases in the ledger, read back from Prometheus, and record it when it changed.
    pub auto: bool,
    /// Fewest past healthy releases (or healthy stretches) a calibration needs.
    pub min_releases: usize,
    /// Share of the past healthy releases that may still fail after calibration (0 ≤ x < 0.5).
    pub max_false_rollback_rate: f64,
    /// Relative tolerances (non-ratio metrics) are kept within these, as fractions of the baseline's level.
    pub min_relative_tolerance: f64,
    /// See `min_relative_tolerance`.
    pub max_relative_tolerance: f64,
    /// Ratio metrics' absolute tolerance (0.005 = 0.5 points) is kept within these.
    pub min_ratio_tolerance: f64,
    /// See `min_ratio_tolerance`.
    pub max_ratio_tolerance: f64,
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        Self {
            apply: false,
            auto: false,
            min_releases: 5,
            max_false_rollback_rate: 0.05,
            min_relative_tolerance: 0.05,
            max_relative_tolerance: 0.5,
            // The rare-event test's own floor (`[judge] rare_event_tolerance`): a
            // calibrated ratio tolerance replaces it too, and below it a doubled
            // 0.02 % error rate would count.
            min_ratio_tolerance: 0.002,
            max_ratio_tolerance: 0.02,
        }
    }
}

impl CalibrationSettings {
    /// The first wrong field (relative to `[calibration]`) and what it should be.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, e: &str| Err(FieldError::of(f.to_string(), e.to_string()));
        if self.auto && !self.apply {
            return bad("auto", "`auto = true` only with `apply = true` (a calibration nobody applies is not made)");
        }
        if self.min_releases < 2 {
            return bad("min_releases", "at least 2 releases");
        }
        if !(0.0..0.5).contains(&self.max_false_rollback_rate) {
            return bad("max_false_rollback_rate", "a share from 0 to below 0.5");
        }
        if !(self.min_relative_tolerance > 0.0 && self.min_relative_tolerance <= self.max_relative_tolerance) {
            return bad("min_relative_tolerance", "a fraction > 0 and ≤ max_relative_tolerance");
        }
        if self.max_relative_tolerance > 5.0 {
            return bad("max_relative_tolerance", "a fraction ≤ 5");
        }
        if !(self.min_ratio_tolerance > 0.0 && self.min_ratio_tolerance <= self.max_ratio_tolerance) {
            return bad("min_ratio_tolerance", "a ratio > 0 and ≤ max_ratio_tolerance");
        }
        if self.max_ratio_tolerance > 1.0 {
            return bad("max_ratio_tolerance", "a ratio ≤ 1");
        }
        Ok(())
    }

    /// The bounds of a tolerance of `kind`.
    fn bounds(&self, kind: ToleranceKind) -> (f64, f64) {
        match kind {
            ToleranceKind::Relative => (self.min_relative_tolerance, self.max_relative_tolerance),
            ToleranceKind::Absolute => (self.min_ratio_tolerance, self.max_ratio_tolerance),
        }
    }
}

/// Which tolerance a metric's calibration sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToleranceKind {
    /// A fraction of the baseline's level (`relative_tolerance`).
    Relative,
    /// Points of a ratio metric (`absolute_tolerance`; also the rare-event test's).
    Absolute,
}

/// Where a calibrated value met the policy's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AtBound {
    /// Even `max_*` does not make the past healthy releases pass: they still fail at it.
    Max,
    /// The releases would allow a tighter tolerance than `min_*`.
    Min,
}

/// One metric's calibrated tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CalibratedMetric {
    /// Metric name.
    pub metric: String,
    /// Which tolerance.
    pub kind: ToleranceKind,
    /// The policy's value before calibration.
    pub policy_value: f64,
    /// The calibrated value, within the bounds.
    pub value: f64,
    /// Past healthy releases that still fail on this metric at `value`.
    pub still_failing: u32,
    /// Set when the bounds decided the value.
    pub at_bound: Option<AtBound>,
    /// The noise of the paired differences the releases showed, relative to
    /// the baseline's level (upper decile over releases); the paired test's prior.
    /// Relative tolerances only (ratio metrics have a binomial floor).
    #[serde(default)]
    pub noise_prior: Option<f64>,
}

/// A whole calibration: what went in, what came out, what it changes.
/// Stored as the ledger's `calibration` record under `calibration <service>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Calibration {
    /// The service.
    pub service: String,
    /// Names of the past healthy releases it learned from.
    pub releases: Vec<String>,
    /// Names of the past faulty releases replayed as a check.
    pub faulty: Vec<String>,
    /// Per metric.
    pub metrics: Vec<CalibratedMetric>,
    /// Metrics left alone because the policy sets their tolerance (or ignores them).
    pub set_in_policy: Vec<String>,
    /// Healthy releases the policy's tolerances rolled back.
    pub false_rollbacks_before: u32,
    /// Healthy releases the calibrated tolerances roll back.
    pub false_rollbacks_after: u32,
    /// Faulty releases the policy's tolerances rolled back.
    pub caught_before: u32,
    /// Faulty releases the calibrated tolerances roll back.
    pub caught_after: u32,
}

impl Calibration {
    /// The ledger's release id for a service's calibrations.
    pub fn ledger_id(service: &str) -> String {
        format!("calibration {service}")
    }

    /// The same inputs and values as `other`, to a part in 10⁹ (a value read
    /// back from the ledger's JSON may differ in its last bit).
    pub fn same_as(&self, other: &Calibration) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12);
        let same_metric = |a: &CalibratedMetric, b: &CalibratedMetric| {
            a.metric == b.metric
                && a.kind == b.kind
                && close(a.value, b.value)
                && match (a.noise_prior, b.noise_prior) {
                    (Some(x), Some(y)) => close(x, y),
                    (x, y) => x == y,
                }
        };
        self.releases == other.releases
            && self.metrics.len() == other.metrics.len()
            && self.metrics.iter().zip(&other.metrics).all(|(a, b)| same_metric(a, b))
    }

    /// `cfg` with this calibration's tolerances, clamped again to `bounds`
    /// (the policy may have tightened them since), on every metric the
    /// policy does not set itself.
    pub fn apply(&self, cfg: &mut JudgeConfig, bounds: &CalibrationSettings) {
        let n = self.releases.len() as u32;
        for m in &self.metrics {
            let o = cfg.metrics.entry(m.metric.clone()).or_default();
            if o.ignore || o.relative_tolerance.is_some() || o.absolute_tolerance.is_some() {
                continue;
            }
            let (lo, hi) = bounds.bounds(m.kind);
            let v = m.value.clamp(lo, hi);
            match m.kind {
                ToleranceKind::Relative => o.relative_tolerance = Some(v),
                ToleranceKind::Absolute => o.absolute_tolerance = Some(v),
            }
            o.calibrated_from = Some(n);
            o.noise_prior = m.noise_prior;
        }
    }
}

/// Why a calibration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// Fewer past healthy releases than `[calibration] min_releases`.
    #[error(
        "{found} past healthy release(s) of `{service}`; calibration needs at least {need} ([calibration] min_releases)"
    )]
    TooFew {
        /// The service.
        service: String,
        /// Healthy releases found.
        found: usize,
        /// `min_releases`.
        need: usize,
    },
}

/// Candidate tolerances between a kind's bounds, geometric, ascending.
const GRID: usize = 16;

/// The safety margin over the smallest tolerance every past healthy release
/// passes: the next release's noise is not the past's worst.
const MARGIN: f64 = 1.25;

/// How a healthy stretch's name ends.
pub const BEFORE_ITS_FAULT: &str = " (before its fault)";

/// The healthy stretch of a faulty release: up to its fault's onset, when
/// that leaves at least `min_s` seconds after `warmup_s` to judge.
pub fn before_onset(data: &ScenarioData, onset_s: Option<u64>, warmup_s: u64, min_s: u64) -> Option<ScenarioData> {
    let onset = onset_s?;
    (onset >= warmup_s + min_s).then(|| {
        let mut d = data.prefix(onset);
        d.name = format!("{}{BEFORE_ITS_FAULT}", d.name);
        d
    })
}

/// Calibrate `cfg` (the service's judge configuration) on past `healthy`
/// releases (and healthy stretches); `faulty` ones are only replayed as a check.
pub fn calibrate(
    service: &str,
    healthy: &[ScenarioData],
    faulty: &[ScenarioData],
    cfg: &JudgeConfig,
    settings: &CalibrationSettings,
) -> Result<Calibration, CalibrationError> {
    if healthy.len() < settings.min_releases {
        return Err(CalibrationError::TooFew {
            service: service.into(),
            found: healthy.len(),
            need: settings.min_releases,
        });
    }
    let (free, set_in_policy) = metrics_to_calibrate(healthy, cfg);
    // Each metric may keep this many failing releases; together within the target.
    let allowed = ((settings.max_false_rollback_rate * healthy.len() as f64) / free.len().max(1) as f64).floor() as u32;
    // The noise priors first: the tolerances are searched with the test that will use them.
    let priors = noise_priors(healthy, cfg, &free);
    let mut with_priors = cfg.clone();
    for (name, prior) in &priors {
        with_priors.metrics.entry(name.clone()).or_default().noise_prior = Some(*prior);
    }
    let mut metrics = search(healthy, &with_priors, settings, &free, allowed);
    for m in &mut metrics {
        m.noise_prior = priors.get(&m.metric).copied();
    }
    let mut calibration = Calibration {
        service: service.into(),
        releases: healthy.iter().map(|d| d.name.clone()).collect(),
        faulty: faulty.iter().map(|d| d.name.clone()).collect(),
        metrics,
        set_in_policy,
        false_rollbacks_before: rollbacks(healthy, cfg),
        false_rollbacks_after: 0,
        caught_before: rollbacks(faulty, cfg),
        caught_after: 0,
    };
    let mut after = cfg.clone();
    calibration.apply(&mut after, settings);
    calibration.false_rollbacks_after = rollbacks(healthy, &after);
    calibration.caught_after = rollbacks(faulty, &after);
    Ok(calibration)
}

/// Which quantile of the releases' noise is the prior: nine in ten of them were quieter.
const PRIOR_QUANTILE: f64 = 0.9;

/// Per relative-tolerance metric, the upper decile over the releases of its
/// relative noise after warm-up (`judge::relative_noise`).
fn noise_priors(
    releases: &[ScenarioData],
    cfg: &JudgeConfig,
    free: &[(String, ToleranceKind, f64)],
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, _, _) in free.iter().filter(|(_, k, _)| *k == ToleranceKind::Relative) {
        let mut noise: Vec<f64> = releases
            .iter()
            .filter_map(|d| {
                let from = cfg.warmup_s.div_ceil(u64::from(d.step_s.max(1))) as usize;
                d.metrics.iter().find(|m| &m.spec.name == name).and_then(|m| crate::judge::relative_noise(m, from))
            })
            .filter(|v| v.is_finite())
            .collect();
        // Releases differ (traffic, time of day): a prior claiming less noise than most
        // of them showed would make the test overconfident on the noisier ones.
        noise.sort_by(f64::total_cmp);
        if let Some(&q) = noise.get(((noise.len() as f64 * PRIOR_QUANTILE).ceil() as usize).saturating_sub(1)) {
            out.insert(name.clone(), q);
        }
    }
    out
}

/// The releases' metrics the calibration may set (name, kind, policy value),
/// and those the policy sets itself.
fn metrics_to_calibrate(
    releases: &[ScenarioData],
    cfg: &JudgeConfig,
) -> (Vec<(String, ToleranceKind, f64)>, Vec<String>) {
    let mut seen = BTreeMap::new();
    for m in releases.iter().flat_map(|d| &d.metrics) {
        seen.entry(m.spec.name.clone()).or_insert(m.spec.is_request_ratio());
    }
    let (mut free, mut fixed) = (vec![], vec![]);
    for (name, ratio) in seen {
        let o = cfg.metrics.get(&name);
        if o.is_some_and(|o| o.ignore || o.relative_tolerance.is_some() || o.absolute_tolerance.is_some()) {
            fixed.push(name);
        } else if ratio {
            free.push((name, ToleranceKind::Absolute, cfg.ratio_absolute_tolerance));
        } else {
            free.push((name, ToleranceKind::Relative, cfg.relative_tolerance));
        }
    }
    (free, fixed)
}

/// Per metric, the smallest grid tolerance with at most `allowed` failing
/// releases, found by bisection on all metrics at once (each metric's
/// findings depend on its own tolerance only), then the margin and bounds.
fn search(
    releases: &[ScenarioData],
    cfg: &JudgeConfig,
    settings: &CalibrationSettings,
    free: &[(String, ToleranceKind, f64)],
    allowed: u32,
) -> Vec<CalibratedMetric> {
    let grid = |kind: ToleranceKind, i: usize| {
        let (lo, hi) = settings.bounds(kind);
        lo * (hi / lo).powf(i as f64 / (GRID - 1) as f64)
    };
    // [lo, hi] grid indices per metric; hi = the max bound until shown otherwise.
    let mut range: Vec<(usize, usize)> = vec![(0, GRID - 1); free.len()];
    let at_max = failures_at(releases, cfg, free, &|k| grid(free[k].1, GRID - 1));
    loop {
        let mids: Vec<usize> = range.iter().map(|&(lo, hi)| (lo + hi) / 2).collect();
        if range.iter().all(|&(lo, hi)| lo >= hi) {
            break;
        }
        let fails = failures_at(releases, cfg, free, &|k| grid(free[k].1, mids[k]));
        for (k, r) in range.iter_mut().enumerate() {
            if r.0 < r.1 {
                *r = if fails[k] <= allowed { (r.0, mids[k]) } else { (mids[k] + 1, r.1) };
            }
        }
    }
    let chosen: Vec<f64> = free
        .iter()
        .enumerate()
        .map(|(k, (_, kind, _))| {
            let (lo, hi) = settings.bounds(*kind);
            if at_max[k] > allowed { hi } else { (grid(*kind, range[k].0) * MARGIN).clamp(lo, hi) }
        })
        .collect();
    let still = failures_at(releases, cfg, free, &|k| chosen[k]);
    free.iter()
        .enumerate()
        .map(|(k, (metric, kind, policy_value))| {
            let at_bound = if at_max[k] > allowed {
                Some(AtBound::Max)
            } else if range[k].0 == 0 {
                Some(AtBound::Min)
            } else {
                None
            };
            CalibratedMetric {
                metric: metric.clone(),
                kind: *kind,
                policy_value: *policy_value,
                value: chosen[k],
                still_failing: still[k],
                at_bound,
                noise_prior: None,
            }
        })
        .collect()
}

/// Per free metric, how many releases fail on it with metric `k` at `tol(k)`.
fn failures_at(
    releases: &[ScenarioData],
    cfg: &JudgeConfig,
    free: &[(String, ToleranceKind, f64)],
    tol: &(dyn Fn(usize) -> f64 + Sync),
) -> Vec<u32> {
    let mut trial = cfg.clone();
    for (k, (name, kind, _)) in free.iter().enumerate() {
        let o = trial.metrics.entry(name.clone()).or_default();
        match kind {
            ToleranceKind::Relative => o.relative_tolerance = Some(tol(k)),
            ToleranceKind::Absolute => o.absolute_tolerance = Some(tol(k)),
        }
    }
    let failed: Vec<BTreeSet<String>> = in_parallel(releases, |d| failing_metrics(d, &trial));
    free.iter().map(|(name, _, _)| failed.iter().filter(|f| f.contains(name)).count() as u32).collect()
}

/// `f` over `items` on the machine's cores, in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len().max(1));
    let chunk = items.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>())).collect();
        // A judge that panics is a bug: raise it here rather than count a release short.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// Metrics failing at any tick of a release, up to its promotion (or the end).
fn failing_metrics(data: &ScenarioData, cfg: &JudgeConfig) -> BTreeSet<String> {
    let src = ReplaySource::new(std::sync::Arc::new(data.clone()));
    let step = u64::from(data.step_s.max(1));
    let mut failed = BTreeSet::new();
    let mut now = step;
    loop {
        let r = judge(&src.observe_at(now), cfg);
        failed.extend(r.findings.iter().filter(|f| f.status == MetricStatus::Failing).map(|f| f.metric.clone()));
        if r.verdict == Verdict::Pass || now >= data.duration_s {
            return failed;
        }
        now = (now + step).min(data.duration_s);
    }
}

/// Releases the judge rolls back with `cfg` (the first failing tick decides, as in `eval`).
fn rollbacks(releases: &[ScenarioData], cfg: &JudgeConfig) -> u32 {
    in_parallel(releases, |d| rolled_back(d, cfg)).into_iter().filter(|b| *b).count() as u32
}

fn rolled_back(data: &ScenarioData, cfg: &JudgeConfig) -> bool {
    crate::judge::replay::replay_with(data, cfg).decision == crate::judge::replay::ReplayDecision::Rollback
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::MetricOverride;

    /// The first `minutes` of a recorded release (short, so debug builds replay it quickly).
    fn release(name: &str, minutes: u64) -> ScenarioData {
        let path = format!("fixtures/scenarios/dev/{name}.json");
        crate::signals::load_scenario(std::path::Path::new(&path)).unwrap().data.prefix(minutes * 60)
    }

    fn healthy() -> Vec<ScenarioData> {
        (0..3)
            .flat_map(|i| {
                [release(&format!("dev-good-healthy-00{i}"), 10), release(&format!("dev-good-noisy-00{i}"), 10)]
            })
            .collect()
    }

    /// A service whose canary pods always run 35 % slower (a node type, not
    /// a fault): healthy by its history, failed by the default tolerance.
    fn hot(mut d: ScenarioData) -> ScenarioData {
        for m in d.metrics.iter_mut().filter(|m| m.spec.name == "latency_p99_ms") {
            m.canary.iter_mut().flatten().for_each(|v| *v *= 1.35);
        }
        d
    }

    #[test]
    fn a_systematic_healthy_shift_is_learned_within_the_bound_and_no_further() {
        let cfg = JudgeConfig::default();
        let releases: Vec<_> = (0..6).map(|i| hot(release(&format!("dev-good-healthy-00{i}"), 10))).collect();
        let wide = CalibrationSettings::default();
        let c = calibrate("checkout", &releases, &[], &cfg, &wide).unwrap();
        let latency = c.metrics.iter().find(|m| m.metric == "latency_p99_ms").unwrap();
        assert!(c.false_rollbacks_before >= 4, "the default tolerance fails them: {c:?}");
        assert_eq!((c.false_rollbacks_after, latency.still_failing), (0, 0), "{c:?}");
        assert!(latency.value > 0.2 && latency.value <= wide.max_relative_tolerance, "{latency:?}");
        // A policy that allows at most 25 %: the value stays at 25 % and says the releases still fail.
        let narrow = CalibrationSettings { max_relative_tolerance: 0.25, ..wide };
        let c = calibrate("checkout", &releases, &[], &cfg, &narrow).unwrap();
        let latency = c.metrics.iter().find(|m| m.metric == "latency_p99_ms").unwrap();
        assert_eq!((latency.value, latency.at_bound), (0.25, Some(AtBound::Max)));
        assert!(latency.still_failing >= 4 && c.false_rollbacks_after >= 4, "{c:?}");
    }

    #[test]
    fn quiet_metrics_are_tightened_to_the_floor_and_never_below() {
        let settings = CalibrationSettings { min_relative_tolerance: 0.08, ..CalibrationSettings::default() };
        let c = calibrate("checkout", &healthy(), &[], &JudgeConfig::default(), &settings).unwrap();
        for m in c.metrics.iter().filter(|m| m.kind == ToleranceKind::Relative) {
            assert!(m.value >= 0.08 && m.value <= settings.max_relative_tolerance, "{m:?}");
        }
        let memory = c.metrics.iter().find(|m| m.metric == "memory_mb").unwrap();
        assert!(memory.value < 0.2, "a quiet metric is judged tighter than the default: {memory:?}");
        // A noise prior per relative-tolerance metric (a fraction of its level), none for ratios.
        assert!(memory.noise_prior.is_some_and(|p| p > 0.0 && p < 0.5), "{memory:?}");
        let errors = c.metrics.iter().find(|m| m.metric == "http_error_ratio").unwrap();
        assert_eq!(errors.noise_prior, None);
        let mut cfg = JudgeConfig::default();
        c.apply(&mut cfg, &settings);
        assert_eq!(cfg.metrics["memory_mb"].noise_prior, memory.noise_prior);
        assert_eq!(c.false_rollbacks_after, 0);
    }

    #[test]
    fn applying_respects_the_policy_as_it_is_now() {
        let c = Calibration {
            service: "checkout".into(),
            releases: (0..23).map(|i| format!("r{i}")).collect(),
            faulty: vec![],
            metrics: vec![
                CalibratedMetric {
                    metric: "latency_p99_ms".into(),
                    kind: ToleranceKind::Relative,
                    policy_value: 0.2,
                    value: 0.45,
                    still_failing: 0,
                    at_bound: None,
                    noise_prior: None,
                },
                CalibratedMetric {
                    metric: "cpu_percent".into(),
                    kind: ToleranceKind::Relative,
                    policy_value: 0.2,
                    value: 0.1,
                    still_failing: 0,
                    at_bound: None,
                    noise_prior: None,
                },
            ],
            set_in_policy: vec![],
            false_rollbacks_before: 0,
            false_rollbacks_after: 0,
            caught_before: 0,
            caught_after: 0,
        };
        let mut cfg = JudgeConfig::default();
        // The operator's own tolerance wins over a calibration.
        cfg.metrics
            .insert("cpu_percent".into(), MetricOverride { relative_tolerance: Some(0.3), ..Default::default() });
        // The bounds were tightened after the calibration was recorded.
        let now = CalibrationSettings { max_relative_tolerance: 0.3, ..CalibrationSettings::default() };
        c.apply(&mut cfg, &now);
        let latency = &cfg.metrics["latency_p99_ms"];
        assert_eq!((latency.relative_tolerance, latency.calibrated_from), (Some(0.3), Some(23)));
        let cpu = &cfg.metrics["cpu_percent"];
        assert_eq!((cpu.relative_tolerance, cpu.calibrated_from), (Some(0.3), None));
    }

    #[test]
    fn a_faulty_release_before_its_onset_is_a_healthy_stretch_and_an_earlier_window_stays_whole() {
        let d = release("dev-good-healthy-000", 30);
        assert!(before_onset(&d, Some(200), 60, 300).is_none(), "too short to judge");
        assert!(before_onset(&d, None, 60, 300).is_none(), "no onset known");
        let s = before_onset(&d, Some(905), 60, 300).unwrap();
        assert_eq!(s.duration_s, 900);
        assert!(s.name.ends_with(BEFORE_ITS_FAULT));
        assert!(s.metrics.iter().all(|m| m.canary.len() == 90 && m.baseline.len() == 90));
        assert_eq!(s.traffic.as_ref().map(|t| (t.baseline.len(), t.canary.len())), Some((90, 90)));
        let earlier = ScenarioData { baseline_kind: crate::signals::BaselineKind::Preceding, ..d };
        let s = earlier.prefix(600);
        assert!(s.metrics.iter().all(|m| m.canary.len() == 60 && m.baseline.len() == 180), "history is the past");
    }

    #[test]
    fn too_few_releases_and_bad_bounds_are_named() {
        let e = calibrate("checkout", &healthy()[..2], &[], &JudgeConfig::default(), &CalibrationSettings::default())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "2 past healthy release(s) of `checkout`; calibration needs at least 5 ([calibration] min_releases)"
        );
        let bad = CalibrationSettings { min_ratio_tolerance: 0.05, max_ratio_tolerance: 0.02, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "min_ratio_tolerance");
        let bad = CalibrationSettings { max_false_rollback_rate: 0.5, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "max_false_rollback_rate");
    }
}
