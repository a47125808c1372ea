//! What the paired comparison cannot see because it hits both sides: an
//! absolute limit ("SLO guard") the canary is past, and a baseline that moves
//! on its own during the window (an incident both versions share).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stats::median;
use crate::signals::{BadDirection, BaselineKind, MetricSeries, Traffic};

/// Which side of the limit is a breach, and the limit in the metric's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Values above it breach (errors, latency).
    Max(f64),
    /// Values below it breach (success rate, throughput).
    Min(f64),
}

impl Limit {
    fn breached(self, v: f64) -> bool {
        match self {
            Limit::Max(l) => v > l,
            Limit::Min(l) => v < l,
        }
    }

    /// The harmful direction this limit protects against.
    pub fn direction(self) -> BadDirection {
        match self {
            Limit::Max(_) => BadDirection::Up,
            Limit::Min(_) => BadDirection::Down,
        }
    }
}

/// A guard as the judge applies it (resolved from the policy file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Guard {
    /// The limit.
    pub limit: Limit,
    /// Seconds during which every sample must be past the limit; a missing sample breaks the run.
    pub for_s: u64,
    /// Ratio metrics: requests a side needs within `for_s` for its breach to count.
    pub min_requests: u64,
}

/// Who is past the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Breach {
    /// The canary alone (or, with an earlier-window baseline, the canary): the metric fails.
    Canary,
    /// Both sides at the same time: an incident both versions share; hold for a human.
    Shared,
}

/// A guard that fired, with the numbers a human checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuardHit {
    /// Who is past the limit.
    pub breach: Breach,
    /// The guard.
    pub guard: Guard,
    /// Release time at which the breach had lasted `for_s`, seconds.
    pub at_s: u64,
    /// Canary level over those `for_s` (request-weighted for ratios).
    pub canary: f64,
    /// Baseline level over the same steps, if it had samples.
    pub baseline: Option<f64>,
    /// Canary requests over those steps (ratio metrics).
    pub canary_requests: Option<u64>,
}

/// A guard hit in brief, for the gate and `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuardNote {
    /// Metric name.
    pub metric: String,
    /// Canary alone, or both sides.
    pub breach: Breach,
    /// Release time the breach had lasted its `for_s`, seconds.
    pub at_s: u64,
}

/// The baseline moved on its own during the window, beyond what the
/// comparison can absorb: the canary is compared with a different system
/// than the one it started next to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BaselineShift {
    /// Baseline median over the first block after warm-up.
    pub before: f64,
    /// Baseline median over the latest block.
    pub after: f64,
    /// Length of each block, seconds.
    pub block_s: u64,
    /// The shift had to exceed this (SHIFT_TOLERANCES × the metric's tolerance).
    pub threshold: f64,
}

/// A baseline shift counts beyond this many of the metric's tolerances.
pub const SHIFT_TOLERANCES: f64 = 4.0;
/// Blocks compared for a baseline shift, seconds: the median of a block
/// ignores blips shorter than half of it.
pub const SHIFT_BLOCK_S: u64 = 120;

/// One side's samples as running totals, so any span's breach and level
/// cost O(1): the guard scans every end step of the window at every tick.
struct Totals {
    /// Consecutive breaching steps ending just before index `i` (a step
    /// breaches when its sample is present, past the limit and, for ratios,
    /// has a request count).
    run: Vec<usize>,
    /// Prefix sums over breaching steps: value, value × requests, requests.
    sum: Vec<f64>,
    weighted: Vec<f64>,
    requests: Vec<u64>,
    /// Prefix sums over every present sample, breaching or not (for the level shown).
    present_sum: Vec<f64>,
    present: Vec<usize>,
}

impl Totals {
    fn new(limit: Limit, values: &[Option<f64>], requests: Option<&[u64]>, n: usize) -> Self {
        let mut t = Totals {
            run: vec![0; n + 1],
            sum: vec![0.0; n + 1],
            weighted: vec![0.0; n + 1],
            requests: vec![0; n + 1],
            present_sum: vec![0.0; n + 1],
            present: vec![0; n + 1],
        };
        for i in 0..n {
            let v = values.get(i).copied().flatten();
            let r = match requests {
                Some(r) => r.get(i).copied(),
                None => Some(0),
            };
            let (breach, v0, r0) = match (v, r) {
                (Some(v), Some(r)) if limit.breached(v) => (true, v, r),
                _ => (false, 0.0, 0),
            };
            t.run[i + 1] = if breach { t.run[i] + 1 } else { 0 };
            t.sum[i + 1] = t.sum[i] + v0;
            t.weighted[i + 1] = t.weighted[i] + v0 * r0 as f64;
            t.requests[i + 1] = t.requests[i] + r0;
            t.present_sum[i + 1] = t.present_sum[i] + v.unwrap_or(0.0);
            t.present[i + 1] = t.present[i] + usize::from(v.is_some());
        }
        t
    }

