//! Slow leaks: a resource (memory) the canary keeps gaining relative to the
//! baseline, long before the level itself is past tolerance.
//!
//! A fresh process also grows — caches fill, pools open — but that growth
//! settles; a leak does not. So the paired differences `d = canary −
//! baseline` (shared growth cancels) are read in two adjacent windows: they
//! must rise significantly (Mann–Kendall over both, its `z` against the
//! judge's critical value), the recent one at a rate no smaller than half the
//! window before's (warm-up growth decays at least that fast over ten minutes with
//! a time constant up to a quarter hour), and that rate carried over the
//! horizon must be past the metric's tolerance.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stats::median;

/// The recent window's growth must be at least this share of the window before's.
const NO_SLOWDOWN: f64 = 0.5;

/// The trend, in numbers a human can check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrendEvidence {
    /// Theil–Sen slope of `d` over the recent window, metric's unit per hour.
    pub slope_per_hour: f64,
    /// The same over the window before it.
    pub previous_slope_per_hour: f64,
    /// Growth the recent slope reaches over the horizon, metric's unit.
    pub projected: f64,
    /// Horizon, seconds.
    pub horizon_s: u64,
    /// Mann–Kendall `z` over both windows.
    pub z: f64,
    /// Critical value `z` had to exceed.
    pub critical: f64,
    /// Smallest projected growth that counts as harmful.
    pub tolerance: f64,
}

impl TrendEvidence {
    /// A leak by every criterion: significant, not slowing down, harmful over the horizon.
    pub fn is_leak(&self) -> bool {
        self.z > self.critical
            && self.slope_per_hour > 0.0
            && self.slope_per_hour >= NO_SLOWDOWN * self.previous_slope_per_hour
            && self.projected > self.tolerance
    }
}

/// Median of pairwise slopes (Theil–Sen), per step; `None` under two points.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (k, a) in points.iter().enumerate() {
        for b in &points[k + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    median(&mut slopes)
}

/// Mann–Kendall `z` (continuity-corrected, no tie correction) of values in time order.
pub fn mann_kendall_z(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if n < 3.0 {
        return 0.0;
    }
    let mut s = 0.0;
    for (k, a) in values.iter().enumerate() {
        for b in &values[k + 1..] {
            s += (b - a).signum() * f64::from(u8::from(b != a));
        }
    }
    let var = n * (n - 1.0) * (2.0 * n + 5.0) / 18.0;
    if s > 0.0 {
        (s - 1.0) / var.sqrt()
    } else if s < 0.0 {
        (s + 1.0) / var.sqrt()
    } else {
        0.0
    }
}

/// The trend of `d` (step index, value) over the last `window` steps ending
/// at step `end`, against the `window` steps before them. `None` until both
/// windows hold at least half their samples.
pub fn trend(
    d: &[(usize, f64)],
    end: usize,
    window: usize,
    step_s: u32,
    horizon_s: u64,
    tolerance: f64,
    critical: f64,
) -> Option<TrendEvidence> {
    if window < 3 || end < 2 * window {
        return None;
    }
    let pick = |from: usize, to: usize| -> Vec<(f64, f64)> {
        d.iter().filter(|(i, _)| (from..to).contains(i)).map(|&(i, v)| (i as f64, v)).collect()
    };
    let (recent, before) = (pick(end - window, end), pick(end - 2 * window, end - window));
    if recent.len() * 2 < window || before.len() * 2 < window {
        return None;
    }
    let per_hour = 3600.0 / f64::from(step_s.max(1));
    let slope = theil_sen(&recent)?;
    // Significance over both windows: a rise that holds for their whole span.
    let values: Vec<f64> = before.iter().chain(&recent).map(|p| p.1).collect();
    Some(TrendEvidence {
        slope_per_hour: slope * per_hour,
        previous_slope_per_hour: theil_sen(&before)? * per_hour,
        projected: slope * horizon_s as f64 / f64::from(step_s.max(1)),
        horizon_s,
        z: mann_kendall_z(&values),
        critical,
        tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn theil_sen_and_mann_kendall_match_scipy() {
        // SciPy 1.17: scipy.stats.theilslopes(y, x).slope, and the Mann–Kendall
        // S from scipy.stats.kendalltau's concordant/discordant counts.
        let y = [1.0, 2.5, 2.0, 4.0, 3.5, 5.0, 7.0, 6.5, 8.0, 9.5];
        let pts: Vec<(f64, f64)> = y.iter().enumerate().map(|(i, &v)| (i as f64, v)).collect();
        assert!(close(theil_sen(&pts).unwrap(), THEIL_SEN, 1e-12));
        assert!(close(mann_kendall_z(&y), MK_Z, 1e-9), "{}", mann_kendall_z(&y));
    }

    const THEIL_SEN: f64 = 0.9;
    const MK_Z: f64 = 3.3988233257996803;

    fn series(f: impl Fn(f64) -> f64, n: usize) -> Vec<(usize, f64)> {
        // Deterministic jitter of ±0.5 % of 1000.
        (0..n).map(|i| (i, f(i as f64 * 10.0) + 5.0 * ((i * 7919 % 13) as f64 / 6.0 - 1.0))).collect()
    }

    #[test]
    fn a_steady_leak_is_one_and_settling_warm_up_growth_is_not() {
        // 10-s steps, 600-s windows, 4-hour horizon, tolerance 200 MB on a 1000 MB base.
        let leak = series(|t| 1000.0 * 0.1 * t / 3600.0, 180);
        let e = trend(&leak, 180, 60, 10, 4 * 3600, 200.0, 3.0).unwrap();
        assert!(e.is_leak(), "{e:?}");
        // A fresh process 40 % below the baseline catching up with a 300-s time constant.
        let warm = series(|t| -400.0 * (-t / 300.0).exp(), 180);
        let e = trend(&warm, 180, 60, 10, 4 * 3600, 200.0, 3.0).unwrap();
        assert!(!e.is_leak(), "{e:?}");
        // Flat: no trend at all.
        let flat = series(|_| 0.0, 180);
        assert!(!trend(&flat, 180, 60, 10, 4 * 3600, 200.0, 3.0).unwrap().is_leak());
        // Too early: two windows not yet observed.
        assert!(trend(&leak, 100, 60, 10, 4 * 3600, 200.0, 3.0).is_none());
    }
}
