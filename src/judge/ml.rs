//! Model-release signals judged like any metric (docs/model-releases.md):
//! distribution drift (PSI, Kolmogorov–Smirnov, Jensen–Shannon) with a
//! chi-square test of homogeneity so a PSI from a few predictions is not
//! evidence, and delayed-label quality with a two-sample test on the labels
//! that have arrived. Both share the judge's error budget (one test per
//! series and look, Bonferroni).
//!
//! Drift alone holds the release for a human (policy may say rollback);
//! labelled quality falling beyond tolerance fails it; too few labels is
//! `LabelsPending`, never missing data.

use crate::field::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::{Finding, JudgeConfig, MetricStatus, stats};
use crate::signals::{
    BadDirection, DistributionSeries, DriftKind, Event, LabelSeries, Observation, Outcomes, Side, Task, Unit,
};

/// What a detected drift (or schema change) does while labelled quality holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftAction {
    /// Hold the release for a human (alert; never a rollback by itself).
    #[default]
    Hold,
    /// Fail the canary: the policy's rollback rules apply.
    Rollback,
    /// Report it and judge on the other signals.
    Ignore,
}

/// What a window that ends before enough labels arrived does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PendingAction {
    /// Hold for a human until the labels are in.
    #[default]
    Hold,
    /// Promote on the other signals and say which label checks were pending (promote-with-watch).
    Promote,
}

/// Which labelled-quality score a binary classifier is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QualityMetric {
    /// (tp + tn) / all.
    #[default]
    Accuracy,
    /// tp / (tp + fp).
    Precision,
    /// tp / (tp + fn).
    Recall,
    /// 2tp / (2tp + fp + fn), tested as that proportion.
    F1,
}

/// The score a label series was judged on, as findings and reports carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    Accuracy,
    Precision,
    Recall,
    F1,
    /// Mean absolute error (regression).
    Mae,
}

impl Score {
    /// As written in explanations.
    pub fn label(self) -> &'static str {
        match self {
            Score::Accuracy => "accuracy",
            Score::Precision => "precision",
            Score::Recall => "recall",
            Score::F1 => "f1",
            Score::Mae => "mae",
        }
    }
}

impl From<QualityMetric> for Score {
    fn from(q: QualityMetric) -> Self {
        match q {
            QualityMetric::Accuracy => Score::Accuracy,
            QualityMetric::Precision => Score::Precision,
            QualityMetric::Recall => Score::Recall,
            QualityMetric::F1 => Score::F1,
        }
    }
}

/// `[judge.ml]`: how model-release signals are judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MlJudgeConfig {
    /// Drift of a prediction or feature distribution while labelled quality holds.
    pub drift: DriftAction,
    /// A `schema_change` event on the canary (a feature added or missing).
    pub schema_change: DriftAction,
    /// The window ended before `min_labels` labels arrived on each side.
    pub labels_pending: PendingAction,
    /// Population stability index from which a distribution counts as drifted
    /// (0.1 is the usual "moderate", 0.2 "significant").
    pub psi_tolerance: f64,
    /// Predictions each side needs before a drift can be claimed.
    pub min_predictions: u64,
    /// Binary classifiers: the score judged.
    pub quality: QualityMetric,
    /// Binary classifiers: an absolute drop of the score (0.02 = 2 points) that counts as harm.
    pub quality_tolerance: f64,
    /// Regression: a rise of MAE, relative to the baseline's, that counts as harm.
    pub mae_tolerance: f64,
    /// Labelled predictions each side needs before quality is judged.
    pub min_labels: u64,
}

impl Default for MlJudgeConfig {
    fn default() -> Self {
        Self {
            drift: DriftAction::Hold,
            schema_change: DriftAction::Hold,
            labels_pending: PendingAction::Hold,
            psi_tolerance: 0.2,
            min_predictions: 500,
            quality: QualityMetric::Accuracy,
            quality_tolerance: 0.02,
            mae_tolerance: 0.1,
            min_labels: 200,
        }
    }
}

