//! Before/after comparison, for releases with no concurrent baseline
//! (`baseline_kind` = `preceding` or `seasonal`): after a blue/green switch,
//! a rolling update or a config push nothing old serves any more, so the
//! canary is compared with the service's own past.
//!
//! Samples of one series in time are not independent: a metric that drifts
//! or wanders gives a window mean far more spread than `σ/√w` — the reason
//! an i.i.d. test raises false alarms on real KPIs. The past window (the
//! reference) is described by a slow AR(1) component plus independent noise,
//! fitted to its robust variogram ([`NoiseModel`]), and every window mean is
//! judged against the spread that model gives it, with Student's t on the
//! reference's effective sample size — or against the spread of the
//! reference's own window medians when that is wider. Same error budget,
//! tolerance, consecutive looks and excursion rule as the paired test.
//!
//! - `preceding`: each recent canary window against the whole reference's level.
//! - `seasonal`: each recent canary window against the same steps one period
//!   earlier (the time-of-day shape cancels), both sides carrying the model's noise.

use super::context::{Context, EXCURSION_SIGMAS, Evidence, tolerance};
use super::stats::{median, step_jump};
use crate::signals::{BaselineKind, MetricSeries, Traffic};

/// Fewest reference samples to fit the model.
const MIN_REFERENCE: usize = 6;
/// Coefficients the slow component may have, per step: a grid, because the
/// fit is a two-parameter least squares for each and the best is kept.
const PHI_GRID: [f64; 13] = [0.0, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995];
/// Lags of the variogram, in steps (Fibonacci: dense where the curve bends).
const LAGS: [usize; 11] = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144];

/// The reference window's noise: a slow AR(1) component (load that wanders,
/// coefficient `rho` per step) plus independent measurement noise — the
/// simplest model that fits both a jittery scrape and a level that drifts.
/// Fitted to the robust variogram `γ(k) = ½·(MAD-σ of x_{t+k} − x_t)²`,
/// which for this model is `noise + wander·(1 − ρ^k)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseModel {
    /// Median of the reference, in the metric's unit.
    pub level: f64,
    /// Variance of the independent part, in the unit squared.
    pub noise: f64,
    /// Variance of the slow AR(1) part, in the unit squared.
    pub wander: f64,
    /// Coefficient of the slow part per step.
    pub rho: f64,
    /// Reference samples the model was fitted on.
    pub n: usize,
    /// Variance of a step's blips where the MAD says "no noise" (more than
    /// half the steps unchanged: a metric at 0 with sparse blips, or one
    /// quantised to a few values), from the mean absolute step difference
    /// (see [`NoiseModel::excursion_variance`]); 0 otherwise.
    pub blips: f64,
}

impl NoiseModel {
    /// Fit on `x` (missing samples skipped for the level; a lag's differences
    /// only between present samples). `None` below `MIN_REFERENCE` samples.
    pub fn fit(x: &[Option<f64>]) -> Option<NoiseModel> {
        let mut values: Vec<f64> = x.iter().flatten().copied().filter(|v| v.is_finite()).collect();
        if values.len() < MIN_REFERENCE {
            return None;
        }
        let level = median(&mut values)?;
        let gamma: Vec<(f64, f64)> = LAGS
            .iter()
            .filter(|&&k| k == 1 || k * 3 <= x.len())
            .filter_map(|&k| {
                let d: Vec<f64> = x.iter().zip(&x[k..]).filter_map(|(a, b)| Some(b.as_ref()? - a.as_ref()?)).collect();
                if d.len() < 3 {
                    return None;
                }
                let s = super::stats::mad_sigma(&d)?;
                Some((k as f64, s * s / 2.0))
            })
            .collect();
        let (noise, wander, rho) = fit_variogram(&gamma);
        let blips = if noise + wander > 0.0 { 0.0 } else { blip_variance(x) };
        Some(NoiseModel { level, noise, wander, rho, n: values.len(), blips })
    }

    /// Marginal variance of one sample.
    pub fn variance(&self) -> f64 {
        self.noise + self.wander
    }

