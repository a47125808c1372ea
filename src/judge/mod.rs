//! The deterministic judge: canary versus its concurrent baseline, per
//! metric, at every analysis tick. A pure function of the observation.
//!
//! Method (docs/judge.md):
//! - Paired differences `d_i = canary_i − baseline_i`, oriented so that
//!   positive is bad; a shared-infrastructure blip hits both sides in the
//!   same step and cancels.
//! - Sustained shifts: over the last 1, 2 and 5 minutes, the shift (median
//!   of `d`, or the pooled difference of error ratios weighted by traffic) is
//!   divided by its standard error (robust MAD of `d`, floored by the
//!   binomial error of the request counts). It must exceed Student's t
//!   critical value at `alpha / (tests × looks)` — Bonferroni across metrics,
//!   windows and every look of the window — *and* a practical tolerance,
//!   at `consecutive_looks` looks in a row.
//! - Intermittent faults: steps where the canary alone is implausibly worse
//!   (an "excursion") are counted against steps where the baseline alone is;
//!   many one-sided excursions fail the metric.
//! - No data is inconclusive, never a failure; a pass needs the whole window
//!   with enough coverage on every metric.

mod context;
mod guard;
mod history;
pub mod jumps;
pub mod logs;
mod metric;
pub mod ml;
pub mod replay;
pub mod sequential;
pub mod stats;
pub mod trend;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::signals::{BadDirection, Observation, Unit};
pub use guard::{BaselineShift, Breach, Guard, GuardHit, GuardNote, Limit, SHIFT_BLOCK_S, SHIFT_TOLERANCES};
pub use logs::{LogMiner, LogMining};
use metric::analyse_metric;
pub use metric::relative_noise;

/// The judge's tunables. Each has a documented default; the policy file may
/// set them within the bounds that [`JudgeConfig::validate`] enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeConfig {
    /// Family-wise false-rollback budget per release (0 < alpha ≤ 0.1).
    pub alpha: f64,
    /// Seconds after canary start whose samples are ignored (start-up transients).
    pub warmup_s: u64,
    /// Recent windows tested at each look, in seconds.
    pub windows_s: Vec<u64>,
    /// Fewest samples a window may hold.
    pub min_window_samples: usize,
    /// Looks in a row that must flag a metric before it fails.
    pub consecutive_looks: usize,
    /// A shift smaller than this fraction of the baseline level is tolerated.
    pub relative_tolerance: f64,
    /// For `ratio` metrics: a shift below this many absolute points is tolerated.
    pub ratio_absolute_tolerance: f64,
    /// For `ratio` metrics, the sequential test only: a rise below this many
    /// absolute points is tolerated (a tripled 0.2 % error rate counts; a
    /// doubled 0.02 % does not).
    pub rare_event_tolerance: f64,
    /// One-sided excursions (canary alone implausibly worse) that fail a metric.
    pub excursions_to_fail: usize,
    /// Share of expected samples a metric needs at the end of the window to pass.
    pub min_coverage: f64,
    /// Canary requests the whole window needs before a `ratio` metric can pass.
    pub min_canary_requests: u64,
    /// The trend test for leaks: length of each of its two windows, seconds.
    pub trend_window_s: u64,
    /// The trend test for leaks: how far ahead the recent growth is carried
    /// before it is held against the tolerance, seconds.
    pub leak_horizon_s: u64,
    /// Per-metric overrides, by metric name.
    pub metrics: BTreeMap<String, MetricOverride>,
    /// How a release without a concurrent baseline is compared: `auto`
    /// (before/after for `preceding` and `seasonal`), or `paired` always (v1's method, for comparison).
    pub method: MethodChoice,
    /// How log templates are judged (`[judge.logs]`).
    pub logs: logs::LogJudgeConfig,
    /// How model-release signals are judged (`[judge.ml]`).
    pub ml: ml::MlJudgeConfig,
}

/// Which comparison the judge uses; docs/judge.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MethodChoice {
    /// Paired for a concurrent baseline; before/after for an earlier window.
    #[default]
    Auto,
    /// Paired whatever the baseline is (the judge before v2).
    Paired,
}

