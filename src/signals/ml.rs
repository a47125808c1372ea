//! Model-release signals: distributions (prediction and feature histograms)
//! and delayed labelled outcomes, per side and per step like every metric.
//!
//! A distribution's sample `i` is the histogram of what was seen during step
//! `i`: counts per bucket, the buckets given once by their upper bounds (a
//! Prometheus histogram's `le`), the last bucket open to +∞. A label series'
//! sample `i` is the labelled outcomes that *arrived* during step `i` — what
//! a feedback counter gives — for predictions made about `delay_s` earlier;
//! the delay is declared so the judge can say "pending" rather than "missing".

use crate::field::FieldError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a distribution describes: which policy applies to its drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The model's output (a score, a class, a regression value).
    Prediction,
    /// One input feature as the serving version sees it.
    Feature,
}

/// A histogram-valued series: what it is and its buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DistributionSpec {
    /// Name, unique within a release (`prediction_score`, `feature.amount`).
    pub name: String,
    pub kind: DriftKind,
    /// Upper bounds of the buckets, increasing (Prometheus `le`); a sample
    /// has one more count than bounds, for the bucket above the last bound.
    /// Omitted in a scenario file: each sample is raw values, binned at load
    /// ([`DistributionSeries::binned`]).
    #[serde(default)]
    pub le: Vec<f64>,
}

/// Per-bucket counts of one step (not cumulative); `len == le.len() + 1`.
pub type Counts = Vec<f64>;

/// One distribution for both sides, aligned on the release clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionSeries {
    #[serde(flatten)]
    pub spec: DistributionSpec,
    /// Baseline histogram per step; `None` is a missing sample.
    pub baseline: Vec<Option<Counts>>,
    /// Canary histogram per step; `None` is a missing sample.
    pub canary: Vec<Option<Counts>>,
}

impl DistributionSeries {
    /// A series of raw values per step (`le` empty) as histograms: the
    /// bounds are the baseline's pooled deciles (fewer where values repeat),
    /// so each baseline bucket holds about a tenth — the usual PSI binning.
    /// A series with bounds is returned as it is. `Err(FieldError::of(field, expected))`.
    pub fn binned(self, at: &str) -> Result<DistributionSeries, FieldError> {
        if !self.spec.le.is_empty() {
            return Ok(self);
        }
        for (side, series) in [("baseline", &self.baseline), ("canary", &self.canary)] {
            for (j, v) in series.iter().enumerate() {
                if v.as_ref().is_some_and(|v| v.iter().any(|x| !x.is_finite())) {
                    return Err(FieldError::of(
                        format!("{at}.{side}[{j}]"),
                        "finite raw values (no `le`), or null".into(),
                    ));
                }
            }
        }
        let mut pooled: Vec<f64> = self.baseline.iter().flatten().flatten().copied().collect();
        if pooled.is_empty() {
            return Err(FieldError::of(
                format!("{at}.le"),
                "bucket bounds, or raw values on the baseline to take the bounds from".into(),
            ));
        }
        pooled.sort_by(f64::total_cmp);
        let mut le: Vec<f64> = (1..10).map(|k| pooled[(k * pooled.len() / 10).min(pooled.len() - 1)]).collect();
        le.dedup();
        let bin = |v: &Option<Vec<f64>>| {
            v.as_ref().map(|v| {
                let mut c = vec![0.0; le.len() + 1];
                for x in v {
                    c[le.partition_point(|b| b < x)] += 1.0;
                }
                c
            })
        };
        let (baseline, canary) = (self.baseline.iter().map(bin).collect(), self.canary.iter().map(bin).collect());
        Ok(DistributionSeries { spec: DistributionSpec { le, ..self.spec }, baseline, canary })
    }
}

/// What the model predicts, which decides how labelled outcomes are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Binary classification: confusion counts (accuracy, precision, recall, F1).
    Binary,
    /// Regression: absolute errors (MAE).
    Regression,
}