    /// The variance one step's excursion is measured against: the model's,
    /// or where that is 0 but the reference moves, its blips'. A limit of
    /// `tolerance + 4·0` would count every blip of a near-zero metric, and
    /// every step where the day before blipped and today did not.
    pub fn excursion_variance(&self) -> f64 {
        self.variance().max(self.blips)
    }

    /// Variance of the mean of `w` consecutive samples.
    pub fn var_mean(&self, w: usize) -> f64 {
        let w = w.max(1);
        (self.noise + self.wander * inflation(self.rho, w)) / w as f64
    }

    /// Covariance of the reference's mean with the mean of `w` samples
    /// starting `first + 1` steps after the reference's last one.
    fn cov_after(&self, first: usize, w: usize) -> f64 {
        if self.rho <= 0.0 || self.wander <= 0.0 {
            return 0.0;
        }
        let geometric = |from: usize, count: usize| {
            let start = self.rho.powi(from as i32);
            start * (1.0 - self.rho.powi(count as i32)) / (1.0 - self.rho)
        };
        self.wander * geometric(first + 1, w) * geometric(0, self.n) / (w.max(1) * self.n.max(1)) as f64
    }

    /// Independent samples the reference is worth.
    pub fn effective_n(&self) -> f64 {
        let v = self.variance();
        if v <= 0.0 {
            return self.n as f64;
        }
        (self.n as f64 * v / (self.noise + self.wander * inflation(self.rho, self.n))).max(1.0)
    }
}

/// Half the squared mean absolute step difference, scaled as a normal's
/// (`E|d| = σ_d·√(2/π)`, `σ² = σ_d²/2`): the fallback of a MAD that is 0
/// (Iglewicz and Hoaglin's modified z-score uses the mean absolute deviation there).
fn blip_variance(x: &[Option<f64>]) -> f64 {
    let d: Vec<f64> = x.windows(2).filter_map(|w| Some((w[1]? - w[0]?).abs())).filter(|d| d.is_finite()).collect();
    if d.is_empty() {
        return 0.0;
    }
    let mean_abs = d.iter().sum::<f64>() / d.len() as f64;
    // A normal's SD from its mean absolute deviation.
    (mean_abs * super::stats::SQRT_HALF_PI).powi(2) / 2.0
}

/// `Var(mean of w consecutive AR(1) samples) · w / σ²`: how much
/// autocorrelation inflates the variance of a mean (1 when `rho` = 0).
pub fn inflation(rho: f64, w: usize) -> f64 {
    let wf = w as f64;
    let mut sum = 0.0;
    let mut r = 1.0;
    for j in 1..w {
        r *= rho;
        if r < 1e-12 {
            break;
        }
        sum += (1.0 - j as f64 / wf) * r;
    }
    1.0 + 2.0 * sum
}

/// Least squares of `γ(k) ≈ noise + wander·(1 − ρ^k)` over the grid of ρ,
/// relative errors, both variances ≥ 0: `(noise, wander, rho)`.
fn fit_variogram(gamma: &[(f64, f64)]) -> (f64, f64, f64) {
    let scale = gamma.iter().map(|g| g.1).fold(0.0, f64::max);
    if scale <= 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let weight = |g: f64| 1.0 / g.max(scale * 1e-3).powi(2);
    let mut best = (f64::INFINITY, (gamma[0].1, 0.0, 0.0));
    for rho in PHI_GRID {
        let h = |k: f64| 1.0 - rho.powf(k);
        // Weighted normal equations for (noise, wander).
        let (mut s11, mut s12, mut s22, mut t1, mut t2) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(k, g) in gamma {
            let w = weight(g);
            (s11, s12, s22, t1, t2) = (s11 + w, s12 + w * h(k), s22 + w * h(k) * h(k), t1 + w * g, t2 + w * h(k) * g);
        }
        let det = s11 * s22 - s12 * s12;
        let (mut a, mut b) = if det.abs() > 1e-300 {
            ((t1 * s22 - t2 * s12) / det, (s11 * t2 - s12 * t1) / det)
        } else {
            (t1 / s11, 0.0)
        };
        if a < 0.0 {
            (a, b) = (0.0, if s22 > 0.0 { (t2 / s22).max(0.0) } else { 0.0 });
        } else if b < 0.0 {
            (a, b) = (t1 / s11, 0.0);
        }
        let err: f64 = gamma.iter().map(|&(k, g)| weight(g) * (a + b * h(k) - g).powi(2)).sum();
        if err < best.0 - 1e-12 {
            best = (err, (a, b, if b > 0.0 { rho } else { 0.0 }));
        }
    }
    best.1
}

