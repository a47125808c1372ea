//! Kayenta's NetflixACAJudge with its defaults: Mann–Whitney classifier at
//! 98 % confidence with the ±0.25·|estimate| tolerance, direction `either`,
//! effect size mean ratio (allowed 1.0), one group; score pass 95 /
//! marginal 75, judged four times over growing intervals, stopping at the
//! first score ≤ marginal; the last judgement must reach pass. Each metric's
//! direction is configured from its `bad_direction` (up → increase, down →
//! decrease, both → either), as an operator would.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::mannwhitney::shift_interval;
use crate::eval::{EvalJudge, ReplayDecision};
use crate::signals::{BadDirection, ScenarioData};

const CONFIDENCE: f64 = 0.98;
const TOLERANCE: f64 = 0.25;
const PASS: f64 = 95.0;
const MARGINAL: f64 = 75.0;
const JUDGEMENTS: u64 = 4;

/// Kayenta's per-metric classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// No significant difference.
    Pass,
    /// Canary significantly higher.
    High,
    /// Canary significantly lower.
    Low,
    /// A side has no data.
    Nodata,
}

fn distinct(v: &[f64]) -> usize {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.dedup();
    s.len()
}

/// Classify canary `x` against control `y` (nulls already removed); only
/// changes in `direction` count.
pub fn classify(x: &[f64], y: &[f64], direction: BadDirection) -> Class {
    if x.is_empty() || y.is_empty() {
        return Class::Nodata;
    }
    let (mut xs, mut ys) = (x.to_vec(), y.to_vec());
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let all: Vec<f64> = xs.iter().chain(ys.iter()).copied().collect();
    if xs == ys || distinct(&all) == 1 {
        return Class::Pass;
    }
    if distinct(&xs) == 1 && distinct(&ys) == 1 {
        // Kayenta breaks the all-tied case with tiny Gaussian noise; seeded here for repeatability.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut jitter = |v: &mut Vec<f64>| {
            for e in v.iter_mut() {
                let sd = (e.abs() * 1e-5).max(1e-12);
                *e += Normal::new(0.0, sd).map(|n| n.sample(&mut rng)).unwrap_or(0.0);
            }
        };
        jitter(&mut xs);
        jitter(&mut ys);
    }
    let Some(ci) = shift_interval(&xs, &ys, CONFIDENCE) else { return Class::Pass };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratio = if mean(&ys) == 0.0 || mean(&xs) == 0.0 { f64::NAN } else { mean(&xs) / mean(&ys) };
    let up = matches!(direction, BadDirection::Up | BadDirection::Both);
    let down = matches!(direction, BadDirection::Down | BadDirection::Both);
    if up && ci.low > TOLERANCE * ci.estimate.abs() && (ratio.is_nan() || ratio >= 1.0) {
        Class::High
    } else if down && ci.high < -TOLERANCE * ci.estimate.abs() && (ratio.is_nan() || ratio <= 1.0) {
        Class::Low
    } else {
        Class::Pass
    }
}

/// The weighted-sum score of one group (all metrics), rounded to 2 decimals.
pub fn score(classes: &[Class]) -> f64 {
    let nodata = classes.iter().filter(|c| **c == Class::Nodata).count();
    if classes.is_empty() || nodata * 2 >= classes.len() {
        return 0.0;
    }
    let pass = classes.iter().filter(|c| **c == Class::Pass).count() as f64;
    let counted = (classes.len() - nodata) as f64;
    (100.0 * pass / counted * 100.0).round() / 100.0
}

/// Kayenta as `eval` runs it.
pub struct KayentaJudge;

impl EvalJudge for KayentaJudge {
    fn name(&self) -> &'static str {
        crate::eval::JudgeName::Kayenta.as_str()
    }

    fn decide(&self, data: &ScenarioData) -> (ReplayDecision, Option<u64>) {
        let step = u64::from(data.step_s);
        let steps = data.duration_s / step;
        for k in 1..=JUDGEMENTS {
            let n = (steps * k / JUDGEMENTS) as usize;
            let at = n as u64 * step;
            let classes: Vec<Class> = data
                .metrics
                .iter()
                .map(|m| {
                    let x: Vec<f64> = m.canary[..n].iter().flatten().copied().collect();
                    let y: Vec<f64> = m.baseline[..n].iter().flatten().copied().collect();
                    classify(&x, &y, m.spec.bad_direction)
                })
                .collect();
            let s = score(&classes);
            if s <= MARGINAL {
                return (ReplayDecision::Rollback, Some(at));
            }
            if k == JUDGEMENTS {
                return if s >= PASS {
                    (ReplayDecision::Promote, Some(at))
                } else {
                    (ReplayDecision::Rollback, Some(at))
                };
            }
        }
        (ReplayDecision::Inconclusive, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_shifts_by_direction() {
        let y = [200.0, 202.0, 198.0, 201.0, 199.0, 203.0, 197.0, 200.0];
        let up: Vec<f64> = y.iter().map(|v| v + 50.0).collect();
        let down: Vec<f64> = y.iter().map(|v| v - 50.0).collect();
        // R: this pair's 98% interval is (3.0, 48.5, 57.0): its lower bound is
        // below 0.25 × 48.5, so Kayenta's tolerance calls it a pass.
        let mixed = [205.0, 210.0, 199.0, 250.0, 260.0, 255.0, 248.0, 251.0];
        assert_eq!(classify(&mixed, &y, BadDirection::Both), Class::Pass);
        assert_eq!(classify(&up, &y, BadDirection::Both), Class::High);
        assert_eq!(classify(&down, &y, BadDirection::Both), Class::Low);
        assert_eq!(classify(&y, &y, BadDirection::Both), Class::Pass);
        assert_eq!(classify(&[], &y, BadDirection::Both), Class::Nodata);
        assert_eq!(classify(&down, &y, BadDirection::Up), Class::Pass, "an improvement is not a failure");
    }

    #[test]
    fn tolerance_keeps_tiny_shifts_passing() {
        // Hand check: a shift of +1 on a spread of ±3 has an interval that includes
        // values below 0.25·|estimate|, so it passes.
        let y = [10.0, 13.0, 7.0, 11.0, 9.0, 12.0, 8.0, 10.0];
        let x: Vec<f64> = y.iter().map(|v| v + 1.0).collect();
        assert_eq!(classify(&x, &y, BadDirection::Both), Class::Pass);
    }

    #[test]
    fn constant_sides_are_jittered_not_crashed() {
        assert_eq!(classify(&[5.0; 6], &[5.0; 6], BadDirection::Up), Class::Pass);
        assert_eq!(classify(&[7.0; 6], &[5.0; 6], BadDirection::Up), Class::High);
    }

    #[test]
    fn score_follows_weighted_sum_rules() {
        use Class::*;
        assert_eq!(score(&[Pass, Pass, High, Pass]), 75.0);
        assert_eq!(score(&[Pass, Nodata, Pass]), 100.0);
        assert_eq!(score(&[Pass, Nodata]), 0.0, "at least half nodata forces 0");
        assert_eq!(score(&[Pass, Pass, Low]), 66.67);
    }
}