impl MlJudgeConfig {
    /// Check bounds; `Err(FieldError::of(field, expected))` relative to `[judge]`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, e: &str| Err(FieldError::of(format!("ml.{f}"), e.to_string()));
        if !(self.psi_tolerance > 0.0 && self.psi_tolerance <= 5.0) {
            return bad("psi_tolerance", "a PSI in (0, 5]");
        }
        if self.min_predictions < 30 {
            return bad("min_predictions", "at least 30 predictions per side (fewer is not evidence of drift)");
        }
        if !(self.quality_tolerance >= 0.0 && self.quality_tolerance < 1.0) {
            return bad("quality_tolerance", "an absolute score drop from 0 to 1");
        }
        if !(self.mae_tolerance >= 0.0 && self.mae_tolerance <= 5.0) {
            return bad("mae_tolerance", "a relative rise from 0 to 5");
        }
        if self.min_labels < 30 {
            return bad("min_labels", "at least 30 labels per side");
        }
        Ok(())
    }
}

/// The numbers behind a model-release finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum MlEvidence {
    /// Two histograms compared over the window so far.
    Drift {
        kind: DriftKind,
        /// Population stability index (symmetric KL with ½-count smoothing).
        psi: f64,
        /// Kolmogorov–Smirnov distance between the binned CDFs.
        ks: f64,
        /// Its p-value (conservative for binned data).
        ks_p: f64,
        /// Jensen–Shannon distance, base 2: 0 same, 1 disjoint.
        js: f64,
        /// p-value of the chi-square test of homogeneity the decision uses.
        chi2_p: f64,
        /// Predictions counted per side.
        baseline_n: u64,
        canary_n: u64,
    },
    /// Labelled outcomes per side, as they have arrived.
    Quality {
        task: Task,
        judged: Score,
        baseline: QualityScores,
        canary: QualityScores,
        /// Labels arrived per side.
        baseline_labelled: u64,
        canary_labelled: u64,
        /// Declared seconds from prediction to label.
        delay_s: u64,
    },
    /// `schema_change` events the canary reported (their text is untrusted; see the events list).
    SchemaChange {
        /// Release time of the first, seconds.
        first_at_s: u64,
        count: usize,
    },
}

/// Scores of one side; the ones the task has.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct QualityScores {
    pub accuracy: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// Mean absolute error, in the target's unit.
    pub mae: Option<f64>,
}

/// Model-release tests per look, for the judge's Bonferroni split.
pub(crate) fn tests(obs: &Observation) -> usize {
    obs.ml.distributions.len() + obs.ml.labels.len()
}

/// Findings for every distribution, label series and schema change.
///
/// `alpha_look` is one test's share of the budget at this look: a drift test
/// is cumulative (one window), a quality test runs on each of `windows`
/// (steps) of recently arrived labels, so a canary that turned bad late is
/// not diluted by its good start.
pub(crate) fn judge_ml(
    obs: &Observation,
    cfg: &JudgeConfig,
    warmup_steps: usize,
    windows: &[usize],
    alpha_look: f64,
) -> Vec<Finding> {
    let alpha_drift = alpha_look * windows.len().max(1) as f64;
    let crit = stats::t_critical(alpha_look, f64::INFINITY);
    let mut out: Vec<Finding> =
        obs.ml.distributions.iter().map(|d| drift_finding(d, &cfg.ml, warmup_steps, alpha_drift)).collect();
    out.extend(obs.ml.labels.iter().map(|l| quality_finding(l, &cfg.ml, windows, u64::from(obs.step_s.max(1)), crit)));
    out.extend(schema_finding(&obs.events, &cfg.ml));
    out
}

fn sum_counts(v: &[Option<Vec<f64>>], from: usize, buckets: usize) -> (Vec<f64>, usize) {
    let mut total = vec![0.0; buckets];
    let mut present = 0;
    for h in v.iter().skip(from).flatten() {
        present += 1;
        for (t, c) in total.iter_mut().zip(h) {
            *t += c;
        }
    }
    (total, present)
}