/// One canary step after warm-up with the value it is compared with.
#[derive(Clone, Copy)]
struct Point {
    i: usize,
    c: f64,
    /// The same step one period earlier (`seasonal`); the reference level otherwise.
    expected: f64,
    nc: f64,
}

/// The before/after comparison for one metric, fitted once per tick.
pub(crate) struct History {
    pub model: NoiseModel,
    kind: BaselineKind,
    points: Vec<Point>,
    /// Reference samples in the harmful direction beyond the excursion limit, per direction.
    reference_excursions: [usize; 2],
    /// The reference's fit: its window medians' spread and drift, by window length.
    fit: std::rc::Rc<ReferenceFit>,
}

impl History {
    /// Build from the observed series; `None` when the reference is too short
    /// or the canary has no sample after warm-up.
    pub fn new(ctx: &Context, m: &MetricSeries, traffic: Option<&Traffic>, ratio: bool, n: usize) -> Option<History> {
        // A preceding or seasonal reference lies wholly in the past: all of it is known at t = 0.
        let fit = reference_fit(&m.baseline, &ctx.windows)?;
        let mut model = fit.model;
        if ratio {
            model.noise = model.noise.max(binomial_sigma(model.level, traffic).powi(2));
            // A ratio's steps are counts: one error is an event the excursion rule may count.
            model.blips = 0.0;
        }
        let points = (ctx.warmup_steps..n.min(m.canary.len()))
            .filter_map(|i| {
                let c = m.canary[i].filter(|v| v.is_finite())?;
                let expected = match ctx.baseline_kind {
                    BaselineKind::Seasonal => m.baseline.get(i).copied().flatten().filter(|v| v.is_finite())?,
                    _ => model.level,
                };
                let nc = traffic.and_then(|t| t.canary.get(i)).map_or(0.0, |&v| v as f64);
                (!ratio || nc >= 1.0).then_some(Point { i, c, expected, nc })
            })
            .collect::<Vec<_>>();
        if points.is_empty() {
            return None;
        }
        let mut h = History { model, kind: ctx.baseline_kind, points, reference_excursions: [0, 0], fit };
        h.reference_excursions = h.count_reference(ctx, m, ratio);
        Some(h)
    }

    pub fn samples(&self) -> usize {
        self.points.len()
    }

    /// The canary's departures from what was expected, by step: the trend test's input.
    pub fn differences(&self) -> Vec<(usize, f64)> {
        self.points.iter().map(|p| (p.i, p.c - p.expected)).collect()
    }

    pub fn canary_requests(&self) -> f64 {
        self.points.iter().map(|p| p.nc).sum()
    }

    /// Variance of a window's shift. Seasonal: two independent days, each
    /// with the model's noise. Preceding: the window's mean against the
    /// reference's, less their covariance — a slow wander carries the level
    /// across the switch, so a window right after it is compared more
    /// closely than one an hour later.
    fn var_shift(&self, first: usize, w: usize) -> f64 {
        match self.kind {
            BaselineKind::Seasonal => 2.0 * self.model.var_mean(w),
            _ => {
                let v =
                    self.model.var_mean(w) + self.model.var_mean(self.model.n) - 2.0 * self.model.cov_after(first, w);
                v.max(0.0)
            }
        }
    }

