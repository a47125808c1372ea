//! Sequential evidence for rare harmful events (errors on a low base rate,
//! intermittent bursts) against a concurrent baseline.
//!
//! The windowed tests look again at every tick and pay for it with a
//! Bonferroni split over looks, so a 3× rise of a 0.2 % error rate, or a
//! burst every few minutes, takes long to clear the bar. Here the evidence
//! accumulates over the whole window instead: given the harmful events of a
//! step on both sides, the canary's count is binomial with its traffic share
//! `q` when both versions share one rate, or with `q_θ = θq / (θq + 1 − q)`
//! when the canary's odds are `θ` times higher. The likelihood ratio of `θ`
//! against 1 is a martingale under the null; a mixture over a grid of `θ`
//! is too, so by Ville's inequality the chance it *ever* reaches `1/α` is at
//! most `α` — error control under continuous monitoring, no split over looks
//! (a mixture sequential probability ratio test). Extra-binomial dispersion
//! (retry storms) tempers the log-likelihood ratio by the estimated
//! dispersion factor, the usual quasi-likelihood correction.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Odds ratios the mixture weighs equally: from the smallest rise worth a
/// rollback to one that is unmistakable.
const THETAS: [f64; 5] = [1.5, 2.0, 3.0, 5.0, 10.0];

/// One step's harmful events: the canary's, both sides', and the canary's traffic share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepEvents {
    pub canary: f64,
    pub total: f64,
    pub share: f64,
}

/// The accumulated evidence for one metric and direction, for a human to check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SequentialEvidence {
    /// Natural log of the mixture likelihood ratio (tempered by dispersion).
    pub log_bf: f64,
    /// `ln(1/α)` for this test's share of the error budget.
    pub threshold: f64,
    /// Harmful events on the canary since warm-up.
    pub canary_events: f64,
    /// What its traffic share predicts if both versions shared one rate.
    pub expected_events: f64,
    /// The pooled rise is past the practical tolerance; below it the
    /// evidence is reported but never fails the metric.
    pub past_tolerance: bool,
}

impl SequentialEvidence {
    /// Past the threshold and the tolerance: the canary's rate is higher,
    /// by enough to matter, at any stopping time.
    pub fn crossed(&self) -> bool {
        self.past_tolerance && self.log_bf >= self.threshold
    }
}

/// The mixture's log likelihood ratio over `steps`, tempered by `dispersion` (≥ 1).
pub fn log_bf(steps: &[StepEvents], dispersion: f64) -> f64 {
    let llr: Vec<f64> = THETAS
        .iter()
        .map(|&theta| {
            steps
                .iter()
                .filter(|s| s.total > 0.0 && s.share > 0.0 && s.share < 1.0)
                .map(|s| {
                    let q = s.share;
                    let qt = theta * q / (theta * q + 1.0 - q);
                    s.canary * (qt / q).ln() + (s.total - s.canary) * ((1.0 - qt) / (1.0 - q)).ln()
                })
                .sum::<f64>()
                / dispersion.max(1.0)
        })
        .collect();
    let top = llr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return top;
    }
    top + (llr.iter().map(|l| (l - top).exp()).sum::<f64>() / THETAS.len() as f64).ln()
}

/// The evidence over `steps` at error budget `alpha`.
pub fn evidence(steps: &[StepEvents], dispersion: f64, alpha: f64, past_tolerance: bool) -> SequentialEvidence {
    SequentialEvidence {
        past_tolerance,
        log_bf: log_bf(steps, dispersion),
        threshold: (1.0 / alpha).ln(),
        canary_events: steps.iter().map(|s| s.canary).sum(),
        expected_events: steps.iter().map(|s| s.total * s.share).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Binomial, Distribution};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn log_bf_matches_an_independent_computation() {
        // SciPy 1.17: with q = 0.1 and 10 of 40 events on the canary in one step,
        //   lr(θ) = binom.pmf(10, 40, θq/(θq+1-q)) / binom.pmf(10, 40, q)
        //   log(mean(lr(θ) for θ in [1.5, 2, 3, 5, 10]))
        let one = [StepEvents { canary: 10.0, total: 40.0, share: 0.1 }];
        assert!(close(log_bf(&one, 1.0), GOLDEN_ONE, 1e-9), "{}", log_bf(&one, 1.0));
        // Two steps of different shares multiply their likelihood ratios per θ.
        let two =
            [StepEvents { canary: 3.0, total: 10.0, share: 0.05 }, StepEvents { canary: 2.0, total: 30.0, share: 0.2 }];
        assert!(close(log_bf(&two, 1.0), GOLDEN_TWO, 1e-9), "{}", log_bf(&two, 1.0));
    }

    const GOLDEN_ONE: f64 = 2.8333641543808423;
    const GOLDEN_TWO: f64 = -2.4613245615208226;

    #[test]
    fn a_canary_with_no_events_gathers_no_evidence() {
        let s = [StepEvents { canary: 0.0, total: 50.0, share: 0.1 }; 20];
        assert!(log_bf(&s, 1.0) < 0.0);
        assert_eq!(log_bf(&[], 1.0), 0.0);
    }

    #[test]
    fn under_the_null_it_crosses_at_most_alpha_of_the_time_while_watched_every_step() {
        // 2,000 healthy canaries watched for 180 steps each, checked at every
        // step: Ville's inequality allows at most α = 0.05 to ever cross.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (alpha, runs) = (0.05, 2000);
        let mut crossed = 0;
        for _ in 0..runs {
            let mut steps = Vec::new();
            for _ in 0..180 {
                let total = Binomial::new(60, 0.01).unwrap().sample(&mut rng) as f64;
                let canary = Binomial::new(total as u64, 0.1).unwrap().sample(&mut rng) as f64;
                steps.push(StepEvents { canary, total, share: 0.1 });
                if evidence(&steps, 1.0, alpha, true).crossed() {
                    crossed += 1;
                    break;
                }
            }
        }
        assert!((crossed as f64) < alpha * runs as f64, "{crossed} of {runs}");
    }

    #[test]
    fn a_tripled_low_error_rate_crosses() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut steps = Vec::new();
        for _ in 0..120 {
            // 300 requests a step, 10 % to the canary; baseline 0.2 % errors, canary 0.6 %.
            let eb = Binomial::new(270, 0.002).unwrap().sample(&mut rng) as f64;
            let ec = Binomial::new(30, 0.006).unwrap().sample(&mut rng) as f64;
            steps.push(StepEvents { canary: ec, total: ec + eb, share: 0.1 });
        }
        let ev = evidence(&steps, 1.0, 0.005, true);
        assert!(ev.crossed(), "{ev:?}");
        assert!(!SequentialEvidence { past_tolerance: false, ..ev }.crossed());
    }
}
