//! The Mann–Whitney confidence interval Kayenta uses: R's
//! `wilcox.test(x, y, conf.int = TRUE, exact = FALSE, correct = TRUE)`,
//! with roots found by Brent's method (R's own `zeroin`) to an absolute
//! tolerance of 1e-4, as Kayenta's BrentSolver does.

use statrs::distribution::{ContinuousCDF, Normal};

/// Hodges–Lehmann estimate and two-sided interval of `x − y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShiftInterval {
    /// Lower bound.
    pub low: f64,
    /// Point estimate.
    pub estimate: f64,
    /// Upper bound.
    pub high: f64,
}

/// Average ranks (ties share the mean rank), as R's `rank`.
fn average_ranks(v: &[f64]) -> (Vec<f64>, f64) {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    (ranks, tie_term)
}

/// R's `wdiff(d, zq)` (its `W(d) − zq`); `None` when all observations tie (σ = 0).
fn wdiff(x: &[f64], y: &[f64], d: f64, zq: f64, correct: bool) -> Option<f64> {
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let combined: Vec<f64> = x.iter().map(|v| v - d).chain(y.iter().copied()).collect();
    let (ranks, ties) = average_ranks(&combined);
    let dz = ranks[..x.len()].iter().sum::<f64>() - nx * (nx + 1.0) / 2.0 - nx * ny / 2.0;
    let correction = if correct && dz != 0.0 { 0.5 * dz.signum() } else { 0.0 };
    let sigma = ((nx * ny / 12.0) * ((nx + ny + 1.0) - ties / ((nx + ny) * (nx + ny - 1.0)))).sqrt();
    (sigma > 0.0).then(|| (dz - correction) / sigma - zq)
}

/// Brent's zero finder exactly as R's `uniroot` runs it (`R_zeroin2`), so
/// the step-shaped `wdiff` lands on the same point R reports.
fn zeroin(f: &dyn Fn(f64) -> Option<f64>, ax: f64, bx: f64, fa: f64, fb: f64, tol: f64) -> Option<f64> {
    let (mut a, mut b, mut fa, mut fb) = (ax, bx, fa, fb);
    let (mut c, mut fc) = (a, fa);
    if fa == 0.0 {
        return Some(a);
    }
    if fb == 0.0 {
        return Some(b);
    }
    for _ in 0..=1000 {
        let prev_step = b - a;
        if fc.abs() < fb.abs() {
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol_act = 2.0 * f64::EPSILON * b.abs() + tol / 2.0;
        let mut new_step = (c - b) / 2.0;
        if new_step.abs() <= tol_act || fb == 0.0 {
            return Some(b);
        }
        if prev_step.abs() >= tol_act && fa.abs() > fb.abs() {
            let cb = c - b;
            let (p, q) = interpolation((a, fa), (b, fb), (c, fc));
            if p < (0.75 * cb * q - (tol_act * q).abs() / 2.0) && p < (prev_step * q / 2.0).abs() {
                new_step = p / q;
            }
        }
        if new_step.abs() < tol_act {
            new_step = if new_step > 0.0 { tol_act } else { -tol_act };
        }
        a = b;
        fa = fb;
        b += new_step;
        fb = f(b)?;
        if (fb > 0.0 && fc > 0.0) || (fb < 0.0 && fc < 0.0) {
            c = a;
            fc = fa;
        }
    }
    Some(b)
}

/// `zeroin`'s interpolated step from `b` as the fraction `p / q` (`p ≥ 0`):
/// linear (secant) when only two distinct points are known (`a == c`),
/// inverse quadratic otherwise — R's `R_zeroin2`, term for term.
fn interpolation((a, fa): (f64, f64), (b, fb): (f64, f64), (c, fc): (f64, f64)) -> (f64, f64) {
    let cb = c - b;
    let (p, q) = if a == c {
        let t1 = fb / fa;
        (cb * t1, 1.0 - t1)
    } else {
        let qq = fa / fc;
        let t1 = fb / fc;
        let t2 = fb / fa;
        (t2 * (cb * qq * (qq - t1) - (b - a) * (t1 - 1.0)), (qq - 1.0) * (t1 - 1.0) * (t2 - 1.0))
    };
    if p > 0.0 { (p, -q) } else { (-p, q) }
}

fn root(x: &[f64], y: &[f64], lo: f64, hi: f64, zq: f64) -> Option<f64> {
    let f = |d: f64| wdiff(x, y, d, zq, true);
    let (fl, fu) = (f(lo)?, f(hi)?);
    if fl <= 0.0 {
        return Some(lo);
    }
    if fu >= 0.0 {
        return Some(hi);
    }
    zeroin(&f, lo, hi, fl, fu, 1e-4)
}

/// The interval at `confidence` (0.98 for Kayenta); `None` if a side is
/// empty or every observation ties.
pub fn shift_interval(x: &[f64], y: &[f64], confidence: f64) -> Option<ShiftInterval> {
    if x.is_empty() || y.is_empty() {
        return None;
    }
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (lo, hi) = (min(x) - max(y), max(x) - min(y));
    let z = Normal::standard().inverse_cdf(1.0 - (1.0 - confidence) / 2.0);
    // R finds the estimate with a plain uniroot and *without* the continuity
    // correction (it sets `correct <- FALSE` first).
    let f0 = |d: f64| wdiff(x, y, d, 0.0, false);
    let estimate = zeroin(&f0, lo, hi, f0(lo)?, f0(hi)?, 1e-4)?;
    Some(ShiftInterval { low: root(x, y, lo, hi, z)?, estimate, high: root(x, y, lo, hi, -z)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 2e-4 * b.abs().max(1.0)
    }

    /// Golden values from R (`fixtures/golden/wilcox_ci.R`).
    #[test]
    fn matches_r_wilcox_test() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../../../fixtures/golden/wilcox_ci.json")).unwrap();
        let nums =
            |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|e| e.as_f64().unwrap()).collect() };
        let cases = golden["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for c in cases {
            let (x, y) = (nums(&c["x"]), nums(&c["y"]));
            let (low, est, high) =
                (c["low"].as_f64().unwrap(), c["estimate"].as_f64().unwrap(), c["high"].as_f64().unwrap());
            let ci = shift_interval(&x, &y, 0.98).unwrap();
            assert!(
                close(ci.low, low) && close(ci.estimate, est) && close(ci.high, high),
                "x={x:?} y={y:?}: got {ci:?}, R says ({low}, {est}, {high})"
            );
        }
    }

    #[test]
    fn all_tied_has_no_interval() {
        assert!(shift_interval(&[1.0, 1.0], &[1.0, 1.0], 0.98).is_none());
        assert!(shift_interval(&[], &[1.0], 0.98).is_none());
    }
}