    /// The standard error of a `w`-sample window's shift (the `window`
    /// being filled, `first` its first canary step): the model's, or the
    /// spread of the reference's own window medians about its level when
    /// that is wider — a history whose level moves by itself (a regime change
    /// the AR(1) model does not describe) makes a move after the release less
    /// surprising. With the window before, that spread also grows with the
    /// distance from the reference ([`Drift`]): an hour that wanders is a weaker
    /// yardstick for the hour after it than for its own steps.
    fn se(&self, first: usize, w: usize, window: usize) -> f64 {
        // Of the window's median: √(π/2) times its mean's.
        let model = super::stats::SQRT_HALF_PI * self.var_shift(first, w).sqrt();
        // A window still filling is judged against its full length's spread.
        let windows = self.fit.medians.get(&window).copied().unwrap_or(0.0);
        let spread = match (self.kind, self.fit.drift.get(&window)) {
            (BaselineKind::Seasonal, _) => std::f64::consts::SQRT_2 * windows,
            (_, None) => windows,
            (_, Some(drift)) => drift.spread(windows, first, w),
        };
        model.max(spread)
    }

    /// The strongest window's evidence among the steps ended by `end`, direction `s`.
    pub fn assess(&self, ctx: &Context, m: &MetricSeries, ratio: bool, end: usize, s: f64) -> Option<Evidence> {
        let df = (self.model.effective_n() - 1.0).max(1.0);
        let crit = ctx.t_crit(df);
        let mut best: Option<Evidence> = None;
        for &w in &ctx.windows {
            let recent: Vec<Point> = self.points.iter().copied().filter(|p| p.i < end && p.i + w >= end).collect();
            if recent.len() < ctx.cfg.min_window_samples {
                continue;
            }
            let (base, canary) = if ratio { pooled(&recent) } else { medians(&recent)? };
            let effect = s * (canary - base);
            let se = self.se(recent[0].i, recent.len(), w);
            let z = super::stats::z_score(effect, se);
            let tol = tolerance(ctx, m, ratio, base);
            let flagged = effect > tol && z > crit;
            let ev = Evidence { flagged, base, canary, effect, z, crit, df, tol, window: w };
            if best.as_ref().is_none_or(|b| (ev.flagged, ev.z / ev.crit) > (b.flagged, b.z / b.crit)) {
                best = Some(ev);
            }
        }
        best
    }

    /// Single steps beyond `tolerance + 4σ` of what was expected, for
    /// `preceding` only in episodes that began abruptly ([`History::abrupt`]):
    /// (canary worse, the reference's own rate of such steps scaled to the
    /// canary's length for `preceding`, canary better for `seasonal`).
    pub fn excursions(&self, ctx: &Context, m: &MetricSeries, ratio: bool, s: f64) -> (usize, usize) {
        let limit = |expected: f64| tolerance(ctx, m, ratio, expected) + EXCURSION_SIGMAS * self.spread();
        let beyond = |s: f64| move |p: &&Point| s * (p.c - p.expected) > limit(p.expected);
        match self.kind {
            BaselineKind::Seasonal => {
                (self.points.iter().filter(beyond(s)).count(), self.points.iter().filter(beyond(-s)).count())
            }
            _ => {
                let at = m.baseline.len();
                let steps = self.points.iter().filter(beyond(s)).map(|p| at + p.i);
                let worse = self.in_abrupt_episodes(m, s, (self.jump_limit(ctx, m, ratio), at), steps);
                let own = self.reference_excursions[usize::from(s < 0.0)] as f64;
                (worse, (own * self.points.len() as f64 / self.model.n as f64).ceil() as usize)
            }
        }
    }

    /// How far one step must jump to start an abrupt episode: tolerance plus
    /// [`EXCURSION_SIGMAS`] of a jump's own spread ([`History::jump_spread`]).
    fn jump_limit(&self, ctx: &Context, m: &MetricSeries, ratio: bool) -> f64 {
        tolerance(ctx, m, ratio, self.model.level) + EXCURSION_SIGMAS * self.jump_spread()
    }