/// Per-metric overrides of the judge's tolerances, and an optional guard.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricOverride {
    /// Replaces `relative_tolerance` for this metric.
    pub relative_tolerance: Option<f64>,
    /// An absolute tolerance in the metric's unit.
    pub absolute_tolerance: Option<f64>,
    /// Skip this metric entirely.
    pub ignore: bool,
    /// Run the trend test for leaks on this metric (default: on for `bytes` and `MB`).
    pub trend: Option<bool>,
    /// Guard: the canary above this (metric's unit) for `for_s` fails the metric.
    pub max: Option<f64>,
    /// Guard: the canary below this for `for_s` fails the metric.
    pub min: Option<f64>,
    /// Guard: seconds every sample must be past the limit (default 60).
    pub for_s: Option<u64>,
    /// Guard on a ratio metric: canary requests needed within `for_s` (default 50).
    pub min_requests: Option<u64>,
    /// Set by a calibration (never by the policy file): how many past
    /// releases the tolerance above was learned from, for explanations.
    #[serde(skip)]
    #[schemars(skip)]
    pub calibrated_from: Option<u32>,
    /// Set by a calibration: the noise of the paired differences past
    /// releases showed, as a fraction of the baseline's level. The paired
    /// test pools it with the window's own estimate as `NOISE_PRIOR_WEIGHT`
    /// samples, so a few quiet early samples neither make the test
    /// overconfident nor leave it waiting for degrees of freedom.
    #[serde(skip)]
    #[schemars(skip)]
    pub noise_prior: Option<f64>,
}

/// Samples a calibrated noise prior counts as in the paired test.
pub const NOISE_PRIOR_WEIGHT: f64 = 10.0;

/// A guard as written for one service (`[services.NAME.metrics.METRIC]`):
/// it replaces the `[judge.metrics]` guard of the same metric for that service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GuardSpec {
    /// The canary above this (metric's unit) for `for_s` fails the metric.
    pub max: Option<f64>,
    /// The canary below this for `for_s` fails the metric.
    pub min: Option<f64>,
    /// Seconds every sample must be past the limit (default 60).
    pub for_s: Option<u64>,
    /// Ratio metrics: canary requests needed within `for_s` (default 50).
    pub min_requests: Option<u64>,
}

/// Guard defaults: Flagger's and Argo's usual one-minute interval, and
/// enough requests that one error in a handful is not a breach.
const DEFAULT_GUARD_FOR_S: u64 = 60;
const DEFAULT_GUARD_MIN_REQUESTS: u64 = 50;

impl GuardSpec {
    /// The guard, when a limit is set.
    pub fn guard(&self) -> Option<Guard> {
        let limit = match (self.max, self.min) {
            (Some(v), _) => Limit::Max(v),
            (None, Some(v)) => Limit::Min(v),
            (None, None) => return None,
        };
        Some(Guard {
            limit,
            for_s: self.for_s.unwrap_or(DEFAULT_GUARD_FOR_S),
            min_requests: self.min_requests.unwrap_or(DEFAULT_GUARD_MIN_REQUESTS),
        })
    }

    /// Check bounds; `Err(FieldError::of(field under this spec, expected))`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, e: &str| Err(FieldError::of(f.to_string(), e.to_string()));
        if self.max.is_some() && self.min.is_some() {
            return bad("min", "either `max` or `min`, not both (a metric has one harmful direction per guard)");
        }
        for (f, v) in [("max", self.max), ("min", self.min)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return bad(f, "a finite number in the metric's unit");
            }
        }
        if self.max.is_none() && self.min.is_none() && (self.for_s.is_some() || self.min_requests.is_some()) {
            return bad("max", "a limit (`max` or `min`) for the guard that `for_s`/`min_requests` configure");
        }
        if self.for_s.is_some_and(|s| !(1..=86_400).contains(&s)) {
            return bad("for_s", "seconds from 1 to 86400 (one day)");
        }
        if self.min_requests == Some(0) {
            return bad("min_requests", "at least 1 request (0 would let a single request breach)");
        }
        Ok(())
    }
}

impl MetricOverride {
    /// This override's guard fields.
    pub fn guard_spec(&self) -> GuardSpec {
        GuardSpec { max: self.max, min: self.min, for_s: self.for_s, min_requests: self.min_requests }
    }