/// Distances between two histograms of the same buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distances {
    pub psi: f64,
    pub ks: f64,
    pub ks_p: f64,
    pub js: f64,
    pub chi2_p: f64,
}

/// PSI, KS and JS of two histograms (counts), with the p-values of the KS
/// and chi-square homogeneity tests at these sample sizes.
pub fn distances(b: &[f64], c: &[f64]) -> Distances {
    let (nb, nc) = (b.iter().sum::<f64>(), c.iter().sum::<f64>());
    let k = b.len() as f64;
    let smooth = |x: f64, n: f64| (x + 0.5) / (n + 0.5 * k);
    let (mut psi, mut js, mut ks, mut cb, mut cc) = (0.0, 0.0, 0.0f64, 0.0, 0.0);
    for (&x, &y) in b.iter().zip(c) {
        let (p, q) = (smooth(x, nb), smooth(y, nc));
        psi += (q - p) * (q / p).ln();
        let m = 0.5 * (p + q);
        js += 0.5 * p * (p / m).log2() + 0.5 * q * (q / m).log2();
        cb += x / nb.max(1.0);
        cc += y / nc.max(1.0);
        ks = ks.max((cb - cc).abs());
    }
    let ne = nb * nc / (nb + nc).max(1.0);
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt().max(1e-9)) * ks;
    Distances { psi, ks, ks_p: kolmogorov_q(lambda), js: js.max(0.0).sqrt(), chi2_p: chi2_homogeneity(b, c) }
}

/// Kolmogorov's survival function Q(λ) = 2 Σ (−1)^(j−1) e^(−2j²λ²).
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let s: f64 = (1..=100)
        .map(|j| {
            let j = j as f64;
            let sign = if j as u64 % 2 == 1 { 1.0 } else { -1.0 };
            sign * (-2.0 * j * j * lambda * lambda).exp()
        })
        .sum();
    (2.0 * s).clamp(0.0, 1.0)
}

/// p-value of Pearson's chi-square test that two histograms come from one distribution.
fn chi2_homogeneity(b: &[f64], c: &[f64]) -> f64 {
    let (nb, nc) = (b.iter().sum::<f64>(), c.iter().sum::<f64>());
    let n = nb + nc;
    if nb <= 0.0 || nc <= 0.0 {
        return 1.0;
    }
    let mut stat = 0.0;
    let mut used = 0usize;
    for (&x, &y) in b.iter().zip(c) {
        let col = x + y;
        if col <= 0.0 {
            continue;
        }
        used += 1;
        let (eb, ec) = (col * nb / n, col * nc / n);
        stat += (x - eb).powi(2) / eb + (y - ec).powi(2) / ec;
    }
    if used < 2 {
        return 1.0;
    }
    ChiSquared::new((used - 1) as f64).map_or(1.0, |d| d.sf(stat))
}

/// What policy makes of a drift, or of none: the finding's status and its
/// words. Every cell written (no wildcard: a new action must answer here).
fn drift_outcome(drifted: bool, action: DriftAction) -> (MetricStatus, &'static str) {
    match (drifted, action) {
        (true, DriftAction::Hold) => {
            (MetricStatus::Drifted, "drifted; policy holds drift for a human unless labelled quality falls")
        }
        (true, DriftAction::Rollback) => (MetricStatus::Failing, "drifted; policy rolls back on drift"),
        (true, DriftAction::Ignore) => (MetricStatus::Ok, "drifted; policy ignores drift"),
        (false, DriftAction::Hold | DriftAction::Rollback | DriftAction::Ignore) => {
            (MetricStatus::Ok, "within tolerance")
        }
    }
}