    /// Over steps `[start, end)`: the level when every step breaches and,
    /// for ratios (`min` > 0 with requests), enough requests were served.
    fn sustained(&self, (start, end): (usize, usize), ratio: bool, min: u64) -> Option<(f64, Option<u64>)> {
        if self.run[end] < end - start {
            return None;
        }
        if !ratio {
            return Some(((self.sum[end] - self.sum[start]) / (end - start) as f64, None));
        }
        let n = self.requests[end] - self.requests[start];
        (n >= min && n > 0).then(|| ((self.weighted[end] - self.weighted[start]) / n as f64, Some(n)))
    }

    /// Mean of the present samples over `[start, end)`.
    fn level(&self, (start, end): (usize, usize)) -> Option<f64> {
        let k = self.present[end] - self.present[start];
        (k > 0).then(|| (self.present_sum[end] - self.present_sum[start]) / k as f64)
    }
}

/// Where the metric's samples live, and how the baseline relates to the canary.
pub(crate) struct GuardInput<'a> {
    pub series: &'a MetricSeries,
    /// Per-step requests when the metric is a request ratio.
    pub traffic: Option<&'a Traffic>,
    pub baseline_kind: BaselineKind,
    /// First step after warm-up.
    pub first: usize,
    /// Steps observed.
    pub n: usize,
    pub step_s: u32,
}

/// The first canary-only breach in the observed steps, else the first shared one.
pub(crate) fn check(guard: &Guard, x: &GuardInput) -> Option<GuardHit> {
    let k = (guard.for_s.div_ceil(u64::from(x.step_s.max(1))) as usize).max(1);
    let (m, min, ratio) = (x.series, guard.min_requests, x.traffic.is_some());
    let canary = Totals::new(guard.limit, &m.canary, x.traffic.map(|t| t.canary.as_slice()), x.n);
    let base = Totals::new(guard.limit, &m.baseline, x.traffic.map(|t| t.baseline.as_slice()), x.n);
    let concurrent = x.baseline_kind == BaselineKind::Concurrent;
    let mut shared = None;
    for end in (x.first + k)..=x.n {
        let span = (end - k, end);
        let Some((level, canary_requests)) = canary.sustained(span, ratio, min) else { continue };
        let baseline = base.level(span);
        let at_s = end as u64 * u64::from(x.step_s);
        let hit = |breach| GuardHit { breach, guard: *guard, at_s, canary: level, baseline, canary_requests };
        match (concurrent, baseline, base.sustained(span, ratio, min)) {
            (false, ..) => return Some(hit(Breach::Canary)),
            // A concurrent baseline with no samples here cannot say whether the breach is shared.
            (true, None, _) => {}
            (true, Some(_), None) => return Some(hit(Breach::Canary)),
            (true, Some(_), Some(_)) => {
                shared.get_or_insert_with(|| hit(Breach::Shared));
            }
        }
    }
    shared
}

