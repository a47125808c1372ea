//! Sequential evidence for rare harmful events (errors on a low base rate,
//! intermittent bursts) against a concurrent baseline.
//!
//! The windowed tests look again at every tick and pay for it with a
//! Bonferroni split over looks, so a 3× rise of a 0.2 % error rate, or a
//! burst every few minutes, takes long to clear the bar. Here the evidence
//! accumulates across ticks instead: given the harmful events of a step on
//! both sides, the canary's count is binomial with its traffic share `q`
//! when both versions share one rate, or with `q_θ = θq / (θq + 1 − q)` when
//! the canary's odds are `θ` times higher. The likelihood ratio `L_j(θ)` of
//! step `j` has mean 1 under the null.
//!
//! A fault need not start with the release (a code path first hit later, a
//! dependency that turns), and evidence gathered over healthy steps before it
//! must not hold its detection back. So the statistic is a mixture over
//! *when* the canary's odds changed as well as by how much (a change-point
//! e-detector): half the prior weight on "at the release" (warm-up's end)
//! and half spread evenly over the window's `N` planned steps,
//!
//! `E_t = Σ_θ w_θ [ ½ Π_{j≤t} L_j(θ) + (1/2N) Σ_{k<t} Π_{k<j≤t} L_j(θ) ]`,
//!
//! with prior weights `w_θ` summing to 1 (a mixture of martingales is one).
//!
//! The second sum `R_t` is the Shiryaev–Roberts statistic: `R_t = L_t (R_{t−1} + 1)`,
//! so it costs one pass. Under the null `E[R_t] = t`, hence `E_t + (N − t)/2N`
//! is a non-negative martingale starting at 1 for `t ≤ N`, and by Ville's
//! inequality the chance `E_t` *ever* reaches `1/α` in the window is at most
//! `α`: error control under continuous monitoring with no split over looks,
//! at the price of `ln 2` for a change at the release and `ln 2N` for one later.
//! Extra-binomial dispersion (retry storms) tempers each log-likelihood ratio
//! by the estimated dispersion factor, the usual quasi-likelihood correction.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Odds ratios the mixture weighs: from the smallest rise worth a rollback
/// to one that is unmistakable, and beyond (an error the baseline never shows).
const THETAS: [f64; 7] = [1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0];

/// Prior weight of each of [`THETAS`]: most on the rises a rollback is
/// usually about, a little on the extreme ones (an error the baseline never
/// shows), whose lines each carry several times the evidence when they come.
const THETA_WEIGHTS: [f64; 7] = [0.19, 0.19, 0.19, 0.19, 0.19, 0.025, 0.025];

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
    /// Natural log of the e-value: the likelihood ratio mixed over the odds
    /// ratio and the change point (tempered by dispersion).
    pub log_bf: f64,
    /// `ln(1/α)` for this test's share of the error budget.
    pub threshold: f64,
    /// Harmful events on the canary since the change.
    pub canary_events: f64,
    /// What its traffic share predicts over those steps if both versions shared one rate.
    pub expected_events: f64,
    /// The pooled rise since the change is past the practical tolerance;
    /// below it the evidence is reported but never fails the metric.
    pub past_tolerance: bool,
    /// Where the evidence puts the change (its most likely change point), in
    /// steps judged after warm-up: 0 is at the release. Located once the
    /// evidence reaches its threshold; 0 (the counts and the tolerance read
    /// since the release) before that, and in records written before the
    /// change point was part of the evidence.
    #[serde(default)]
    pub changed_after_steps: usize,
}

impl SequentialEvidence {
    /// Past the threshold and the tolerance: the canary's rate is higher,
    /// by enough to matter, at any stopping time.
    pub fn crossed(&self) -> bool {
        self.past_tolerance && self.log_bf >= self.threshold
    }
}

/// Prior weight on a change at the release (warm-up's end); the rest is
/// spread evenly over the window's later steps.
const AT_RELEASE: f64 = 0.5;

/// Log likelihood ratio of one step for odds ratio `theta` (0 for a step with no information).
fn step_llr(s: &StepEvents, theta: f64) -> f64 {
    if s.total <= 0.0 || s.share <= 0.0 || s.share >= 1.0 {
        return 0.0;
    }
    let q = s.share;
    let qt = theta * q / (theta * q + 1.0 - q);
    s.canary * (qt / q).ln() + (s.total - s.canary) * ((1.0 - qt) / (1.0 - q)).ln()
}