fn drift_finding(d: &DistributionSeries, cfg: &MlJudgeConfig, warmup: usize, alpha: f64) -> Finding {
    // The finding's numbers are PSIs (effect and tolerance): a histogram has no one level to show.
    let spec = crate::signals::MetricSpec {
        name: d.spec.name.clone(),
        unit: Unit::Other("psi".into()),
        bad_direction: BadDirection::Both,
    };
    let mut f = Finding::empty(&spec);
    let buckets = d.spec.le.len() + 1;
    let (b, _) = sum_counts(&d.baseline, warmup, buckets);
    let (c, present) = sum_counts(&d.canary, warmup, buckets);
    let (nb, nc) = (b.iter().sum::<f64>(), c.iter().sum::<f64>());
    let expected = d.canary.len().saturating_sub(warmup);
    f.coverage = if expected == 0 { 0.0 } else { present as f64 / expected as f64 };
    f.samples = nc as usize;
    let what = match d.spec.kind {
        DriftKind::Prediction => "prediction distribution",
        DriftKind::Feature => "feature distribution",
    };
    let min = cfg.min_predictions as f64;
    if nb < min || nc < min {
        f.status = if nc == 0.0 { MetricStatus::NoData } else { MetricStatus::InsufficientData };
        f.explanation = format!(
            "{what}: {nc:.0} canary and {nb:.0} baseline predictions so far; drift needs {min:.0} per side to be evidence"
        );
        return f;
    }
    let x = distances(&b, &c);
    let drifted = x.chi2_p < alpha && x.psi >= cfg.psi_tolerance;
    f.effect = Some(x.psi);
    f.tolerance = Some(cfg.psi_tolerance);
    f.confidence = Some(1.0 - x.chi2_p);
    let (status, verdict) = drift_outcome(drifted, cfg.drift);
    f.status = status;
    f.explanation = format!(
        "{what} {verdict}: PSI {:.3} (tolerance {:.2}), KS {:.3} (p {:.2e}), JS distance {:.3}; chi-square p {:.2e} \
         against α {alpha:.1e}, from {nc:.0} canary and {nb:.0} baseline predictions",
        x.psi, cfg.psi_tolerance, x.ks, x.ks_p, x.js, x.chi2_p
    );
    f.ml = Some(MlEvidence::Drift {
        kind: d.spec.kind,
        psi: x.psi,
        ks: x.ks,
        ks_p: x.ks_p,
        js: x.js,
        chi2_p: x.chi2_p,
        baseline_n: nb as u64,
        canary_n: nc as u64,
    });
    f
}

/// A score as successes out of trials, for the two-proportion test.
fn proportion(o: &Outcomes, metric: QualityMetric) -> Option<(f64, f64)> {
    let Outcomes::Binary { tp, fp, tn, fn_ } = *o else { return None };
    let (tp, fp, tn, fn_) = (tp as f64, fp as f64, tn as f64, fn_ as f64);
    let (k, n) = match metric {
        QualityMetric::Accuracy => (tp + tn, tp + fp + tn + fn_),
        QualityMetric::Precision => (tp, tp + fp),
        QualityMetric::Recall => (tp, tp + fn_),
        QualityMetric::F1 => (2.0 * tp, 2.0 * tp + fp + fn_),
    };
    (n > 0.0).then_some((k, n))
}

/// Every score a tally has.
pub fn scores(o: &Outcomes) -> QualityScores {
    let rate = |m| proportion(o, m).map(|(k, n)| k / n);
    match *o {
        Outcomes::Binary { .. } => QualityScores {
            accuracy: rate(QualityMetric::Accuracy),
            precision: rate(QualityMetric::Precision),
            recall: rate(QualityMetric::Recall),
            f1: rate(QualityMetric::F1),
            mae: None,
        },
        Outcomes::Regression { n, abs_error_sum, .. } => {
            QualityScores { mae: (n > 0).then(|| abs_error_sum / n as f64), ..QualityScores::default() }
        }
    }
}

fn tally(v: &[Option<Outcomes>], task: Task) -> Outcomes {
    v.iter().flatten().fold(Outcomes::zero(task), |a, o| a.plus(*o))
}