    /// Replace the guard fields with a service's.
    pub fn set_guard(&mut self, g: &GuardSpec) {
        (self.max, self.min, self.for_s, self.min_requests) = (g.max, g.min, g.for_s, g.min_requests);
    }
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            warmup_s: 60,
            windows_s: vec![60, 120, 300, 600, 1800],
            min_window_samples: 3,
            consecutive_looks: 2,
            relative_tolerance: 0.2,
            ratio_absolute_tolerance: 0.005,
            rare_event_tolerance: 0.002,
            excursions_to_fail: 5,
            min_coverage: 0.5,
            min_canary_requests: 100,
            trend_window_s: 600,
            leak_horizon_s: 4 * 3600,
            metrics: BTreeMap::new(),
            method: MethodChoice::Auto,
            logs: logs::LogJudgeConfig::default(),
            ml: ml::MlJudgeConfig::default(),
        }
    }
}

impl JudgeConfig {
    /// Check every field against its bounds; `Err(FieldError::of(field, expected))`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, e: &str| Err(FieldError::of(f.to_string(), e.to_string()));
        if !(self.alpha > 0.0 && self.alpha <= 0.1) {
            return bad("alpha", "a number in (0, 0.1]");
        }
        if self.windows_s.is_empty() || self.windows_s.iter().any(|w| !(1..=86_400).contains(w)) {
            return bad("windows_s", "a non-empty list of seconds from 1 to 86400 (one day)");
        }
        if self.warmup_s > 86_400 {
            return bad("warmup_s", "seconds from 0 to 86400 (one day)");
        }
        if self.min_window_samples < 2 {
            return bad("min_window_samples", "an integer ≥ 2");
        }
        if !(1..=10).contains(&self.consecutive_looks) {
            return bad("consecutive_looks", "an integer from 1 to 10");
        }
        if !(0.0..=5.0).contains(&self.relative_tolerance) {
            return bad("relative_tolerance", "a fraction from 0 to 5");
        }
        if !(0.0..=1.0).contains(&self.ratio_absolute_tolerance) {
            return bad("ratio_absolute_tolerance", "a ratio from 0 to 1");
        }
        if !(0.0..=1.0).contains(&self.rare_event_tolerance) {
            return bad("rare_event_tolerance", "a ratio from 0 to 1");
        }
        if !(60..=86_400).contains(&self.trend_window_s) {
            return bad("trend_window_s", "seconds from 60 to 86400 (one day)");
        }
        if !(60..=7 * 86_400).contains(&self.leak_horizon_s) {
            return bad("leak_horizon_s", "seconds from 60 to 604800 (one week)");
        }
        if self.excursions_to_fail < 2 {
            return bad("excursions_to_fail", "an integer ≥ 2");
        }
        // 0 would let a metric with no data at all pass the window.
        if !(0.1..=1.0).contains(&self.min_coverage) {
            return bad("min_coverage", "a fraction from 0.1 to 1 (0 would pass a metric that has no data)");
        }
        if self.min_canary_requests == 0 {
            return bad("min_canary_requests", "at least 1 request (0 would pass a ratio nobody exercised)");
        }
        for (name, o) in &self.metrics {
            if o.relative_tolerance.is_some_and(|t| !(0.0..=5.0).contains(&t)) {
                return Err(FieldError::of(
                    format!("metrics.{name}.relative_tolerance"),
                    "a fraction from 0 to 5".into(),
                ));
            }
            if o.absolute_tolerance.is_some_and(|t| !(t >= 0.0 && t.is_finite())) {
                return Err(FieldError::of(format!("metrics.{name}.absolute_tolerance"), "a finite number ≥ 0".into()));
            }
            o.guard_spec().validate().map_err(|e| e.under(&format!("metrics.{name}")))?;
        }
        self.logs.validate()?;
        self.ml.validate()
    }
}

/// The judge's overall answer at one tick.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Verdict {
    /// The window completed and every metric is within tolerance with enough data.
    Pass,
    /// At least one metric is failing with strong evidence.
    Fail,
    /// Not enough evidence either way (yet, or at all).
    Inconclusive,
}

