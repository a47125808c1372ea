//! Small, independently checked statistics for the judge.
//!
//! Golden values in the tests come from R (`qt`, `pbinom`, `mad`) and were
//! computed outside this code base (R and SciPy agree on each).

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Median of `v` (reorders `v`); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    // Selection, not a full sort: the judge takes many medians per tick.
    let n = v.len();
    let (_, &mut upper, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return Some(upper);
    }
    let lower = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lower + upper) / 2.0)
}

/// Median absolute deviation scaled by 1.4826, a robust stand-in for the
/// standard deviation that one outlier (a blip) cannot inflate.
pub fn mad_sigma(v: &[f64]) -> Option<f64> {
    let mut w = v.to_vec();
    let m = median(&mut w)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    median(&mut dev).map(|d| 1.4826 * d)
}

/// Upper-tail critical value of Student's t with `df` degrees of freedom:
/// the `t` with `P(T > t) = alpha`. Falls back to the normal for huge `df`.
pub fn t_critical(alpha: f64, df: f64) -> f64 {
    let p = 1.0 - alpha.clamp(1e-15, 0.5);
    if df > 1e6 {
        return Normal::standard().inverse_cdf(p);
    }
    StudentsT::new(0.0, 1.0, df.max(1.0)).map(|t| t.inverse_cdf(p)).unwrap_or(f64::INFINITY)
}

/// One-sided p-value `P(T > t)` for Student's t with `df` degrees of freedom.
pub fn t_upper_p(t: f64, df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df.max(1.0)).map(|d| 1.0 - d.cdf(t)).unwrap_or(1.0)
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`, summed in log space so large `n`
/// neither overflows nor underflows.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_pmf = ln_choose(n, k) + k as f64 * lp + (n - k) as f64 * lq;
    let mut total = 0.0;
    for j in k..=n {
        total += log_pmf.exp();
        // pmf(j+1)/pmf(j) = (n-j)/(j+1) * p/q
        if j < n {
            log_pmf += ((n - j) as f64).ln() - ((j + 1) as f64).ln() + lp - lq;
        }
        if log_pmf < -60.0 && j as f64 > n as f64 * p {
            break;
        }
    }
    total.min(1.0)
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

fn ln_factorial(n: u64) -> f64 {
    statrs::function::factorial::ln_factorial(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn mad_matches_r() {
        // R: mad(c(1,2,3,4,100)) = 1.4826
        assert!(close(mad_sigma(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap(), 1.4826, 1e-9));
        // R: mad(c(2.5, 3.1, 2.9, 3.3, 2.7, 9)) = 0.44478
        assert!(close(mad_sigma(&[2.5, 3.1, 2.9, 3.3, 2.7, 9.0]).unwrap(), 0.44478, 1e-4));
    }

    #[test]
    fn t_critical_matches_r_qt() {
        // R: qt(0.975, 5) = 2.570582; qt(0.99, 10) = 2.763769; qt(1-1e-5, 30) = 5.054032
        assert!(close(t_critical(0.025, 5.0), 2.570582, 1e-5));
        assert!(close(t_critical(0.01, 10.0), 2.763769, 1e-5));
        assert!(close(t_critical(1e-5, 30.0), 5.054032, 1e-5));
        // R: qnorm(1-1e-6) = 4.753424
        assert!(close(t_critical(1e-6, 1e9), 4.753424, 1e-5));
    }

    #[test]
    fn t_upper_p_matches_r_pt() {
        // R: 1 - pt(2.0, 10) = 0.03669402
        assert!(close(t_upper_p(2.0, 10.0), 0.03669402, 1e-5));
    }

    #[test]
    fn binomial_tail_matches_r_pbinom() {
        // R: pbinom(2, 20, 0.002, lower=FALSE) = 8.890392e-06
        assert!(close(binomial_upper_tail(3, 20, 0.002), 8.890392e-06, 1e-5));
        // R: pbinom(9, 10, 0.5, lower=FALSE) = 0.0009765625
        assert!(close(binomial_upper_tail(10, 10, 0.5), 0.0009765625, 1e-9));
        // R: pbinom(59, 1000, 0.05, lower=FALSE) = 0.08673218
        assert!(close(binomial_upper_tail(60, 1000, 0.05), 0.08673218, 1e-5));
        assert_eq!(binomial_upper_tail(0, 5, 0.1), 1.0);
        assert_eq!(binomial_upper_tail(6, 5, 0.1), 0.0);
    }
}