/// One side-by-side test of the judged score.
#[derive(Debug, Clone, Copy)]
struct QualityTest {
    baseline: f64,
    canary: f64,
    /// Positive = the canary is worse, in the score's unit.
    harm: f64,
    se: f64,
    tolerance: f64,
    /// Steps of arrivals the test covered.
    window_steps: usize,
}

impl QualityTest {
    /// Standard errors by which the harm exceeds its tolerance.
    fn strength(&self) -> f64 {
        (self.harm - self.tolerance) / self.se
    }
}

/// The judged score of two tallies, with its standard error and tolerance.
fn quality_test(b: &Outcomes, c: &Outcomes, cfg: &MlJudgeConfig, window_steps: usize) -> Option<QualityTest> {
    let test = |baseline: f64, canary: f64, harm: f64, se: f64, tolerance: f64| QualityTest {
        baseline,
        canary,
        harm,
        se: se.max(1e-9),
        tolerance,
        window_steps,
    };
    match (b, c) {
        (Outcomes::Binary { .. }, Outcomes::Binary { .. }) => {
            let ((kb, nb), (kc, nc)) = (proportion(b, cfg.quality)?, proportion(c, cfg.quality)?);
            let (pb, pc) = (kb / nb, kc / nc);
            let pooled = (kb + kc) / (nb + nc);
            let se = (pooled * (1.0 - pooled) * (1.0 / nb + 1.0 / nc)).sqrt();
            Some(test(pb, pc, pb - pc, se, cfg.quality_tolerance))
        }
        (
            Outcomes::Regression { n: nb, abs_error_sum: sb, abs_error_sq_sum: qb },
            Outcomes::Regression { n: nc, abs_error_sum: sc, abs_error_sq_sum: qc },
        ) if *nb > 1 && *nc > 1 => {
            let (nb, nc) = (*nb as f64, *nc as f64);
            let (mb, mc) = (sb / nb, sc / nc);
            let var = |q: f64, m: f64, n: f64| ((q / n - m * m) * n / (n - 1.0)).max(0.0);
            let se = (var(*qb, mb, nb) / nb + var(*qc, mc, nc) / nc).sqrt();
            Some(test(mb, mc, mc - mb, se, cfg.mae_tolerance * mb))
        }
        _ => None,
    }
}

/// The test of the window (of `windows`, steps of arrivals, and the whole
/// series) strongest against its tolerance, among those with enough labels on both sides.
fn strongest_window(l: &LabelSeries, cfg: &MlJudgeConfig, windows: &[usize]) -> Option<QualityTest> {
    let n = l.canary.len();
    let task = l.spec.task;
    let mut best: Option<QualityTest> = None;
    for &w in windows.iter().chain(std::iter::once(&n)) {
        let from = n.saturating_sub(w);
        let (b, c) = (tally(&l.baseline[from.min(l.baseline.len())..], task), tally(&l.canary[from..], task));
        if b.labelled() < cfg.min_labels || c.labelled() < cfg.min_labels {
            continue;
        }
        let Some(t) = quality_test(&b, &c, cfg, n - from) else { continue };
        if best.is_none_or(|x| t.strength() > x.strength()) {
            best = Some(t);
        }
    }
    best
}