/// One metric's state at this tick.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MetricStatus {
    /// Within tolerance so far.
    Ok,
    /// Worse than baseline beyond tolerance, with strong evidence.
    Failing,
    /// Shifted beyond tolerance at this look but not yet at enough looks in a row.
    Suspect,
    /// No paired samples yet (or the source is silent).
    NoData,
    /// Too few samples or requests to vouch for this metric.
    InsufficientData,
    /// Ignored by configuration.
    Ignored,
    /// Both sides past the metric's guard at once: an incident both versions
    /// share. Never a rollback, never a promotion: hold for a human.
    SharedBreach,
    /// The concurrent baseline itself moved far during the window; the
    /// comparison no longer says what the canary did. Hold for a human.
    BaselineShifted,
    /// A prediction or feature distribution drifted (or the input schema
    /// changed) and `[judge.ml]` holds that for a human: an alert, not a
    /// rollback, unless labelled quality falls too.
    Drifted,
    /// Too few delayed labels have arrived to judge quality: pending, not
    /// missing data and not a failure.
    LabelsPending,
}

impl MetricStatus {
    /// Holds the release for a human whatever the statistics say (unless failing).
    pub fn is_incident(self) -> bool {
        matches!(self, MetricStatus::SharedBreach | MetricStatus::BaselineShifted)
    }

    /// Nothing here speaks against the canary, so a ramp may raise its
    /// share. A complete table: a new status must say whether it blocks a raise.
    pub fn is_clear(self) -> bool {
        match self {
            MetricStatus::Ok
            | MetricStatus::NoData
            | MetricStatus::InsufficientData
            | MetricStatus::Ignored
            | MetricStatus::LabelsPending => true,
            MetricStatus::Failing
            | MetricStatus::Suspect
            | MetricStatus::SharedBreach
            | MetricStatus::BaselineShifted
            | MetricStatus::Drifted => false,
        }
    }
}

/// The evidence for one metric, in numbers a human can check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// Metric name.
    pub metric: String,
    /// Unit as declared.
    pub unit: Unit,
    /// Which change hurts.
    pub bad_direction: BadDirection,
    /// Status at this tick.
    pub status: MetricStatus,
    /// Baseline level over the strongest window (median, or pooled ratio).
    pub baseline: Option<f64>,
    /// Canary level over the same window.
    pub canary: Option<f64>,
    /// Harmful shift (positive = worse), in the metric's unit.
    pub effect: Option<f64>,
    /// Shift relative to the baseline level.
    pub relative_effect: Option<f64>,
    /// Shift divided by its standard error.
    pub z: Option<f64>,
    /// Critical value the shift had to exceed.
    pub critical: Option<f64>,
    /// One-sided confidence that the canary is worse (1 − p).
    pub confidence: Option<f64>,
    /// Smallest shift that counts as harmful.
    pub tolerance: Option<f64>,
    /// Length of the window the numbers come from, seconds.
    pub window_s: Option<u64>,
    /// Paired samples used so far (after warm-up).
    pub samples: usize,
    /// Share of expected samples present.
    pub coverage: f64,
    /// One-sided excursions: canary alone worse / baseline alone worse.
    pub excursions: (usize, usize),
    /// The metric's guard, when it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardHit>,
    /// The concurrent baseline's own move during the window, when beyond bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_shift: Option<BaselineShift>,
    /// The sequential test's accumulated evidence (request ratios against a concurrent baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<sequential::SequentialEvidence>,
    /// The shift e-detector's accumulated evidence (continuous metrics against a concurrent baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<sequential::ShiftEvidence>,
    /// The trend test's numbers, for metrics it runs on once it has two windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend: Option<trend::TrendEvidence>,
    /// How the canary was compared (by the release's `baseline_kind`).
    #[serde(default, skip_serializing_if = "Comparison::is_paired")]
    pub comparison: Comparison,
    /// For a log template: its text and an example line (untrusted data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<logs::LogTemplate>,
    /// For a model-release signal: drift distances or labelled scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ml: Option<ml::MlEvidence>,
    /// Against an earlier window: this metric jumped past its history at the same step as another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joint_jump: Option<jumps::JointJump>,
    /// Against the same window one period earlier: this metric alone jumped past that window's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lone_jump: Option<jumps::LoneJump>,
    /// One sentence a human can check against the numbers.
    pub explanation: String,
}

/// Which statistics produced a finding; docs/judge.md.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Comparison {
    /// Step by step against a concurrent baseline (`baseline_kind` = `concurrent`).
    #[default]
    Paired,
    /// Against the service's own past (`preceding` or `seasonal`), with the
    /// earlier window's autocorrelation in every standard error.
    BeforeAfter {
        /// Lag-one autocorrelation of the earlier window.
        rho: f64,
        /// Independent samples the earlier window is worth.
        effective_n: f64,
    },
}