/// `ln(e^a + e^b)` without overflow.
fn ln_add(a: f64, b: f64) -> f64 {
    let top = a.max(b);
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + ((a - top).exp() + (b - top).exp()).ln()
}

/// Natural log of the e-value `E_t` over `steps` (the module's formula),
/// each step's log-likelihood ratio tempered by `dispersion` (≥ 1); `looks`
/// is `N`, the steps the window plans after warm-up (later steps open no new change point).
pub fn log_bf(steps: &[StepEvents], dispersion: f64, looks: usize) -> f64 {
    let later = ((1.0 - AT_RELEASE) / looks.max(1) as f64).ln();
    let per_theta: Vec<f64> = THETAS
        .iter()
        .zip(THETA_WEIGHTS)
        .map(|(&theta, w)| {
            // ln Π L_j since the release, and ln R_t (no change point yet: R_0 = 0).
            let (mut since_release, mut since_change) = (0.0, f64::NEG_INFINITY);
            for (t, s) in steps.iter().enumerate() {
                let l = step_llr(s, theta) / dispersion.max(1.0);
                since_release += l;
                let opened = if t < looks { ln_add(since_change, 0.0) } else { since_change };
                since_change = l + opened;
            }
            w.ln() + ln_add(AT_RELEASE.ln() + since_release, later + since_change)
        })
        .collect();
    ln_add_all(&per_theta)
}

/// The most likely change point: the `k` (steps before the change) whose
/// term of the mixture weighs most, over the steps `looks` lets open one.
pub fn change_point(steps: &[StepEvents], dispersion: f64, looks: usize) -> usize {
    // ln Π_{j ≤ k} L_j(θ) for every k (k = 0: nothing yet), per θ.
    let prefix: Vec<[f64; THETAS.len()]> = std::iter::once([0.0; THETAS.len()])
        .chain(steps.iter().scan([0.0; THETAS.len()], |sum, s| {
            for (acc, &theta) in sum.iter_mut().zip(&THETAS) {
                *acc += step_llr(s, theta) / dispersion.max(1.0);
            }
            Some(*sum)
        }))
        .collect();
    let last = prefix[steps.len()];
    let weight = |k: usize| {
        let prior = change_prior(k, looks);
        let mut terms = last;
        for ((t, p), w) in terms.iter_mut().zip(&prefix[k]).zip(THETA_WEIGHTS) {
            *t += w.ln() - p;
        }
        prior + ln_add_all(&terms)
    };
    let open = steps.len().min(looks.max(1));
    (0..open)
        .map(|k| (k, weight(k)))
        .fold((0, f64::NEG_INFINITY), |best, (k, w)| if w > best.1 { (k, w) } else { best })
        .0
}

/// Prior variances of a shift in noise units (`δ = μ/σ ~ N(0, g)`), weighed
/// equally: shifts of about half, one and two noise SDs per step.
const SHIFT_PRIOR_VARIANCES: [f64; 3] = [0.25, 1.0, 4.0];

/// A continuous metric's accumulated evidence against a concurrent baseline
/// (the shift e-detector), for a human to check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShiftEvidence {
    /// Natural log of the e-value, mixed over the shift and the change point;
    /// [`NO_RISE`] when no stretch ending now rose at all (the e-value is 0).
    pub log_e: f64,
    /// `ln(1/α)` for this test's share of the error budget.
    pub threshold: f64,
    /// Median canary since the change, over at least the shortest window (the
    /// shortest window ending now until the evidence crosses), metric's unit.
    pub canary: f64,
    /// Median baseline over the same steps, metric's unit.
    pub baseline: f64,
    /// Median harmful paired difference over the same steps, metric's unit.
    pub shift: f64,
    /// Smallest shift that counts as harmful at that baseline, metric's unit.
    pub tolerance: f64,
    /// Where the evidence puts the change, in steps judged after warm-up
    /// (0: at the release); located once the evidence has crossed, 0 before.
    pub changed_after_steps: usize,
}

impl ShiftEvidence {
    /// Past the threshold and the tolerance: the canary is worse, by enough
    /// to matter, at any stopping time.
    pub fn crossed(&self) -> bool {
        self.log_e >= self.threshold && self.shift > self.tolerance
    }
}