    /// How many of `steps` (ascending indices of the `preceding` timeline:
    /// the reference's steps, then the canary's) lie in an abrupt episode in
    /// direction `s`. An episode is a stretch of
    /// steps on the harmful side of the level (a missing step does not end
    /// it); it is abrupt from the first of its steps that jumps
    /// ([`step_jump`]) past `jump_limit`, or has too little before it to
    /// measure a jump. Only jumps at or after step `since` count (the release,
    /// for the canary's steps: a shift the hour before already made, and the
    /// canary only carries on, is not the release's doing). A level that
    /// wanders out of its hour does so step by step and is not counted; a
    /// fault or a noisy blip arrives in one step, and a level shift carries
    /// its jump through the episode after it.
    /// Without this a wandering real KPI fails by excursions about as often
    /// as a faulty one (docs/judge.md). Not for `seasonal`: its timeline
    /// holds nothing of the hour before the release, so where an episode
    /// starts cannot be seen. The timeline is built, and jumps computed,
    /// only for a tick with one of `steps`, in episodes that hold one: most
    /// ticks have none.
    fn in_abrupt_episodes(
        &self,
        m: &MetricSeries,
        s: f64,
        (jump_limit, since): (f64, usize),
        steps: impl Iterator<Item = usize>,
    ) -> usize {
        let mut steps = steps.peekable();
        if steps.peek().is_none() {
            return 0;
        }
        let level = self.model.level;
        let d: Vec<Option<f64>> =
            m.baseline.iter().chain(&m.canary).map(|v| v.filter(|v| v.is_finite()).map(|v| v - level)).collect();
        let harmful = |k: usize| d[k].is_none_or(|v| s * v > 0.0);
        let jumps = |k: usize| k >= since && d[k].is_some() && step_jump(&d, k).is_none_or(|j| s * j > jump_limit);
        // The episode examined last: steps up to `upto` checked, and whether it turned abrupt by then.
        let (mut count, mut last) = (0, None::<(usize, bool)>);
        for at in steps {
            let (from, abrupt) = match last {
                Some((upto, abrupt)) if upto < at && (upto + 1..=at).all(harmful) => (upto + 1, abrupt),
                _ => ((0..at).rev().find(|&k| !harmful(k)).map_or(0, |k| k + 1), false),
            };
            let abrupt = abrupt || (from..=at).any(jumps);
            last = Some((at, abrupt));
            count += usize::from(abrupt);
        }
        count
    }

    /// The spread of a one-step jump ([`step_jump`]: a step less the median
    /// of the five before it) under the model: the noise of the step and of
    /// that median (`π/2` over 5 samples), plus what the slow part moves in
    /// about three steps — far less than the marginal spread when the level
    /// wanders slowly, which is what lets a jump stand out.
    fn jump_spread(&self) -> f64 {
        let m = &self.model;
        (m.noise * (1.0 + std::f64::consts::FRAC_PI_2 / 5.0) + 2.0 * m.wander * (1.0 - m.rho.powi(3))).sqrt()
    }

    /// The spread of one step's difference from what was expected.
    fn spread(&self) -> f64 {
        match self.kind {
            BaselineKind::Seasonal => (2.0 * self.model.excursion_variance()).sqrt(),
            _ => self.model.excursion_variance().sqrt(),
        }
    }

    /// The reference's own excursions per direction, in abrupt episodes:
    /// `preceding` only (a seasonal comparison counts the canary's better
    /// steps instead, and its timeline holds no reference).
    fn count_reference(&self, ctx: &Context, m: &MetricSeries, ratio: bool) -> [usize; 2] {
        if self.kind == BaselineKind::Seasonal {
            return [0, 0];
        }
        let level = self.model.level;
        let limit = tolerance(ctx, m, ratio, level) + EXCURSION_SIGMAS * self.spread();
        let jump_limit = self.jump_limit(ctx, m, ratio);
        let count = |s: f64| {
            let beyond = m.baseline.iter().enumerate().filter(|(_, b)| b.is_some_and(|b| s * (b - level) > limit));
            self.in_abrupt_episodes(m, s, (jump_limit, 0), beyond.map(|(i, _)| i))
        };
        [count(1.0), count(-1.0)]
    }
}

/// What depends on the reference series alone: its noise model and the
/// spread of its window medians. Most of a before/after tick (the variogram
/// and the medians, ~85 % at 20 metrics × 360 samples), and the same at
/// every tick of a release, so it is memoised per thread.
#[derive(Debug, Clone, PartialEq)]
struct ReferenceFit {
    model: NoiseModel,
    medians: std::collections::BTreeMap<usize, f64>,
    /// The largest one-step jump, either way ([`step_jump`]): the joint-jump rule's yardstick.
    largest_jump: f64,
    /// How its window medians move apart with time, by window length.
    drift: std::collections::BTreeMap<usize, Drift>,
}