impl Comparison {
    fn is_paired(&self) -> bool {
        *self == Comparison::Paired
    }
}

impl Finding {
    /// A finding with no evidence yet (`NoData`), to be filled in.
    pub fn empty(spec: &crate::signals::MetricSpec) -> Self {
        Finding {
            metric: spec.name.clone(),
            unit: spec.unit.clone(),
            bad_direction: spec.bad_direction,
            status: MetricStatus::NoData,
            baseline: None,
            canary: None,
            effect: None,
            relative_effect: None,
            z: None,
            critical: None,
            confidence: None,
            tolerance: None,
            window_s: None,
            samples: 0,
            coverage: 0.0,
            excursions: (0, 0),
            guard: None,
            baseline_shift: None,
            comparison: Comparison::Paired,
            sequential: None,
            shift: None,
            trend: None,
            log: None,
            ml: None,
            joint_jump: None,
            lone_jump: None,
            explanation: String::new(),
        }
    }
}

/// The judge's result at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JudgeResult {
    /// Overall verdict.
    pub verdict: Verdict,
    /// Release clock time of the tick.
    pub now_s: u64,
    /// Whether the analysis window has completed.
    pub window_complete: bool,
    /// Per-metric findings.
    pub findings: Vec<Finding>,
    /// Why the verdict is what it is.
    pub summary: String,
    /// Log lines left unmined or waiting (a flood), when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_mining: Option<LogMining>,
}

impl JudgeResult {
    /// A result with no findings: `verdict` at `now_s`, for `summary` (no
    /// observation to judge, a deadline passed, a record built by hand).
    pub fn without_findings(verdict: Verdict, now_s: u64, summary: String) -> Self {
        Self { verdict, now_s, window_complete: false, findings: vec![], summary, log_mining: None }
    }

    /// Metrics that are failing.
    pub fn failing(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status == MetricStatus::Failing)
    }

    /// The guards that fired, in brief.
    pub fn guard_notes(&self) -> Vec<GuardNote> {
        self.findings
            .iter()
            .filter_map(|f| {
                f.guard.as_ref().map(|h| GuardNote { metric: f.metric.clone(), breach: h.breach, at_s: h.at_s })
            })
            .collect()
    }

    /// Metrics held for an incident-like condition (shared breach, baseline shift).
    pub fn incidents(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status.is_incident())
    }

    /// Log-template findings, failing ones first: each with its
    /// (untrusted) template text and example line.
    pub fn log_templates(&self) -> Vec<(&Finding, &logs::LogTemplate)> {
        let mut v: Vec<(&Finding, &logs::LogTemplate)> =
            self.findings.iter().filter_map(|f| f.log.as_ref().map(|t| (f, t))).collect();
        v.sort_by_key(|(f, _)| f.status != MetricStatus::Failing);
        v
    }

    /// Distributions that drifted, or schema changes, held for a human.
    pub fn drifted(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status == MetricStatus::Drifted)
    }

    /// Label series still waiting for labels.
    pub fn labels_pending(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status == MetricStatus::LabelsPending)
    }

    /// Metrics without enough data to vouch for.
    pub fn lacking_data(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| matches!(f.status, MetricStatus::NoData | MetricStatus::InsufficientData))
    }
}

/// Number of one-sided tests per look, for the Bonferroni split.
fn tests_per_look(obs: &Observation, cfg: &JudgeConfig, windows: usize) -> usize {
    let sides: usize = obs
        .metrics
        .iter()
        .filter(|m| !cfg.metrics.get(&m.spec.name).is_some_and(|o| o.ignore))
        .map(|m| if m.spec.bad_direction == BadDirection::Both { 2 } else { 1 })
        .sum::<usize>()
        + ml::tests(obs);
    sides.max(1) * windows.max(1)
}