/// A label series: what it scores and how long labels take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LabelSpec {
    /// Name, unique within a release (`fraud_label`).
    pub name: String,
    pub task: Task,
    /// Seconds from a prediction to its label arriving, typically. Before
    /// `delay_s` has passed nothing can be labelled: that is pending, not missing.
    pub delay_s: u64,
}

/// Labelled outcomes that arrived in one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Outcomes {
    /// Confusion counts of a binary classifier.
    Binary {
        tp: u64,
        fp: u64,
        tn: u64,
        #[serde(rename = "fn")]
        fn_: u64,
    },
    /// Absolute errors of a regression: count, sum and sum of squares (for the error bars).
    Regression { n: u64, abs_error_sum: f64, abs_error_sq_sum: f64 },
}

impl Outcomes {
    /// The empty tally of `task`.
    pub fn zero(task: Task) -> Outcomes {
        match task {
            Task::Binary => Outcomes::Binary { tp: 0, fp: 0, tn: 0, fn_: 0 },
            Task::Regression => Outcomes::Regression { n: 0, abs_error_sum: 0.0, abs_error_sq_sum: 0.0 },
        }
    }

    /// Whether this tally belongs to `task`.
    pub fn is(&self, task: Task) -> bool {
        matches!(
            (self, task),
            (Outcomes::Binary { .. }, Task::Binary) | (Outcomes::Regression { .. }, Task::Regression)
        )
    }

    /// Labelled predictions counted.
    pub fn labelled(&self) -> u64 {
        match *self {
            Outcomes::Binary { tp, fp, tn, fn_ } => tp.saturating_add(fp).saturating_add(tn).saturating_add(fn_),
            Outcomes::Regression { n, .. } => n,
        }
    }

    /// The sum of two tallies of the same task (`self` wins on a mismatch, which validation rules out).
    pub fn plus(self, other: Outcomes) -> Outcomes {
        match (self, other) {
            (Outcomes::Binary { tp, fp, tn, fn_ }, Outcomes::Binary { tp: a, fp: b, tn: c, fn_: d }) => {
                Outcomes::Binary {
                    tp: tp.saturating_add(a),
                    fp: fp.saturating_add(b),
                    tn: tn.saturating_add(c),
                    fn_: fn_.saturating_add(d),
                }
            }
            (
                Outcomes::Regression { n, abs_error_sum, abs_error_sq_sum },
                Outcomes::Regression { n: m, abs_error_sum: s, abs_error_sq_sum: q },
            ) => Outcomes::Regression {
                n: n.saturating_add(m),
                abs_error_sum: abs_error_sum + s,
                abs_error_sq_sum: abs_error_sq_sum + q,
            },
            (a, _) => a,
        }
    }

    /// Why this tally is not a valid one of `task`, if it is not.
    pub fn invalid(&self, task: Task) -> Option<String> {
        if !self.is(task) {
            return Some(match task {
                Task::Binary => "an object {\"tp\", \"fp\", \"tn\", \"fn\"} of counts (task is binary)".into(),
                Task::Regression => {
                    "an object {\"n\", \"abs_error_sum\", \"abs_error_sq_sum\"} (task is regression)".into()
                }
            });
        }
        match *self {
            Outcomes::Regression { n, abs_error_sum: s, abs_error_sq_sum: q } => {
                let ok = s.is_finite() && q.is_finite() && s >= 0.0 && q >= 0.0 && (n > 0 || (s == 0.0 && q == 0.0));
                (!ok).then(|| "finite sums ≥ 0, and 0 when n is 0".into())
            }
            Outcomes::Binary { .. } => None,
        }
    }
}

/// One label series for both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSeries {
    #[serde(flatten)]
    pub spec: LabelSpec,
    /// Outcomes that arrived for baseline predictions, per step; `None` is a missing sample.
    pub baseline: Vec<Option<Outcomes>>,
    /// Outcomes that arrived for canary predictions, per step.
    pub canary: Vec<Option<Outcomes>>,
}