/// Fits kept per thread: enough for every metric of several releases a
/// worker thread alternates between; a miss only costs the fit.
const FIT_CACHE: usize = 128;

/// A memoised fit with the exact inputs it was made from.
struct CachedFit {
    key: u64,
    series: Vec<Option<f64>>,
    windows: Vec<usize>,
    fit: std::rc::Rc<ReferenceFit>,
}

thread_local! {
    static FITS: std::cell::RefCell<std::collections::VecDeque<CachedFit>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// The fit of `x` for `windows`, from the cache when the very same series
/// (compared whole: a hash only finds the candidate) was fitted before.
/// Pure in effect: the result is what [`fit_reference`] returns.
fn reference_fit(x: &[Option<f64>], windows: &[usize]) -> Option<std::rc::Rc<ReferenceFit>> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in x {
        v.map(f64::to_bits).hash(&mut h);
    }
    windows.hash(&mut h);
    let key = h.finish();
    let hit = FITS.with_borrow(|c| {
        c.iter()
            .find(|e| e.key == key && e.windows == windows && e.series.len() == x.len() && same(&e.series, x))
            .map(|e| e.fit.clone())
    });
    if hit.is_some() {
        return hit;
    }
    let fit = std::rc::Rc::new(fit_reference(x, windows)?);
    FITS.with_borrow_mut(|c| {
        if c.len() >= FIT_CACHE {
            c.pop_front();
        }
        c.push_back(CachedFit { key, series: x.to_vec(), windows: windows.to_vec(), fit: fit.clone() });
    });
    Some(fit)
}

/// The reference's level (median) and largest one-step jump, either way,
/// from the memoised fit; `None` when it is too short to fit.
pub(crate) fn reference_yardstick(x: &[Option<f64>], windows: &[usize]) -> Option<(f64, f64)> {
    reference_fit(x, windows).map(|f| (f.model.level, f.largest_jump))
}

/// Bitwise equality, so a NaN sample matches itself.
fn same(a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    a.iter().zip(b).all(|(p, q)| p.map(f64::to_bits) == q.map(f64::to_bits))
}

fn fit_reference(x: &[Option<f64>], windows: &[usize]) -> Option<ReferenceFit> {
    let model = NoiseModel::fit(x)?;
    let (mut medians, mut drift) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    for &w in windows {
        let of_windows = window_medians(x, w);
        medians.insert(w, rms_about(&of_windows, model.level));
        if let Some(d) = Drift::fit(&of_windows, x.len()) {
            drift.insert(w, d);
        }
    }
    let largest_jump = (0..x.len()).filter_map(|i| step_jump(x, i)).map(f64::abs).fold(0.0, f64::max);
    Some(ReferenceFit { model, medians, largest_jump, drift })
}

/// The medians of the reference's `w`-sample windows with at least half
/// their samples, by first step. Windows start every `w/4` steps:
/// overlapping windows repeat each other, and every start would cost a
/// median per step per fit.
fn window_medians(x: &[Option<f64>], w: usize) -> Vec<(usize, f64)> {
    if w == 0 || x.len() < w {
        return Vec::new();
    }
    x.windows(w)
        .enumerate()
        .step_by((w / 4).max(1))
        .filter_map(|(start, win)| {
            let mut v: Vec<f64> = win.iter().flatten().copied().filter(|v| v.is_finite()).collect();
            if v.len() * 2 < w {
                return None;
            }
            Some((start, median(&mut v)?))
        })
        .collect()
}

/// Root mean square of window medians about `level`; 0 when there are none.
fn rms_about(medians: &[(usize, f64)], level: f64) -> f64 {
    if medians.is_empty() {
        return 0.0;
    }
    (medians.iter().map(|(_, m)| (m - level).powi(2)).sum::<f64>() / medians.len() as f64).sqrt()
}