/// One-sided sequential tests against a concurrent baseline: (request-ratio
/// metrics with traffic, every other metric's shift test).
fn sequential_tests(obs: &Observation, cfg: &JudgeConfig) -> (usize, usize) {
    if obs.baseline_kind != crate::signals::BaselineKind::Concurrent || cfg.method != MethodChoice::Auto {
        return (0, 0);
    }
    let (mut ratio, mut shift) = (0, 0);
    for m in obs.metrics.iter().filter(|m| !cfg.metrics.get(&m.spec.name).is_some_and(|o| o.ignore)) {
        let sides = if m.spec.bad_direction == BadDirection::Both { 2 } else { 1 };
        if m.spec.is_request_ratio() && obs.traffic.is_some() {
            ratio += sides;
        } else {
            shift += sides;
        }
    }
    (ratio, shift)
}

/// Window lengths in samples for this step size, deduplicated.
pub(crate) fn window_samples(cfg: &JudgeConfig, step_s: u32) -> Vec<usize> {
    let step = u64::from(step_s.max(1));
    let mut w: Vec<usize> =
        cfg.windows_s.iter().map(|s| (s.div_ceil(step) as usize).max(cfg.min_window_samples)).collect();
    w.sort_unstable();
    w.dedup();
    w
}

/// Judge one observation. Pure: the same observation and config give the same result.
pub fn judge(obs: &Observation, cfg: &JudgeConfig) -> JudgeResult {
    judge_with(obs, cfg, &mut LogMiner::default())
}

/// [`judge`], with the release's log templates mined by `miner` from where
/// it left off (a loop or a replay keeps one per release, so each tick mines
/// only its new lines).
pub fn judge_with(obs: &Observation, cfg: &JudgeConfig, miner: &mut LogMiner) -> JudgeResult {
    let step = u64::from(obs.step_s.max(1));
    let total_steps = (obs.duration_s / step) as usize;
    let warmup_steps = cfg.warmup_s.div_ceil(step) as usize;
    let looks = total_steps.saturating_sub(warmup_steps).max(1);
    let windows = window_samples(cfg, obs.step_s);
    // The error budget `alpha`, against a concurrent baseline: the request
    // ratios' sequential tests take half (their evidence is the slow,
    // information-limited kind, so it is not diluted by the others); the
    // windowed tests and the continuous metrics' shift e-detectors share the
    // rest equally. Each share is split over its own tests; the sequential
    // ones need no split over looks.
    let (ratio_tests, shift_tests) = sequential_tests(obs, cfg);
    let ratio_share = if ratio_tests > 0 { 0.5 } else { 0.0 };
    let shift_share = if shift_tests > 0 { (1.0 - ratio_share) / 2.0 } else { 0.0 };
    let windowed_share = 1.0 - ratio_share - shift_share;
    let alpha_look = cfg.alpha * windowed_share / (tests_per_look(obs, cfg, windows.len()) * looks) as f64;
    let alpha_sequential = cfg.alpha * ratio_share / ratio_tests.max(1) as f64;
    let alpha_shift = cfg.alpha * shift_share / shift_tests.max(1) as f64;
    let crit_normal = stats::t_critical(alpha_look, f64::INFINITY);
    let ctx = context::Context {
        cfg,
        baseline_kind: obs.baseline_kind,
        step_s: obs.step_s,
        warmup_steps,
        windows,
        alpha_look,
        alpha_sequential,
        alpha_shift,
        looks,
        crit_cache: Default::default(),
        crit_normal,
    };
    let mut findings: Vec<Finding> = obs
        .metrics
        .iter()
        .map(|m| analyse_metric(&ctx, m, obs.traffic.as_ref(), obs.completed_steps(), obs.window_complete()))
        .collect();
    if cfg.method == MethodChoice::Auto {
        fail_jumps(&ctx, obs, &mut findings);
    }
    findings.extend(logs::judge_logs(obs, cfg, (warmup_steps, looks), miner));
    findings.extend(ml::judge_ml(obs, cfg, warmup_steps, &ctx.windows, alpha_look));
    let complete = obs.window_complete();
    let (verdict, summary) = verdict_of(&findings, complete, obs);
    let log_mining = Some(miner.stats().clone()).filter(LogMining::incomplete);
    JudgeResult { verdict, now_s: obs.now_s, window_complete: complete, findings, summary, log_mining }
}