/// The shift e-detector over paired differences `x` (harmful direction
/// positive), in a window of `looks` planned steps: `(ln E_t, the most
/// likely change point)`.
///
/// No noise level is assumed or estimated: with Gaussian steps of unknown
/// `σ`, the Bayes factor for "from step `k` on the mean is `δσ`" against
/// "mean 0", with the scale-invariant prior `1/σ` on `σ` (the right Haar
/// measure of the scale group) and `δ ~ N(0, g)`, is a function of the
/// maximal invariant only, so it is a test martingale in that filtration
/// (Pérez-Ortiz, Lardy, de Heide and Grünwald, *E-statistics, group
/// invariance and anytime-valid testing*, 2024). Integrated in closed form,
/// with `n` steps, `m = n − k` after the change, `P` their sum and `S` the
/// sum of all squares:
///
/// `BF_k = (1 + m·g)^(−1/2) · (1 − g·P² / ((1 + m·g)·S))^(−n/2)`,
///
/// which is 1 until a step follows `k`. The change point is mixed as in
/// [`log_bf`] (half the weight at the release, half spread over the window's
/// steps) and `g` over [`SHIFT_PRIOR_VARIANCES`], so Ville's inequality
/// bounds the chance of ever crossing `1/α` by `α` however often it is read.
/// Only a rise counts (`P > 0`): the one-sided statistic is at most the
/// two-sided one. The healthy steps before a later change tell the noise's
/// scale, which is why a fault after them is caught in a few steps.
pub fn shift_log_e(x: &[f64], looks: usize) -> (f64, usize) {
    let (n, open) = (x.len(), x.len().min(looks.max(1)));
    if open == 0 {
        return (AT_RELEASE.ln(), 0);
    }
    let squares: f64 = x.iter().map(|v| v * v).sum();
    // ln(prior · BF_k) for each change point k the window opens, from the last down.
    let mut after: f64 = x[open..].iter().sum();
    let mut terms = vec![0.0; open];
    for k in (0..open).rev() {
        after += x[k];
        terms[k] = change_prior(k, looks) + invariant_log_bf(after, (n - k) as f64, squares, n as f64);
    }
    let best = (0..open).fold(0, |b, k| if terms[k] > terms[b] { k } else { b });
    // The change points not yet opened count 1 each in the martingale, not in the statistic.
    (ln_add_all(&terms).max(NO_RISE), best)
}

/// `ln E_t` when the e-value is 0 (no stretch ending now rose): finite, so
/// a finding keeps a number JSON can hold, far below any threshold.
pub const NO_RISE: f64 = -700.0;

/// `ln BF_k` mixed over [`SHIFT_PRIOR_VARIANCES`]: `after` is the sum of the
/// `m` steps since the change, `squares` the sum of all `n` squares.
fn invariant_log_bf(after: f64, m: f64, squares: f64, n: f64) -> f64 {
    if after <= 0.0 || squares <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let per_g = SHIFT_PRIOR_VARIANCES.map(|g| {
        let explained = (g * after * after / ((1.0 + m * g) * squares)).min(1.0 - 1e-15);
        -0.5 * (1.0 + m * g).ln() - 0.5 * n * (-explained).ln_1p()
    });
    ln_add_all(&per_g) - (per_g.len() as f64).ln()
}

/// The prior weight, as a log, of a change `k` steps after warm-up: the
/// release's half plus its share of the half spread over the `looks` steps.
fn change_prior(k: usize, looks: usize) -> f64 {
    let later = ((1.0 - AT_RELEASE) / looks.max(1) as f64).ln();
    if k == 0 { ln_add(AT_RELEASE.ln(), later) } else { later }
}

/// `ln Σ e^x` over `xs` without overflow, shifted by the largest term (one
/// exponential a term).
fn ln_add_all(xs: &[f64]) -> f64 {
    let top = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + xs.iter().map(|x| (x - top).exp()).sum::<f64>().ln()
}