fn quality_finding(l: &LabelSeries, cfg: &MlJudgeConfig, windows: &[usize], step_s: u64, crit: f64) -> Finding {
    let task = l.spec.task;
    let judged = match task {
        Task::Binary => Score::from(cfg.quality),
        Task::Regression => Score::Mae,
    };
    let spec = crate::signals::MetricSpec {
        name: l.spec.name.clone(),
        unit: if task == Task::Binary { Unit::Ratio } else { Unit::default() },
        bad_direction: if task == Task::Binary { BadDirection::Down } else { BadDirection::Up },
    };
    let mut f = Finding::empty(&spec);
    let (b, c) = (tally(&l.baseline, task), tally(&l.canary, task));
    let (nb, nc) = (b.labelled(), c.labelled());
    f.samples = nc as usize;
    f.coverage = 1.0;
    f.ml = Some(MlEvidence::Quality {
        task,
        judged,
        baseline: scores(&b),
        canary: scores(&c),
        baseline_labelled: nb,
        canary_labelled: nc,
        delay_s: l.spec.delay_s,
    });
    let judged = judged.label();
    let Some(t) = strongest_window(l, cfg, windows) else {
        f.status = MetricStatus::LabelsPending;
        f.explanation = format!(
            "labelled {judged}: pending — {nc} canary and {nb} baseline labels have arrived, {} per side needed; \
             labels arrive about {}s after a prediction",
            cfg.min_labels, l.spec.delay_s
        );
        return f;
    };
    let z = t.harm / t.se;
    let window_s = t.window_steps as u64 * step_s;
    (f.baseline, f.canary, f.effect, f.z, f.critical, f.tolerance) =
        (Some(t.baseline), Some(t.canary), Some(t.harm), Some(z), Some(crit), Some(t.tolerance));
    f.confidence = Some(1.0 - stats::t_upper_p(z, 1e9));
    f.window_s = Some(window_s);
    let failing = z > crit && t.harm > t.tolerance;
    f.status = if failing { MetricStatus::Failing } else { MetricStatus::Ok };
    let show = |v: f64| if task == Task::Binary { format!("{:.2}%", v * 100.0) } else { format!("{v:.4}") };
    f.explanation = format!(
        "labelled {judged} {}: canary {} vs baseline {} over labels that arrived in the last {}s ({nc} and {nb} \
         labels in all; harm {}, tolerance {}, z {z:.1} against {crit:.1}); labels arrive about {}s after a prediction",
        if failing { "fell beyond tolerance" } else { "within tolerance" },
        show(t.canary),
        show(t.baseline),
        window_s,
        show(t.harm),
        show(t.tolerance),
        l.spec.delay_s
    );
    f
}