/// The model-release signals of one observation (empty for a plain service).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSignals {
    /// Prediction and feature histograms.
    #[serde(default)]
    pub distributions: Vec<DistributionSeries>,
    /// Delayed labelled outcomes.
    #[serde(default)]
    pub labels: Vec<LabelSeries>,
}

impl ModelSignals {
    /// Nothing model-specific.
    pub fn is_empty(&self) -> bool {
        self.distributions.is_empty() && self.labels.is_empty()
    }

    /// The first `n` steps of every series (what had ended by then); an
    /// earlier-window baseline (`whole_baseline`) lies in the past and is kept whole.
    pub fn first_steps(&self, n: usize, whole_baseline: bool) -> ModelSignals {
        /// The first `n` samples, or all of them for `None`.
        fn head<T: Clone>(v: &[Option<T>], n: Option<usize>) -> Vec<Option<T>> {
            v[..n.map_or(v.len(), |n| n.min(v.len()))].to_vec()
        }
        let (b, c) = ((!whole_baseline).then_some(n), Some(n));
        ModelSignals {
            distributions: self
                .distributions
                .iter()
                .map(|d| DistributionSeries {
                    spec: d.spec.clone(),
                    baseline: head(&d.baseline, b),
                    canary: head(&d.canary, c),
                })
                .collect(),
            labels: self
                .labels
                .iter()
                .map(|l| LabelSeries {
                    spec: l.spec.clone(),
                    baseline: head(&l.baseline, b),
                    canary: head(&l.canary, c),
                })
                .collect(),
        }
    }

    /// Check shapes against a window of `steps` samples, the names against
    /// those `taken` by other series; `Err(FieldError::of(field, expected))` with the field
    /// relative to the document (`distributions[0].canary[3]`).
    pub fn validate<'a>(
        distributions: &'a [DistributionSeries],
        labels: &'a [LabelSeries],
        steps: usize,
        taken: &mut std::collections::HashSet<&'a str>,
    ) -> Result<(), FieldError> {
        let len = |field: String, got: usize| {
            if got == steps {
                Ok(())
            } else {
                Err(FieldError::of(field, format!("{steps} samples (duration_s / step_s), found {got}")))
            }
        };
        for (i, d) in distributions.iter().enumerate() {
            let at = format!("distributions[{i}]");
            if d.spec.name.trim().is_empty() || !taken.insert(d.spec.name.as_str()) {
                return Err(FieldError::of(format!("{at}.name"), "a non-empty name unique in the file".into()));
            }
            if d.spec.le.is_empty()
                || d.spec.le.iter().any(|b| !b.is_finite())
                || d.spec.le.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(FieldError::of(
                    format!("{at}.le"),
                    "at least one finite bucket bound, strictly increasing".into(),
                ));
            }
            for (side, series) in [("baseline", &d.baseline), ("canary", &d.canary)] {
                len(format!("{at}.{side}"), series.len())?;
                for (j, h) in series.iter().enumerate() {
                    let Some(h) = h else { continue };
                    if h.len() != d.spec.le.len() + 1 || h.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
                        return Err(FieldError::of(
                            format!("{at}.{side}[{j}]"),
                            format!("{} counts ≥ 0 (one per bucket of `le`, then +Inf), or null", d.spec.le.len() + 1),
                        ));
                    }
                }
            }
        }
        for (i, l) in labels.iter().enumerate() {
            let at = format!("labels[{i}]");
            if l.spec.name.trim().is_empty() || !taken.insert(l.spec.name.as_str()) {
                return Err(FieldError::of(format!("{at}.name"), "a non-empty name unique in the file".into()));
            }
            for (side, series) in [("baseline", &l.baseline), ("canary", &l.canary)] {
                len(format!("{at}.{side}"), series.len())?;
                for (j, o) in series.iter().enumerate() {
                    if let Some(why) = o.as_ref().and_then(|o| o.invalid(l.spec.task)) {
                        return Err(FieldError::of(format!("{at}.{side}[{j}]"), format!("{why}, or null")));
                    }
                }
            }
        }
        Ok(())
    }
}