/// Metrics that jumped past their earlier window's history at the same step
/// as another metric fail, and against the same window one period earlier
/// a metric that jumped so alone ([`jumps`]); `findings` are the metrics'
/// own, in `obs.metrics` order.
fn fail_jumps(ctx: &context::Context, obs: &Observation, findings: &mut [Finding]) {
    let n = obs.completed_steps();
    let per_metric: Vec<Vec<jumps::Jump>> = obs
        .metrics
        .iter()
        .zip(findings.iter())
        .map(|(m, f)| match f.status {
            MetricStatus::Ignored => Vec::new(),
            _ => jumps::harmful_jumps(ctx, m, m.spec.is_request_ratio() && obs.traffic.is_some(), n),
        })
        .collect();
    let at_s = |jump: &jumps::Jump| jump.step as u64 * u64::from(obs.step_s);
    for (i, found) in jumps::joint(&per_metric).into_iter().enumerate() {
        let f = &mut findings[i];
        if let Some((jump, other)) = found {
            let with = obs.metrics[other].spec.name.clone();
            fail_by_jump(
                f,
                &jump,
                at_s(&jump),
                &format!("together with {with}: metrics leaving their history at once"),
            );
            f.joint_jump =
                Some(jumps::JointJump { at_s: at_s(&jump), size: jump.size, reference: jump.reference, with });
        } else if let Some(jump) = per_metric[i].first().filter(|_| jumps::alone_suffices(ctx.baseline_kind)) {
            fail_by_jump(f, jump, at_s(jump), "a move the same hour one period earlier never made");
            f.lone_jump = Some(jumps::LoneJump { at_s: at_s(jump), size: jump.size, reference: jump.reference });
        }
    }
}

/// Fail `f` by `jump` (at `at_s` seconds), unless something failed it first.
fn fail_by_jump(f: &mut Finding, jump: &jumps::Jump, at_s: u64, why: &str) {
    if f.status == MetricStatus::Failing {
        return;
    }
    f.status = MetricStatus::Failing;
    let against = if jump.reference > 0.0 {
        format!(
            "{:.1}× the largest one-step move of the earlier window ({:.4} {})",
            jump.size.abs() / jump.reference,
            jump.reference,
            f.unit
        )
    } else {
        "where the earlier window never moved".to_string()
    };
    f.explanation =
        format!("{}: FAILING — jumped by {:+.4} {} at {at_s}s, {against}, {why}", f.metric, jump.size, f.unit);
}

/// The verdict and its one-line reason, from the findings: a failure first,
/// then drift, then an incident, then a window still running, then what
/// the window lacked, else a pass.
fn verdict_of(findings: &[Finding], complete: bool, obs: &Observation) -> (Verdict, String) {
    let names = |keep: fn(MetricStatus) -> bool| -> Vec<&str> {
        findings.iter().filter(|f| keep(f.status)).map(|f| f.metric.as_str()).collect()
    };
    let failing = names(|s| s == MetricStatus::Failing);
    let lacking = names(|s| matches!(s, MetricStatus::NoData | MetricStatus::InsufficientData));
    let incidents = names(MetricStatus::is_incident);
    let drifted = names(|s| s == MetricStatus::Drifted);
    let pending = names(|s| s == MetricStatus::LabelsPending);
    if !failing.is_empty() {
        (Verdict::Fail, format!("canary is worse than baseline beyond tolerance on {}", failing.join(", ")))
    } else if !drifted.is_empty() {
        (
            Verdict::Inconclusive,
            format!(
                "drift on {} while labelled quality holds (or is not yet known): an alert for a human, not a rollback",
                drifted.join(", ")
            ),
        )
    } else if !incidents.is_empty() {
        (
            Verdict::Inconclusive,
            format!(
                "both versions are affected on {} (shared guard breach or a baseline that moved on its own): \
                 an incident-like condition, not evidence about the canary",
                incidents.join(", ")
            ),
        )
    } else if !complete {
        (Verdict::Inconclusive, format!("analysis running: {}s of {}s observed", obs.now_s, obs.duration_s))
    } else if findings.iter().all(|f| f.status == MetricStatus::Ignored) {
        (Verdict::Inconclusive, "every metric is ignored; nothing to vouch for".into())
    } else if !lacking.is_empty() {
        (Verdict::Inconclusive, format!("window complete but not enough data on {}", lacking.join(", ")))
    } else if !pending.is_empty() {
        (Verdict::Inconclusive, format!("window complete; waiting for delayed labels on {}", pending.join(", ")))
    } else {
        (Verdict::Pass, "window complete; every metric within tolerance".into())
    }
}

#[cfg(test)]
mod tests;