fn schema_finding(events: &[Event], cfg: &MlJudgeConfig) -> Option<Finding> {
    let changes: Vec<&Event> = events
        .iter()
        .filter(|e| e.target == Side::Canary && e.kind == crate::signals::EventKind::SchemaChange)
        .collect();
    let first = changes.first()?;
    let spec = crate::signals::MetricSpec {
        name: "input_schema".into(),
        unit: Unit::default(),
        bad_direction: BadDirection::Both,
    };
    let mut f = Finding::empty(&spec);
    f.samples = changes.len();
    f.coverage = 1.0;
    f.status = match cfg.schema_change {
        DriftAction::Hold => MetricStatus::Drifted,
        DriftAction::Rollback => MetricStatus::Failing,
        DriftAction::Ignore => MetricStatus::Ok,
    };
    f.explanation = format!(
        "the canary reported {} input schema change(s) from t={}s (a feature added or missing; the event text is \
         in the events list); policy: {:?}",
        changes.len(),
        first.t_s,
        cfg.schema_change
    )
    .to_lowercase();
    f.ml = Some(MlEvidence::SchemaChange { first_at_s: first.t_s, count: changes.len() });
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hostile_counts() -> impl Strategy<Value = Option<Vec<f64>>> {
        let c = prop_oneof![Just(0.0), 0.0..1e6f64, Just(1e300), Just(f64::MAX)];
        prop::option::of(prop::collection::vec(c, 3))
    }

    fn hostile_outcomes() -> impl Strategy<Value = Option<Outcomes>> {
        let n = || prop_oneof![Just(0u64), 0..10_000u64, Just(u64::MAX)];
        let binary = (n(), n(), n(), n()).prop_map(|(tp, fp, tn, fn_)| Outcomes::Binary { tp, fp, tn, fn_ });
        prop::option::of(binary)
    }

    proptest! {
        /// Whatever a file or a Prometheus holds (huge counts, empty steps,
        /// u64::MAX outcomes), judging it gives one finding per series and no panic.
        #[test]
        fn hostile_model_series_judge_without_panicking(
            b in prop::collection::vec(hostile_counts(), 12),
            c in prop::collection::vec(hostile_counts(), 12),
            lb in prop::collection::vec(hostile_outcomes(), 12),
            lc in prop::collection::vec(hostile_outcomes(), 12),
        ) {
            use crate::signals::{DistributionSpec, LabelSpec, ModelSignals};
            let ml = ModelSignals {
                distributions: vec![DistributionSeries {
                    spec: DistributionSpec { name: "d".into(), kind: DriftKind::Prediction, le: vec![0.5, 1.0] },
                    baseline: b,
                    canary: c,
                }],
                labels: vec![LabelSeries {
                    spec: LabelSpec { name: "l".into(), task: Task::Binary, delay_s: 30 },
                    baseline: lb,
                    canary: lc,
                }],
            };
            let obs = Observation {
                service: "s".into(), step_s: 10, duration_s: 120, now_s: 120, traffic: None,
                baseline_kind: Default::default(), metrics: vec![], logs: vec![], events: vec![], ml,
            };
            let j = crate::judge::judge(&obs, &JudgeConfig::default());
            prop_assert_eq!(j.findings.len(), 2);
        }
    }

    #[test]
    fn identical_histograms_have_no_distance_and_no_evidence() {
        let h = [100.0, 300.0, 400.0, 200.0];
        let x = distances(&h, &h);
        assert!(x.psi.abs() < 1e-12 && x.ks.abs() < 1e-12 && x.js.abs() < 1e-6, "{x:?}");
        assert!(x.chi2_p > 0.99 && x.ks_p > 0.99, "{x:?}");
    }

    #[test]
    fn the_same_shift_is_evidence_from_many_predictions_and_not_from_forty() {
        // Mass moves from the low buckets to the high ones: a PSI of about 0.5.
        let (b, c) = ([0.4, 0.3, 0.2, 0.1], [0.15, 0.25, 0.3, 0.3]);
        let scaled = |h: [f64; 4], n: f64| h.map(|p| p * n);
        let few = distances(&scaled(b, 40.0), &scaled(c, 40.0));
        let many = distances(&scaled(b, 4000.0), &scaled(c, 4000.0));
        assert!(few.psi > 0.3 && many.psi > 0.3, "{few:?} {many:?}");
        assert!(few.chi2_p > 1e-4, "forty predictions are not evidence at a judge's alpha: {few:?}");
        assert!(many.chi2_p < 1e-20 && many.ks_p < 1e-20, "{many:?}");
        assert!((0.0..=1.0).contains(&many.js) && many.js > 0.15, "{many:?}");
    }

    #[test]
    fn psi_matches_its_definition_on_a_known_pair() {
        // Large counts make the ½-count smoothing negligible.
        let (b, c) = ([5e6, 5e6], [2.5e6, 7.5e6]);
        let want = (0.25 - 0.5) * (0.25f64 / 0.5).ln() + (0.75 - 0.5) * (0.75f64 / 0.5).ln();
        assert!((distances(&b, &c).psi - want).abs() < 1e-6);
        assert!((distances(&b, &c).ks - 0.25).abs() < 1e-9);
    }

    #[test]
    fn kolmogorov_q_is_a_survival_function() {
        assert!((kolmogorov_q(1.36) - 0.05).abs() < 0.002, "{}", kolmogorov_q(1.36));
        assert!(kolmogorov_q(0.5) > kolmogorov_q(1.0) && kolmogorov_q(3.0) < 1e-6);
    }

    #[test]
    fn scores_follow_the_confusion_counts() {
        let s = scores(&Outcomes::Binary { tp: 40, fp: 10, tn: 30, fn_: 20 });
        assert_eq!(s.accuracy, Some(0.7));
        assert_eq!(s.precision, Some(0.8));
        assert_eq!(s.recall, Some(40.0 / 60.0));
        assert_eq!(s.f1, Some(80.0 / 110.0));
        let r = scores(&Outcomes::Regression { n: 4, abs_error_sum: 2.0, abs_error_sq_sum: 1.5 });
        assert_eq!(r.mae, Some(0.5));
    }
}