/// Did a concurrent baseline move by more than `SHIFT_TOLERANCES` of its
/// tolerance (`tolerance(level)`) in the harmful direction?
pub(crate) fn baseline_shift(x: &GuardInput, tolerance: impl Fn(f64) -> f64) -> Option<BaselineShift> {
    if x.baseline_kind != BaselineKind::Concurrent {
        return None;
    }
    let block = (SHIFT_BLOCK_S.div_ceil(u64::from(x.step_s.max(1))) as usize).max(3);
    if x.n < x.first + 2 * block {
        return None;
    }
    let block_median = |start: usize| {
        let mut v: Vec<f64> = x.series.baseline.get(start..start + block)?.iter().flatten().copied().collect();
        if v.len() * 2 < block {
            return None;
        }
        median(&mut v)
    };
    let (before, after) = (block_median(x.first)?, block_median(x.n - block)?);
    let threshold = SHIFT_TOLERANCES * tolerance(before);
    let harmful = match x.series.spec.bad_direction {
        BadDirection::Up => after - before,
        BadDirection::Down => before - after,
        BadDirection::Both => (after - before).abs(),
    };
    (harmful > threshold && threshold > 0.0).then_some(BaselineShift {
        before,
        after,
        block_s: block as u64 * u64::from(x.step_s),
        threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::MetricSpec;

    fn series(b: Vec<f64>, c: Vec<f64>) -> MetricSeries {
        MetricSeries {
            spec: MetricSpec { name: "err".into(), unit: "ratio".into(), bad_direction: BadDirection::Up },
            baseline: b.into_iter().map(Some).collect(),
            canary: c.into_iter().map(Some).collect(),
        }
    }

    fn input<'a>(s: &'a MetricSeries, t: Option<&'a Traffic>, kind: BaselineKind) -> GuardInput<'a> {
        GuardInput { series: s, traffic: t, baseline_kind: kind, first: 0, n: s.canary.len(), step_s: 10 }
    }

    const GUARD: Guard = Guard { limit: Limit::Max(0.05), for_s: 60, min_requests: 50 };

    #[test]
    fn a_sustained_canary_breach_fires_and_a_shorter_one_does_not() {
        let mut c = vec![0.004; 20];
        c[10..15].fill(0.08); // 50 s: shorter than for_s
        let s = series(vec![0.004; 20], c.clone());
        let t = Traffic { baseline: vec![1000; 20], canary: vec![20; 20] };
        assert_eq!(check(&GUARD, &input(&s, Some(&t), BaselineKind::Concurrent)), None);
        c[10..16].fill(0.08);
        let s = series(vec![0.004; 20], c);
        let hit = check(&GUARD, &input(&s, Some(&t), BaselineKind::Concurrent)).unwrap();
        assert_eq!((hit.breach, hit.at_s, hit.canary_requests), (Breach::Canary, 160, Some(120)));
        assert!((hit.canary - 0.08).abs() < 1e-12 && (hit.baseline.unwrap() - 0.004).abs() < 1e-12);
    }

    #[test]
    fn too_few_requests_or_a_missing_sample_is_not_a_breach() {
        let s = series(vec![0.004; 10], vec![0.5; 10]);
        let thin = Traffic { baseline: vec![1000; 10], canary: vec![5; 10] };
        assert_eq!(check(&GUARD, &input(&s, Some(&thin), BaselineKind::Concurrent)), None, "30 requests < 50");
        let mut gappy = series(vec![0.004; 10], vec![0.5; 10]);
        for i in [2, 5, 8] {
            gappy.canary[i] = None;
        }
        assert_eq!(check(&GUARD, &input(&gappy, None, BaselineKind::Concurrent)), None);
    }

    #[test]
    fn both_sides_past_the_limit_is_shared_unless_the_baseline_is_an_earlier_window() {
        let s = series(vec![0.08; 12], vec![0.08; 12]);
        let hit = check(&GUARD, &input(&s, None, BaselineKind::Concurrent)).unwrap();
        assert_eq!(hit.breach, Breach::Shared);
        for kind in [BaselineKind::Preceding, BaselineKind::Seasonal] {
            assert_eq!(check(&GUARD, &input(&s, None, kind)).unwrap().breach, Breach::Canary);
        }
        // A concurrent baseline without samples cannot tell: no hit.
        let mut blind = s.clone();
        blind.baseline.iter_mut().for_each(|b| *b = None);
        assert_eq!(check(&GUARD, &input(&blind, None, BaselineKind::Concurrent)), None);
    }

    #[test]
    fn a_min_guard_breaches_below_its_limit() {
        let g = Guard { limit: Limit::Min(0.99), for_s: 30, min_requests: 1 };
        let s = series(vec![0.999; 6], vec![0.95; 6]);
        assert_eq!(check(&g, &input(&s, None, BaselineKind::Concurrent)).unwrap().breach, Breach::Canary);
        let fine = series(vec![0.999; 6], vec![0.995; 6]);
        assert_eq!(check(&g, &input(&fine, None, BaselineKind::Concurrent)), None);
    }

    #[test]
    fn a_baseline_that_jumps_during_the_window_is_a_shift_and_noise_is_not() {
        let mut b = vec![0.003; 60];
        b[40..].fill(0.08);
        let s = series(b, vec![0.003; 60]);
        let tol = |level: f64| (0.2 * level).max(0.005);
        let shift = baseline_shift(&input(&s, None, BaselineKind::Concurrent), tol).unwrap();
        assert!((shift.before - 0.003).abs() < 1e-12 && (shift.after - 0.08).abs() < 1e-12 && shift.block_s == 120);
        assert_eq!(baseline_shift(&input(&s, None, BaselineKind::Preceding), tol), None);
        let noisy: Vec<f64> = (0..60).map(|i| 0.003 + 0.002 * ((i * 7 % 5) as f64 - 2.0) / 2.0).collect();
        assert_eq!(baseline_shift(&input(&series(noisy, vec![0.003; 60]), None, BaselineKind::Concurrent), tol), None);
    }
}