/// How far apart two of the reference's window medians lie, as a function
/// of the time between them: the variogram of its level. Flat when the
/// level only jitters; rising when it wanders (a random walk's rises
/// linearly, the intrinsic model assumed when it is carried past the
/// reference's own lags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Drift {
    /// Steps from the reference's middle to its end.
    half_reference: f64,
    /// Mean lag of the pairs it was fitted on, steps.
    mean_lag: f64,
    /// Growth of `(m_b − m_a)²` per step of lag, the metric's unit squared; ≥ 0.
    per_step: f64,
}

impl Drift {
    /// Least squares of `(m_b − m_a)² ≈ a + c·(b − a)` over every pair of
    /// a reference's window medians ([`window_medians`] of its `len` steps).
    /// `None` under three windows.
    fn fit(meds: &[(usize, f64)], len: usize) -> Option<Drift> {
        if meds.len() < 3 {
            return None;
        }
        let (mut n, mut sk, mut sd, mut skk, mut skd) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (i, a) in meds.iter().enumerate() {
            for b in &meds[i + 1..] {
                let (k, d) = ((b.0 - a.0) as f64, (b.1 - a.1).powi(2));
                (n, sk, sd, skk, skd) = (n + 1.0, sk + k, sd + d, skk + k * k, skd + k * d);
            }
        }
        let det = n * skk - sk * sk;
        if det.abs() < 1e-300 {
            return None;
        }
        Some(Drift {
            half_reference: (len / 2) as f64,
            mean_lag: sk / n,
            per_step: ((n * skd - sk * sd) / det).max(0.0),
        })
    }

    /// The spread about the reference's level of the median of a `w`-sample
    /// canary window whose first step is `first` (0 = the release):
    /// `windows` (the RMS of the reference's own window medians about it,
    /// which stands for its typical lag) widened by what the level's
    /// variogram adds from there to the window's middle (half of it: the
    /// reference's level is the fixed side). Never narrower.
    fn spread(&self, windows: f64, first: usize, w: usize) -> f64 {
        let lag = self.half_reference + (first + w / 2) as f64;
        (windows * windows + self.per_step * (lag - self.mean_lag).max(0.0) / 2.0).sqrt()
    }
}

/// Pooled ratios over a window: (expected, canary), request-weighted.
fn pooled(recent: &[Point]) -> (f64, f64) {
    let n: f64 = recent.iter().map(|p| p.nc).sum();
    let canary = recent.iter().map(|p| p.c * p.nc).sum::<f64>() / n;
    let base = recent.iter().map(|p| p.expected * p.nc).sum::<f64>() / n;
    (base, canary)
}

fn medians(recent: &[Point]) -> Option<(f64, f64)> {
    let mut e: Vec<f64> = recent.iter().map(|p| p.expected).collect();
    let mut c: Vec<f64> = recent.iter().map(|p| p.c).collect();
    Some((median(&mut e)?, median(&mut c)?))
}