/// The evidence over `steps` of a window of `looks` planned steps, at error
/// budget `alpha`; `past_tolerance(k)` says whether the pooled rise over
/// `steps[k..]` is past the practical tolerance, asked of the most likely
/// change point once the evidence has crossed (of the release before).
pub fn evidence(
    steps: &[StepEvents],
    (dispersion, looks): (f64, usize),
    alpha: f64,
    past_tolerance: impl Fn(usize) -> bool,
) -> SequentialEvidence {
    let (log_bf, threshold) = (log_bf(steps, dispersion, looks), (1.0 / alpha).ln());
    // Located only once it can matter: below the threshold the metric passes
    // whatever the tolerance says, and most ticks of most releases are there.
    let k = if log_bf >= threshold { change_point(steps, dispersion, looks) } else { 0 };
    let since = steps.get(k..).unwrap_or_default();
    SequentialEvidence {
        past_tolerance: past_tolerance(k),
        log_bf,
        threshold,
        canary_events: since.iter().map(|s| s.canary).sum(),
        expected_events: since.iter().map(|s| s.total * s.share).sum(),
        changed_after_steps: k,
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
        // Python, by the formula term by term (every change point's product
        // written out, not the recursion), with the binomial pmf from lgamma and
        //   lr(θ) = pmf(c, n, θq/(θq+1-q)) / pmf(c, n, q):
        //   log(Σ_θ w_θ·(½·Π lr + 1/(2N)·Σ_k Π_{j>k} lr)), θ in [1.5, 2, 3, 5, 10, 30, 100],
        //   w = [0.19] × 5 + [0.025] × 2. (With the earlier five equal weights the
        //   same script gives the earlier constants, which SciPy 1.17 had confirmed.)
        let one = [StepEvents { canary: 10.0, total: 40.0, share: 0.1 }];
        assert!(close(log_bf(&one, 1.0, 10), GOLDEN_ONE, 1e-9), "{}", log_bf(&one, 1.0, 10));
        // Two steps of different shares multiply their likelihood ratios per θ.
        let two =
            [StepEvents { canary: 3.0, total: 10.0, share: 0.05 }, StepEvents { canary: 2.0, total: 30.0, share: 0.2 }];
        assert!(close(log_bf(&two, 1.0, 10), GOLDEN_TWO, 1e-9), "{}", log_bf(&two, 1.0, 10));
        // A window of one planned step opens no later change point: the plain
        // mixture over θ from the release.
        assert!(close(log_bf(&two, 1.0, 1), GOLDEN_FROM_RELEASE, 1e-9), "{}", log_bf(&two, 1.0, 1));
        // Quiet steps, then a burst: the later change points carry it.
        let quiet = StepEvents { canary: 0.0, total: 20.0, share: 0.1 };
        let three = [quiet, quiet, StepEvents { canary: 6.0, total: 20.0, share: 0.1 }];
        assert!(close(log_bf(&three, 1.0, 30), GOLDEN_THREE, 1e-9), "{}", log_bf(&three, 1.0, 30));
    }

    const GOLDEN_ONE: f64 = 2.1842338592397517;
    const GOLDEN_TWO: f64 = -3.079782265073247;
    const GOLDEN_FROM_RELEASE: f64 = -2.512617855908372;
    const GOLDEN_THREE: f64 = -1.3298817347001504;

    #[test]
    fn an_error_the_baseline_never_shows_is_conclusive_after_four_events_at_a_two_percent_share() {
        // One canary event a step, none on the baseline, the canary taking 2 % of
        // the traffic: each event is worth ln(θ/(θq+1−q)) — 2.1 at θ = 10, 3.5 at
        // θ = 100 — so the extreme ratios' small weight decides how soon it is
        // conclusive (ln(1/α) at 0.005 split over 50 templates: 9.2).
        let threshold = (50.0f64 / 0.005).ln();
        let new_error = StepEvents { canary: 1.0, total: 1.0, share: 0.02 };
        assert!(log_bf(&[new_error; 4], 1.0, 170) >= threshold, "{}", log_bf(&[new_error; 4], 1.0, 170));
        // Three are not enough at any ratio: the most they can say is 3·ln(1/q) − ln 2 = 11.0
        // before the prior's cost, and the cost of ratios that extreme is ln 40.
        assert!(log_bf(&[new_error; 3], 1.0, 170) < threshold, "{}", log_bf(&[new_error; 3], 1.0, 170));
    }

    #[test]
    fn a_canary_with_no_events_gathers_no_evidence() {
        let s = [StepEvents { canary: 0.0, total: 50.0, share: 0.1 }; 20];
        assert!(log_bf(&s, 1.0, 180) < 0.5f64.ln());
        // Before any step: the prior's weight on a change at the release, and nothing else.
        assert!(close(log_bf(&[], 1.0, 180), 0.5f64.ln(), 1e-12));
    }

    /// Steps at which each of `runs` canaries first crossed at budget 0.005,
    /// counted from step `healthy` (the change), for windows of `looks` planned steps.
    fn delays_after_a_change(healthy: usize, looks: usize, runs: u64) -> Vec<usize> {
        (0..runs)
            .map(|seed| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let mut steps = Vec::new();
                for i in 0..400 {
                    // 3,000 requests a step, 10 % to the canary; both 0.2 % errors, then the canary's 0.4 %.
                    let p = if i < healthy { 0.002 } else { 0.004 };
                    let eb = Binomial::new(2700, 0.002).unwrap().sample(&mut rng) as f64;
                    let ec = Binomial::new(300, p).unwrap().sample(&mut rng) as f64;
                    steps.push(StepEvents { canary: ec, total: ec + eb, share: 0.1 });
                    if i >= healthy && evidence(&steps, (1.0, looks), 0.005, |_| true).crossed() {
                        return i + 1 - healthy;
                    }
                }
                usize::MAX
            })
            .collect()
    }

    #[test]
    fn healthy_steps_before_a_change_do_not_hold_its_detection_back() {
        // A fault that doubles the canary's errors 150 steps into a 180-step window. With only the
        // change at the release (a window of one planned step: the plain
        // mixture), the healthy stretch is a debt the fault must first repay.
        let mut late = delays_after_a_change(150, 180, 40);
        let mut from_release_only = delays_after_a_change(150, 1, 40);
        let mut at_release = delays_after_a_change(0, 180, 40);
        let median = |v: &mut Vec<usize>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let (late, old, first) = (median(&mut late), median(&mut from_release_only), median(&mut at_release));
        assert!(late * 3 < old * 2, "after 150 healthy steps: {late} steps, the plain mixture {old}");
        // A change later costs the spread prior's ln N, not the stretch before it.
        assert!(late <= first * 2, "after 150 healthy steps: {late} steps, at the release {first}");
    }

    #[test]
    fn the_change_point_lands_where_the_rate_changed() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let steps: Vec<StepEvents> = (0..160)
            .map(|i| {
                // 600 requests a step, 10 % to the canary; its errors from 0.2 % to 3 %.
                let p = if i < 100 { 0.002 } else { 0.03 };
                let eb = Binomial::new(540, 0.002).unwrap().sample(&mut rng) as f64;
                let ec = Binomial::new(60, p).unwrap().sample(&mut rng) as f64;
                StepEvents { canary: ec, total: ec + eb, share: 0.1 }
            })
            .collect();
        let k = change_point(&steps, 1.0, 180);
        assert!((90..=110).contains(&k), "{k}");
        // The tolerance is asked of the steps since that change, and the events counted from there.
        let ev = evidence(&steps, (1.0, 180), 0.005, |from| from == k);
        assert!(ev.past_tolerance && ev.changed_after_steps == k);
        assert_eq!(ev.canary_events, steps[k..].iter().map(|s| s.canary).sum::<f64>());
        // From the release on, the change is the release.
        assert_eq!(change_point(&steps[100..], 1.0, 180), 0);
        // Past the planned steps no later change point opens.
        assert_eq!(change_point(&steps, 1.0, 1), 0);
    }

    /// How many of `runs` healthy canaries (run `r` starts from `start(r)`)
    /// ever cross within `steps` steps, read at every step: `step` adds one
    /// step and says whether the evidence crossed.
    fn crossings<S>(
        (seed, runs, steps): (u64, usize, usize),
        start: impl Fn(usize) -> S,
        step: impl Fn(&mut S, &mut rand_chacha::ChaCha8Rng) -> bool,
    ) -> usize {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..runs)
            .filter(|&r| {
                let mut state = start(r);
                (0..steps).any(|_| step(&mut state, &mut rng))
            })
            .count()
    }

    #[test]
    fn under_the_null_it_crosses_at_most_alpha_of_the_time_while_watched_every_step() {
        // 2,000 healthy canaries watched for 180 steps each, checked at every
        // step: Ville's inequality allows at most α = 0.05 to ever cross.
        let (alpha, runs) = (0.05, 2000);
        let crossed = crossings(
            (3, runs, 180),
            |_| Vec::new(),
            |steps, rng| {
                let total = Binomial::new(60, 0.01).unwrap().sample(rng) as f64;
                let canary = Binomial::new(total as u64, 0.1).unwrap().sample(rng) as f64;
                steps.push(StepEvents { canary, total, share: 0.1 });
                evidence(steps, (1.0, 180), alpha, |_| true).crossed()
            },
        );
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
        let ev = evidence(&steps, (1.0, 120), 0.005, |_| true);
        assert!(ev.crossed(), "{ev:?}");
        assert!(!SequentialEvidence { past_tolerance: false, ..ev }.crossed());
    }

    #[test]
    fn the_shift_detector_matches_quadrature_and_is_free_of_the_unit() {
        // Python, the mixture by the formula term by term; each `BF_k` of the
        // formula was checked (SciPy 1.17) against the Bayes factor integrated
        // numerically, `dblquad` over δ ~ N(0, g) and σ with prior 1/σ, to 1e-9.
        let x = [0.3, -0.5, 1.1, 0.2, 1.7, 2.1];
        assert!(close(shift_log_e(&x, 10).0, GOLDEN_SHIFT_10, 1e-9), "{}", shift_log_e(&x, 10).0);
        assert!(close(shift_log_e(&x, 3).0, GOLDEN_SHIFT_3, 1e-9), "{}", shift_log_e(&x, 3).0);
        // The same steps in another unit: the same evidence, no noise level assumed.
        let scaled: Vec<f64> = x.iter().map(|v| v * 1000.0).collect();
        assert!(close(shift_log_e(&scaled, 10).0, GOLDEN_SHIFT_10, 1e-9));
        // A fall is no evidence of a rise.
        let fall: Vec<f64> = x.iter().map(|v| -v).collect();
        assert_eq!(shift_log_e(&fall, 10).0, NO_RISE);
    }

    const GOLDEN_SHIFT_10: f64 = 0.5715301754450707;
    const GOLDEN_SHIFT_3: f64 = 0.7814297579496001;

    #[test]
    fn the_shift_detector_under_the_null_crosses_at_most_alpha_whatever_the_noise_scale() {
        // 1,000 healthy canaries, Gaussian paired differences of SD 0.001 to
        // 1,000, 120 steps each, read at every step: Ville allows at most α.
        let (alpha, runs) = (0.05f64, 1000);
        let start = |r: usize| (rand_distr::Normal::new(0.0, 10f64.powi(r as i32 % 7 - 3)).unwrap(), Vec::new());
        let crossed = crossings((11, runs, 120), start, |(normal, x), rng| {
            x.push(normal.sample(rng));
            shift_log_e(x, 120).0 >= (1.0 / alpha).ln()
        });
        assert!((crossed as f64) < alpha * runs as f64, "{crossed} of {runs}");
    }

    #[test]
    fn a_shift_after_healthy_steps_is_caught_in_a_few_and_located() {
        // A shift of one noise SD from step 100 of a 180-step window: the
        // healthy steps before it tell the noise's scale.
        let mut delays = Vec::new();
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let normal = rand_distr::Normal::new(0.0, 2.0).unwrap();
            let mut x = Vec::new();
            for i in 0..180 {
                x.push(normal.sample(&mut rng) + if i >= 100 { 2.0 } else { 0.0 });
                let (log_e, k) = shift_log_e(&x, 180);
                if log_e >= (1.0f64 / 0.005).ln() {
                    assert!(i >= 100, "crossed at step {i}, before the shift");
                    assert!((90..=110).contains(&k) || i - 100 < 10, "change point {k}");
                    delays.push(i + 1 - 100);
                    break;
                }
            }
        }
        delays.sort_unstable();
        assert_eq!(delays.len(), 20, "{delays:?}");
        // About what the evidence allows: ln(2N/α) ≈ 11.2 nats at ½δ² = 0.5 a step.
        assert!(delays[10] <= 30, "median delay {} steps", delays[10]);
    }
}
