//! The peers' judges, re-implemented from their documented behaviour
//! (`shared/research/peer-judges.md`) so `eval` can run them on the same
//! scenarios as ours.
//!
//! Kayenta compares canary with baseline statistically. Argo Rollouts and
//! Flagger compare the canary with operator-chosen absolute thresholds; we
//! derive those from the baseline by one fixed rule: the mean of the
//! canary's last minute must not cross the baseline's 99.5 % quantile
//! for metrics that hurt when they rise, nor its 0.5 % quantile for metrics
//! that hurt when they fall (both for `both`). The quantiles come from the
//! whole baseline series, standing in for an operator who knows the stable
//! version's normal range before the rollout starts. Kayenta gets each
//! metric's direction the same way an operator would configure it.

mod argo;
mod flagger;
pub mod kayenta;
pub mod mannwhitney;

pub use argo::ArgoJudge;
pub use flagger::FlaggerJudge;
pub use kayenta::KayentaJudge;

use crate::signals::{BadDirection, MetricSeries, ScenarioData};

/// R-7 quantile of sorted values (R's default `quantile` type).
pub fn quantile_r7(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Points per measurement: one minute of samples, at least one.
pub(crate) fn points_per_minute(step_s: u32) -> usize {
    (60 / step_s.max(1) as usize).max(1)
}

/// The threshold range of the fixed rule, one-sided by `bad_direction`.
pub(crate) fn threshold_range(m: &MetricSeries) -> Option<(f64, f64)> {
    let mut b: Vec<f64> = m.baseline.iter().flatten().copied().collect();
    b.sort_by(f64::total_cmp);
    let (lo, hi) = (quantile_r7(&b, 0.005)?, quantile_r7(&b, 0.995)?);
    Some(match m.spec.bad_direction {
        BadDirection::Up => (f64::NEG_INFINITY, hi),
        BadDirection::Down => (lo, f64::INFINITY),
        BadDirection::Both => (lo, hi),
    })
}

/// Mean of the canary's last `m` points before `end`, ignoring gaps; `None` if all missing.
pub(crate) fn recent_mean(series: &[Option<f64>], end: usize, m: usize) -> Option<f64> {
    let start = end.saturating_sub(m);
    let vals: Vec<f64> = series[start..end.min(series.len())].iter().flatten().copied().collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

/// One measurement of every metric at step `end` (exclusive): `Some(true)`
/// in range, `Some(false)` out of range, `None` no data (an error for Argo, a
/// failed check for Flagger).
pub(crate) fn measure(data: &ScenarioData, end: usize) -> Vec<Option<bool>> {
    let m = points_per_minute(data.step_s);
    data.metrics
        .iter()
        .map(|s| {
            let (lo, hi) = threshold_range(s)?;
            let v = recent_mean(&s.canary, end, m)?;
            Some(v >= lo && v <= hi)
        })
        .collect()
}

/// A one-metric scenario with 60-second steps (one point per measurement), for peer tests.
#[cfg(test)]
pub(crate) fn tiny(canary: Vec<Option<f64>>) -> ScenarioData {
    let n = canary.len();
    ScenarioData {
        name: "tiny".into(),
        description: String::new(),
        service: "s".into(),
        step_s: 60,
        duration_s: 60 * n as u64,
        traffic: None,
        baseline_kind: Default::default(),
        metrics: vec![MetricSeries {
            spec: crate::signals::MetricSpec { name: "m".into(), unit: "ms".into(), bad_direction: BadDirection::Up },
            baseline: vec![Some(10.0); n],
            canary,
        }],
        logs: vec![],
        events: vec![],
        ml: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r7_quantiles_match_r() {
        // R: quantile(c(1,2,3,4,10), c(0.005, 0.5, 0.995)) = 1.02, 3, 9.88
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert!((quantile_r7(&v, 0.005).unwrap() - 1.02).abs() < 1e-12);
        assert_eq!(quantile_r7(&v, 0.5), Some(3.0));
        assert!((quantile_r7(&v, 0.995).unwrap() - 9.88).abs() < 1e-12);
    }
}