/// The binomial spread of one step's ratio at `level`, for the canary's
/// typical step: a ratio over few requests cannot be steadier than that.
fn binomial_sigma(level: f64, traffic: Option<&Traffic>) -> f64 {
    let Some(t) = traffic else { return 0.0 };
    let steps: Vec<f64> = t.canary.iter().filter(|&&n| n > 0).map(|&n| n as f64).collect();
    if steps.is_empty() {
        return 0.0;
    }
    let mean = steps.iter().sum::<f64>() / steps.len() as f64;
    let p = level.clamp(0.0, 1.0);
    (p * (1.0 - p) / mean).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn inflation_matches_the_closed_form() {
        // Golden values computed independently with Python:
        //   f(rho, w) = 1 + 2/w * sum((w - j) * rho**j for j in range(1, w))
        assert!(close(inflation(0.0, 10), 1.0, 1e-12));
        assert!(close(inflation(0.5, 10), 2.600390625, 1e-9));
        assert!(close(inflation(0.9, 24), 12.098248323076543, 1e-9));
        assert!(close(inflation(0.95, 360), 36.88888890907293, 1e-6));
    }

    /// `x_t = a_t + e_t`, `a_t = rho·a_{t−1} + u_t`: a wandering level under measurement noise.
    fn simulate(n: usize, rho: f64, wander_sd: f64, noise_sd: f64, seed: u64) -> Vec<Option<f64>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (u, e) = (Normal::new(0.0, wander_sd).unwrap(), Normal::new(0.0, noise_sd.max(1e-12)).unwrap());
        let mut a = 0.0;
        (0..n)
            .map(|_| {
                a = rho * a + u.sample(&mut rng);
                Some(10.0 + a + e.sample(&mut rng))
            })
            .collect()
    }

    #[test]
    fn fit_recovers_a_pure_ar1() {
        // rho 0.8, innovations sd 1: stationary variance 1/(1 - 0.64) = 2.7778, no white noise.
        let m = NoiseModel::fit(&simulate(40_000, 0.8, 1.0, 0.0, 42)).unwrap();
        assert!((m.rho - 0.8).abs() <= 0.05, "{m:?}");
        assert!(close(m.variance(), 2.7778, 0.1), "{m:?}");
        assert!(m.noise < 0.2 * m.wander, "{m:?}");
    }

    #[test]
    fn fit_separates_a_slow_wander_from_scrape_noise() {
        // rho 0.95 with stationary wander variance 1 (innovation sd sqrt(1 - 0.95²)), noise variance 1.
        let x = simulate(40_000, 0.95, (1.0f64 - 0.95 * 0.95).sqrt(), 1.0, 7);
        let m = NoiseModel::fit(&x).unwrap();
        assert!((0.93..=0.97).contains(&m.rho), "{m:?}");
        assert!(close(m.noise, 1.0, 0.15) && close(m.wander, 1.0, 0.2), "{m:?}");
        // The variance of a 30-sample mean, from the true model: (1 + f(0.95, 30)) / 30.
        let truth = (1.0 + inflation(0.95, 30)) / 30.0;
        assert!(close(m.var_mean(30), truth, 0.2), "{} vs {truth}", m.var_mean(30));
        // A pure AR(1) fitted by its lag-one correlation alone sees rho ≈ 0.475
        // here and would put that variance at about a third of the truth.
        let naive = 2.0 * inflation(0.475, 30) / 30.0;
        assert!(m.var_mean(30) > 2.0 * naive, "{} vs {naive}", m.var_mean(30));
    }

    #[test]
    fn a_window_right_after_the_switch_is_closer_to_the_reference_than_one_later() {
        let m = NoiseModel { level: 0.0, noise: 0.0, wander: 1.0, rho: 0.99, n: 180, blips: 0.0 };
        assert!(m.cov_after(0, 6) > m.cov_after(100, 6));
        assert!(m.cov_after(0, 6) > 0.0);
        let independent = NoiseModel { rho: 0.0, ..m };
        assert_eq!(independent.cov_after(0, 6), 0.0);
    }

    #[test]
    fn a_memoised_fit_is_the_fit_of_exactly_that_series() {
        let x = simulate(360, 0.9, 1.0, 0.5, 3);
        let windows = [6, 12, 30, 60, 180];
        let first = reference_fit(&x, &windows).unwrap();
        assert_eq!(*first, fit_reference(&x, &windows).unwrap());
        assert!(std::rc::Rc::ptr_eq(&first, &reference_fit(&x, &windows).unwrap()), "the same series hits");
        // One sample changed, a sample missing, other windows: each its own fit, never the cached one.
        let mut changed = x.clone();
        changed[200] = changed[200].map(|v| v + 1e-9);
        let mut gap = x.clone();
        gap[17] = None;
        for (series, w) in [(&changed, &windows[..]), (&gap, &windows[..]), (&x, &windows[..3])] {
            assert_eq!(*reference_fit(series, w).unwrap(), fit_reference(series, w).unwrap());
        }
        assert!(!std::rc::Rc::ptr_eq(&first, &reference_fit(&changed, &windows).unwrap()));
    }

    #[test]
    fn a_constant_reference_has_no_noise() {
        let m = NoiseModel::fit(&[Some(5.0); 12]).unwrap();
        assert_eq!((m.level, m.noise, m.wander), (5.0, 0.0, 0.0));
        assert!(NoiseModel::fit(&[Some(5.0), None, Some(1.0)]).is_none());
    }
}
