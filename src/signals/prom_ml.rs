//! Model-release signals from Prometheus: a histogram as its `_bucket`
//! series (one per `le`, cumulative, as every Prometheus client exports
//! one), and labelled feedback as a counter with an `outcome` label (`tp`,
//! `fp`, `tn`, `fn`) that grows as labels arrive. Each query is a template
//! like a metric's, run for each side; `increase(…[{{ step }}])` gives one
//! step's counts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Counts, DriftKind, Outcomes};
use crate::field::FieldError;

/// A histogram-valued series read from a Prometheus histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromDistribution {
    /// Name in findings.
    pub name: String,
    pub kind: DriftKind,
    /// The histogram's finite bucket bounds (its `le` values without `+Inf`), increasing.
    pub le: Vec<f64>,
    /// PromQL template answering one series per `le`, e.g.
    /// `sum by (le) (increase(model_score_bucket{version="{{ side }}"}[{{ step }}]))`.
    pub query: String,
}

impl PromDistribution {
    /// `Err(FieldError::of(field, expected))` relative to this table.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.le.is_empty() || self.le.iter().any(|b| !b.is_finite()) || self.le.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FieldError::of(
                "le".into(),
                "the histogram's finite bucket bounds, strictly increasing".into(),
            ));
        }
        if !self.query.contains("le") {
            return Err(FieldError::of(
                "query".into(),
                "a query answering one series per `le` (e.g. `sum by (le) (…)`)".into(),
            ));
        }
        Ok(())
    }
}

/// Delayed labelled outcomes of a binary classifier, read from a feedback counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromLabels {
    /// Name in findings.
    pub name: String,
    /// Seconds from a prediction to its label, typically (what "pending" means).
    pub delay_s: u64,
    /// PromQL template answering one series per `outcome` (`tp`, `fp`, `tn`, `fn`), e.g.
    /// `sum by (outcome) (increase(model_feedback_total{version="{{ side }}"}[{{ step }}]))`.
    pub query: String,
}

/// Step-by-step sums of each value of `label` across a query's points
/// (`(series labels, step, value)`), over `n` steps.
pub(super) fn by_label<'a>(
    points: impl IntoIterator<Item = (&'a serde_json::Value, usize, f64)>,
    n: usize,
    label: &str,
) -> Vec<BTreeMap<String, f64>> {
    let mut out = vec![BTreeMap::new(); n];
    for (metric, i, v) in points {
        if let Some(step) = out.get_mut(i) {
            *step.entry(metric[label].as_str().unwrap_or("").to_string()).or_insert(0.0) += v;
        }
    }
    out
}

/// `le` as Prometheus writes it (`0.1`, `1e+06`, `+Inf`).
fn bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        t => t.parse().ok().filter(|v: &f64| v.is_finite()),
    }
}

/// Per-bucket counts of one step from its cumulative `le` series; a step
/// without every bound (and `+Inf`) is missing. Counter resets can make
/// `increase` dip: a negative bucket counts as 0.
pub(super) fn histogram(le: &[f64], cumulative: &BTreeMap<String, f64>) -> Option<Counts> {
    let at: Vec<(f64, f64)> = cumulative.iter().filter_map(|(k, v)| Some((bound(k)?, *v))).collect();
    let find = |b: f64| at.iter().find(|(x, _)| (x - b).abs() <= 1e-9 * b.abs().max(1.0)).map(|(_, v)| *v);
    let mut cum: Vec<f64> = le.iter().map(|b| find(*b)).collect::<Option<_>>()?;
    cum.push(at.iter().find(|(x, _)| x.is_infinite()).map(|(_, v)| *v)?);
    let mut last = 0.0;
    Some(
        cum.into_iter()
            .map(|c| {
                let n = (c - last).max(0.0).round();
                last = c.max(last);
                n
            })
            .collect(),
    )
}

/// Confusion counts of one step; a step with no `outcome` series at all is missing.
pub(super) fn outcomes(step: &BTreeMap<String, f64>) -> Option<Outcomes> {
    if step.is_empty() {
        return None;
    }
    let get = |k: &str| step.get(k).map_or(0, |v| v.max(0.0).round() as u64);
    Some(Outcomes::Binary { tp: get("tp"), fp: get("fp"), tn: get("tn"), fn_: get("fn") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn cumulative_le_buckets_become_per_bucket_counts() {
        let step = m(&[("0.25", 10.0), ("0.5", 30.0), ("+Inf", 100.0), ("1", 70.0)]);
        assert_eq!(histogram(&[0.25, 0.5, 1.0], &step), Some(vec![10.0, 20.0, 40.0, 30.0]));
        // Prometheus may write a bound in exponent form.
        let step = m(&[("1e+06", 5.0), ("+Inf", 5.0)]);
        assert_eq!(histogram(&[1e6], &step), Some(vec![5.0, 0.0]));
    }

    #[test]
    fn a_step_missing_a_bound_or_inf_is_missing_and_a_reset_is_not_negative() {
        assert_eq!(histogram(&[0.25, 0.5], &m(&[("0.25", 1.0), ("+Inf", 3.0)])), None);
        assert_eq!(histogram(&[0.25], &m(&[("0.25", 1.0)])), None);
        assert_eq!(histogram(&[0.25], &m(&[("0.25", 5.0), ("+Inf", 2.0)])), Some(vec![5.0, 0.0]));
        assert_eq!(histogram(&[0.25], &m(&[("0.25", 1.0), ("+Inf", 2.0), ("nonsense", 9.0)])), Some(vec![1.0, 1.0]));
    }

    #[test]
    fn outcome_series_become_confusion_counts() {
        let o = outcomes(&m(&[("tp", 4.4), ("fn", 1.0), ("tn", -0.2), ("other", 7.0)]));
        assert_eq!(o, Some(Outcomes::Binary { tp: 4, fp: 0, tn: 0, fn_: 1 }));
        assert_eq!(outcomes(&BTreeMap::new()), None);
    }
}
