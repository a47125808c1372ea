//! One metric at one tick: paired differences, windowed shift tests and
//! excursion counts, condensed into a [`Finding`].

use statrs::distribution::{ContinuousCDF, Normal};

use super::context::{Context, EXCURSION_SIGMAS, Evidence, tolerance};
use super::guard::{self, Breach, GuardInput};
use super::history::History;
use super::sequential::{SequentialEvidence, ShiftEvidence, StepEvents};
use super::stats::{binomial_upper_tail, mad_sigma, median, t_upper_p, z_score};
use super::trend::TrendEvidence;
use super::{Comparison, Finding, MethodChoice, MetricStatus};
use crate::signals::{BadDirection, BaselineKind, MetricSeries, Traffic, Unit};

/// A step where both sides have a sample (and, for ratios, traffic).
#[derive(Clone, Copy)]
struct Pair {
    i: usize,
    b: f64,
    c: f64,
    nb: f64,
    nc: f64,
}

// Probability below which a single step counts as implausible for a side.
const EXCURSION_P: f64 = 1e-3;

fn orient(dir: BadDirection) -> &'static [f64] {
    match dir {
        BadDirection::Up => &[1.0],
        BadDirection::Down => &[-1.0],
        BadDirection::Both => &[1.0, -1.0],
    }
}

/// Robust noise of the paired differences from successive differences:
/// `MAD(d_i − d_{i−1}) / √2`. A level shift touches one successive
/// difference only, so a fault does not inflate the noise it is judged against.
fn noise_scale(pairs: &[Pair]) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    let steps: Vec<f64> = pairs.windows(2).map(|w| (w[1].c - w[1].b) - (w[0].c - w[0].b)).collect();
    mad_sigma(&steps).map(|m| m / std::f64::consts::SQRT_2)
}

/// The window's noise pooled with a calibrated prior (relative to the
/// baseline's median level) weighing `NOISE_PRIOR_WEIGHT` samples: the
/// conjugate update of a normal variance, `(ν₀σ₀² + ν s²) / (ν₀ + ν)` on
/// `ν₀ + ν` degrees of freedom.
fn with_prior(used: &[Pair], sigma: f64, df: f64, prior: f64) -> (f64, f64) {
    let mut levels: Vec<f64> = used.iter().map(|p| p.b).collect();
    let Some(level) = median(&mut levels) else { return (sigma, df) };
    let s0 = prior * level.abs();
    let nu0 = super::NOISE_PRIOR_WEIGHT;
    (((nu0 * s0 * s0 + df * sigma * sigma) / (nu0 + df)).sqrt(), nu0 + df)
}

/// A recorded release's noise for one metric, as the paired test estimates
/// it over the steps from `from` on, relative to the baseline's median
/// level: what calibration learns as the metric's noise prior.
pub fn relative_noise(m: &MetricSeries, from: usize) -> Option<f64> {
    let pairs: Vec<Pair> = (from..m.canary.len().min(m.baseline.len()))
        .filter_map(|i| {
            let (b, c) = (m.baseline[i]?, m.canary[i]?);
            (b.is_finite() && c.is_finite()).then_some(Pair { i, b, c, nb: 0.0, nc: 0.0 })
        })
        .collect();
    let sigma = noise_scale(&pairs)?;
    let mut levels: Vec<f64> = pairs.iter().map(|p| p.b).collect();
    let level = median(&mut levels)?;
    (level.abs() > 0.0).then(|| sigma / level.abs())
}

/// Mean and variance of the canary's harmful events in one step, given the
/// step's total, if both sides shared one rate (the conditional binomial).
fn conditional_moments(p: &Pair, harm: &impl Fn(f64) -> f64) -> (f64, f64) {
    let total = (harm(p.c) * p.nc).round() + (harm(p.b) * p.nb).round();
    let share = p.nc / (p.nc + p.nb);
    (total * share, total * share * (1.0 - share))
}

/// Extra-binomial dispersion of a ratio metric: the median squared Pearson
/// residual over steps divided by the median of χ²₁ (0.4549), at least 1.
/// A median, so a fault in a minority of steps does not mask itself.
fn dispersion(pairs: &[Pair], harm: &impl Fn(f64) -> f64) -> f64 {
    let mut r2: Vec<f64> = pairs
        .iter()
        .filter_map(|p| {
            let (e, v) = conditional_moments(p, harm);
            let ec = (harm(p.c) * p.nc).round();
            (v > 0.0).then(|| (ec - e).powi(2) / v)
        })
        .collect();
    median(&mut r2).map_or(1.0, |m| (m / 0.4549).max(1.0))
}

/// Evidence from the pairs that ended by step `end` (exclusive), direction `s`.
fn assess(ctx: &Context, m: &MetricSeries, ratio: bool, pairs: &[Pair], end: usize, s: f64) -> Option<Evidence> {
    let used: Vec<Pair> = pairs.iter().copied().filter(|p| p.i < end).collect();
    let sigma = noise_scale(&used)?;
    let harm = |x: f64| if s > 0.0 { x } else { 1.0 - x };
    let dispersion = if ratio { dispersion(&used, &harm) } else { 1.0 };
    let df = (used.len() as f64 - 1.0).max(1.0);
    let (sigma, df) = match ctx.cfg.metrics.get(&m.spec.name).and_then(|o| o.noise_prior) {
        Some(prior) if !ratio => with_prior(&used, sigma, df, prior),
        _ => (sigma, df),
    };
    let crit_t = ctx.t_crit(df);
    let mut best: Option<Evidence> = None;
    for &w in &ctx.windows {
        let recent: Vec<Pair> = used.iter().copied().filter(|p| p.i + w >= end).collect();
        if recent.len() < ctx.cfg.min_window_samples {
            continue;
        }
        let k = recent.len() as f64;
        let ev = if ratio {
            // Counts of harmful events (errors; for a ratio that hurts when it falls, its complement).
            let (eb, nb) = recent.iter().fold((0.0, 0.0), |a, p| (a.0 + (harm(p.b) * p.nb).round(), a.1 + p.nb));
            let (ec, nc) = recent.iter().fold((0.0, 0.0), |a, p| (a.0 + (harm(p.c) * p.nc).round(), a.1 + p.nc));
            let (base, canary) = (eb / nb, ec / nc);
            let effect = canary - base;
            let tol = tolerance(ctx, m, true, harm(base));
            // Exact conditional test: given all harmful events, how surprising is the canary's share?
            let p = binomial_upper_tail(ec as u64, (ec + eb) as u64, nc / (nc + nb));
            let z_exact = Normal::standard().inverse_cdf((1.0 - p).clamp(1e-300, 1.0 - 1e-16));
            let crit = ctx.crit_normal;
            // The same test with its variance inflated by the observed extra-binomial
            // dispersion (retry storms and the like); both must agree.
            let (expected, var) = recent.iter().fold((0.0, 0.0), |a, p| {
                let (e, v) = conditional_moments(p, &harm);
                (a.0 + e, a.1 + v)
            });
            let z_disp = if var > 0.0 { (ec - expected) / (var * dispersion).sqrt() } else { z_exact };
            let flagged = effect > tol && p < ctx.alpha_look && z_disp > crit;
            let z = z_exact.min(z_disp);
            let (base, canary) = if s > 0.0 { (base, canary) } else { (1.0 - base, 1.0 - canary) };
            Evidence { flagged, base, canary, effect, z, crit, df: f64::INFINITY, tol, window: w }
        } else {
            let (base, canary, effect) = medians(&recent, s)?;
            // The standard error of a median, relative to a mean's.
            let se = super::stats::SQRT_HALF_PI * sigma / k.sqrt();
            let tol = tolerance(ctx, m, false, base);
            let z = z_score(effect, se);
            Evidence { flagged: effect > tol && z > crit_t, base, canary, effect, z, crit: crit_t, df, tol, window: w }
        };
        let better = match &best {
            None => true,
            Some(b) => (ev.flagged, ev.z / ev.crit) > (b.flagged, b.z / b.crit),
        };
        if better {
            best = Some(ev);
        }
    }
    best
}

/// Steps where one side alone is implausibly worse: (canary worse, baseline worse).
fn excursions(ctx: &Context, m: &MetricSeries, ratio: bool, pairs: &[Pair], s: f64) -> (usize, usize) {
    if pairs.is_empty() {
        return (0, 0);
    }
    let (mut up, mut down) = (0, 0);
    if ratio {
        // For a ratio that hurts when it falls, count its complement.
        let f = |x: f64| if s > 0.0 { x } else { 1.0 - x };
        let nb: f64 = pairs.iter().map(|p| p.nb).sum();
        let nc: f64 = pairs.iter().map(|p| p.nc).sum();
        let pooled_b = (pairs.iter().map(|p| f(p.b) * p.nb).sum::<f64>() / nb).max(0.5 / nb);
        let pooled_c = (pairs.iter().map(|p| f(p.c) * p.nc).sum::<f64>() / nc).max(0.5 / nc);
        for p in pairs {
            let (b, c) = (f(p.b), f(p.c));
            let tol = tolerance(ctx, m, true, b);
            let tail = |x: f64, n: f64, r: f64| binomial_upper_tail((x * n).round() as u64, n as u64, r);
            if c - b > tol && tail(c, p.nc, b.max(pooled_b)) < EXCURSION_P {
                up += 1;
            }
            if b - c > tol && tail(b, p.nb, c.max(pooled_c)) < EXCURSION_P {
                down += 1;
            }
        }
        return (up, down);
    }
    let mut d: Vec<f64> = pairs.iter().map(|p| s * (p.c - p.b)).collect();
    let sigma = noise_scale(pairs).unwrap_or(0.0);
    let mid = median(&mut d).unwrap_or(0.0);
    for p in pairs {
        let dev = s * (p.c - p.b) - mid;
        let limit = tolerance(ctx, m, false, p.b) + EXCURSION_SIGMAS * sigma;
        if dev > limit {
            up += 1;
        } else if -dev > limit {
            down += 1;
        }
    }
    (up, down)
}

// A baseline gap up to this many steps is bridged with the median of the
// baseline's last few real samples; canary gaps are never filled.
const BRIDGE_STEPS: usize = 12;
const BRIDGE_FROM: usize = 6;

fn collect_pairs(ctx: &Context, m: &MetricSeries, traffic: Option<&Traffic>, ratio: bool, n: usize) -> Vec<Pair> {
    let end = n.min(m.baseline.len()).min(m.canary.len());
    let mut recent_b: Vec<(usize, f64)> = Vec::new();
    let mut out = Vec::new();
    for i in 0..end {
        let b = match m.baseline[i] {
            Some(b) => {
                recent_b.push((i, b));
                if recent_b.len() > BRIDGE_FROM {
                    recent_b.remove(0);
                }
                Some(b)
            }
            None => match recent_b.last() {
                Some(&(last, _)) if i - last <= BRIDGE_STEPS => {
                    let mut vals: Vec<f64> = recent_b.iter().map(|&(_, v)| v).collect();
                    median(&mut vals)
                }
                _ => None,
            },
        };
        if i < ctx.warmup_steps {
            continue;
        }
        let (Some(b), Some(c)) = (b, m.canary[i]) else { continue };
        let (nb, nc) = match traffic {
            Some(t) if ratio => match (t.baseline.get(i), t.canary.get(i)) {
                (Some(&nb), Some(&nc)) => (nb as f64, nc as f64),
                _ => continue,
            },
            _ => (0.0, 0.0),
        };
        if ratio && (nb < 1.0 || nc < 1.0) {
            continue;
        }
        out.push(Pair { i, b, c, nb, nc });
    }
    out
}

/// Analyse one metric over the steps observed so far: the paired
/// comparison, then what it cannot see (the guard, a baseline that moved).
/// Guards only ever make a metric stricter: a failing metric stays failing.
pub(crate) fn analyse_metric(
    ctx: &Context,
    m: &MetricSeries,
    traffic: Option<&Traffic>,
    n: usize,
    complete: bool,
) -> Finding {
    let mut f = compare(ctx, m, traffic, n, complete);
    if f.status == MetricStatus::Ignored {
        return f;
    }
    let ratio = m.spec.is_request_ratio() && traffic.is_some();
    let x = GuardInput {
        series: m,
        traffic: if ratio { traffic } else { None },
        baseline_kind: ctx.baseline_kind,
        first: ctx.warmup_steps,
        n,
        step_s: ctx.step_s,
    };
    let spec = ctx.cfg.metrics.get(&m.spec.name).map(|o| o.guard_spec()).unwrap_or_default();
    f.guard = spec.guard().and_then(|g| guard::check(&g, &x));
    match f.guard.as_ref().map(|h| h.breach) {
        Some(Breach::Canary) => {
            f.status = MetricStatus::Failing;
            f.explanation = format!("{} — {}", guard_sentence(&f), f.explanation);
            return f;
        }
        Some(Breach::Shared) if f.status != MetricStatus::Failing => {
            f.status = MetricStatus::SharedBreach;
            f.explanation = format!("{}; holding for a human", guard_sentence(&f));
            return f;
        }
        _ => {}
    }
    if f.status != MetricStatus::Failing {
        f.baseline_shift = guard::baseline_shift(&x, |level| tolerance(ctx, m, ratio, level));
        if let Some(s) = &f.baseline_shift {
            f.status = MetricStatus::BaselineShifted;
            f.explanation = format!(
                "{}: BASELINE SHIFTED — the baseline itself moved from {} to {} during the window \
                 (beyond {} = {SHIFT}× tolerance); the comparison no longer says what the canary did; holding for a human",
                f.metric,
                fmt(s.before, &f.unit),
                fmt(s.after, &f.unit),
                fmt(s.threshold, &f.unit),
                SHIFT = guard::SHIFT_TOLERANCES,
            );
        }
    }
    f
}

/// "canary 6.10% > guard 5.00% for 60s (baseline 0.40%)", naming who breached.
fn guard_sentence(f: &Finding) -> String {
    let Some(h) = &f.guard else { return String::new() };
    let (op, limit) = match h.guard.limit {
        guard::Limit::Max(v) => (">", v),
        guard::Limit::Min(v) => ("<", v),
    };
    let baseline = h.baseline.map(|b| fmt(b, &f.unit)).unwrap_or_else(|| "no samples".into());
    let who = match h.breach {
        Breach::Canary => "FAILING (guard)",
        Breach::Shared => "SHARED BREACH (both versions past the guard: an incident, not the canary)",
    };
    format!(
        "{}: {who} — canary {} {op} guard {} for {}s (baseline {baseline}) at t={}s",
        f.metric,
        fmt(h.canary, &f.unit),
        fmt(limit, &f.unit),
        h.guard.for_s,
        h.at_s
    )
}

/// How the canary is compared at this tick: step by step with a concurrent
/// baseline, or before/after against the service's own past.
enum Method {
    Paired(Vec<Pair>),
    History(Box<History>),
}

impl Method {
    fn build(ctx: &Context, m: &MetricSeries, traffic: Option<&Traffic>, ratio: bool, n: usize) -> Option<Method> {
        match (ctx.baseline_kind, ctx.cfg.method) {
            (BaselineKind::Concurrent, _) | (_, MethodChoice::Paired) => {
                let pairs = collect_pairs(ctx, m, traffic, ratio, n);
                (!pairs.is_empty()).then_some(Method::Paired(pairs))
            }
            _ => History::new(ctx, m, traffic, ratio, n).map(|h| Method::History(Box::new(h))),
        }
    }

    fn samples(&self) -> usize {
        match self {
            Method::Paired(p) => p.len(),
            Method::History(h) => h.samples(),
        }
    }

    fn canary_requests(&self) -> f64 {
        match self {
            Method::Paired(p) => p.iter().map(|p| p.nc).sum(),
            Method::History(h) => h.canary_requests(),
        }
    }

    fn assess(&self, ctx: &Context, m: &MetricSeries, ratio: bool, end: usize, s: f64) -> Option<Evidence> {
        match self {
            Method::Paired(p) => assess(ctx, m, ratio, p, end, s),
            Method::History(h) => h.assess(ctx, m, ratio, end, s),
        }
    }

    fn excursions(&self, ctx: &Context, m: &MetricSeries, ratio: bool, s: f64) -> (usize, usize) {
        match self {
            Method::Paired(p) => excursions(ctx, m, ratio, p, s),
            Method::History(h) => h.excursions(ctx, m, ratio, s),
        }
    }

    fn comparison(&self) -> Comparison {
        match self {
            Method::Paired(_) => Comparison::Paired,
            Method::History(h) => Comparison::BeforeAfter { rho: h.model.rho, effective_n: h.model.effective_n() },
        }
    }
}

/// The comparison alone (paired or before/after, by `baseline_kind`).
fn compare(ctx: &Context, m: &MetricSeries, traffic: Option<&Traffic>, n: usize, complete: bool) -> Finding {
    let mut f = Finding::empty(&m.spec);
    if ctx.cfg.metrics.get(&m.spec.name).is_some_and(|o| o.ignore) {
        f.status = MetricStatus::Ignored;
        f.explanation = format!("{} is ignored by policy", f.metric);
        return f;
    }
    let ratio = m.spec.is_request_ratio() && traffic.is_some();
    let expected = n.saturating_sub(ctx.warmup_steps).max(1);
    let Some(method) = Method::build(ctx, m, traffic, ratio, n) else {
        f.explanation = if n <= ctx.warmup_steps {
            format!("{}: in warm-up, no samples judged yet", f.metric)
        } else if ctx.baseline_kind == BaselineKind::Concurrent {
            format!("{}: no paired samples (missing data on one side); inconclusive", f.metric)
        } else {
            format!("{}: too few samples in the earlier window or none since the release; inconclusive", f.metric)
        };
        return f;
    };
    f.samples = method.samples();
    f.coverage = f.samples as f64 / expected as f64;
    f.comparison = method.comparison();
    let Some(Strongest { ev, failing, persistent, exc, sequential, shift, trend }) =
        strongest(ctx, m, ratio, &method, n)
    else {
        f.status = MetricStatus::InsufficientData;
        f.explanation = format!("{}: {} samples, too few for a window", f.metric, f.samples);
        return f;
    };
    f.baseline = Some(ev.base);
    f.canary = Some(ev.canary);
    f.effect = Some(ev.effect);
    f.relative_effect = (ev.base.abs() > 0.0).then(|| ev.effect / ev.base.abs());
    f.z = Some(ev.z);
    f.critical = Some(ev.crit);
    f.confidence = Some(if ev.df.is_finite() { 1.0 - t_upper_p(ev.z, ev.df) } else { Normal::standard().cdf(ev.z) });
    f.tolerance = Some(ev.tol);
    f.window_s = Some(ev.window as u64 * u64::from(ctx.step_s));
    f.excursions = exc;
    f.sequential = sequential;
    f.shift = shift;
    f.trend = trend;
    let canary_requests = method.canary_requests();
    f.status = if failing {
        MetricStatus::Failing
    } else if ev.flagged {
        MetricStatus::Suspect
    } else if complete
        && (f.coverage < ctx.cfg.min_coverage || (ratio && canary_requests < ctx.cfg.min_canary_requests as f64))
    {
        MetricStatus::InsufficientData
    } else {
        MetricStatus::Ok
    };
    f.explanation = explain(&f, &ev, ctx, (canary_requests, ratio), persistent);
    f
}

/// The direction with the strongest evidence.
struct Strongest {
    ev: Evidence,
    failing: bool,
    /// Flagged by the windowed test at `consecutive_looks` looks in a row.
    persistent: bool,
    exc: (usize, usize),
    sequential: Option<SequentialEvidence>,
    shift: Option<ShiftEvidence>,
    trend: Option<TrendEvidence>,
}

fn strongest(ctx: &Context, m: &MetricSeries, ratio: bool, method: &Method, n: usize) -> Option<Strongest> {
    let looks = ctx.cfg.consecutive_looks;
    let mut chosen: Option<Strongest> = None;
    for &s in orient(m.spec.bad_direction) {
        let Some(now) = method.assess(ctx, m, ratio, n, s) else { continue };
        let persistent = now.flagged
            && (1..looks).all(|back| n >= back && method.assess(ctx, m, ratio, n - back, s).is_some_and(|e| e.flagged));
        let exc = method.excursions(ctx, m, ratio, s);
        let bursty = exc.0 >= ctx.cfg.excursions_to_fail && exc.0 > 3 * exc.1;
        let sequential = match method {
            Method::Paired(pairs) if ratio && ctx.cfg.method == MethodChoice::Auto => sequential(ctx, m, pairs, s),
            _ => None,
        };
        let shift = match method {
            Method::Paired(pairs) if !ratio && ctx.cfg.method == MethodChoice::Auto => {
                sequential_shift(ctx, m, pairs, s)
            }
            _ => None,
        };
        let trend = match method {
            _ if s < 0.0 || !runs_trend(ctx, m) => None,
            Method::Paired(pairs) => {
                let d: Vec<(usize, f64)> = pairs.iter().map(|p| (p.i, p.c - p.b)).collect();
                let mut base: Vec<f64> = pairs.iter().filter(|p| p.i < n).map(|p| p.b).collect();
                leak(ctx, m, &d, median(&mut base)?, n)
            }
            Method::History(h) => leak(ctx, m, &h.differences(), h.model.level, n),
        };
        let failing = persistent
            || bursty
            || sequential.is_some_and(|e| e.crossed())
            || shift.is_some_and(|e| e.crossed())
            || trend.is_some_and(|t| t.is_leak());
        let rank = (failing, now.flagged, now.z / now.crit);
        let replace = match &chosen {
            None => true,
            Some(c) => rank > (c.failing, c.ev.flagged, c.ev.z / c.ev.crit),
        };
        if replace {
            chosen = Some(Strongest { ev: now, failing, persistent, exc, sequential, shift, trend });
        }
    }
    chosen
}

/// The trend test runs on resource metrics: memory by unit, or any metric the policy names.
fn runs_trend(ctx: &Context, m: &MetricSeries) -> bool {
    let by_unit = matches!(m.spec.unit, Unit::Bytes | Unit::Megabytes);
    ctx.cfg.metrics.get(&m.spec.name).and_then(|o| o.trend).unwrap_or(by_unit)
}

/// The canary's growth relative to what it is compared with (`d` by step), at step `n`.
fn leak(ctx: &Context, m: &MetricSeries, d: &[(usize, f64)], level: f64, n: usize) -> Option<TrendEvidence> {
    let step = u64::from(ctx.step_s.max(1));
    let window = ctx.cfg.trend_window_s.div_ceil(step) as usize;
    let d: Vec<(usize, f64)> =
        d.iter().filter(|(i, _)| *i < n).map(|&(i, v)| (i.saturating_sub(ctx.warmup_steps), v)).collect();
    let tol = tolerance(ctx, m, false, level);
    let end = n.saturating_sub(ctx.warmup_steps);
    super::trend::trend(&d, end, window, ctx.step_s, ctx.cfg.leak_horizon_s, tol, ctx.crit_normal)
}

/// The sequential test over every step since warm-up, direction `s`; it
/// counts only when the pooled rise since its most likely change point is
/// past `rare_event_tolerance` (or the metric's own absolute tolerance) and
/// its relative tolerance.
fn sequential(ctx: &Context, m: &MetricSeries, pairs: &[Pair], s: f64) -> Option<SequentialEvidence> {
    let harm = |x: f64| if s > 0.0 { x } else { 1.0 - x };
    let steps: Vec<StepEvents> = pairs
        .iter()
        .map(|p| {
            let (ec, eb) = ((harm(p.c) * p.nc).round(), (harm(p.b) * p.nb).round());
            StepEvents { canary: ec, total: ec + eb, share: p.nc / (p.nc + p.nb) }
        })
        .collect();
    let o = ctx.cfg.metrics.get(&m.spec.name);
    let rel = o.and_then(|o| o.relative_tolerance).unwrap_or(ctx.cfg.relative_tolerance);
    let abs = o.and_then(|o| o.absolute_tolerance).unwrap_or(ctx.cfg.rare_event_tolerance);
    // The pooled rise over the steps from `k` on is past the tolerance.
    let past_tolerance = |k: usize| {
        let since = pairs.get(k..).unwrap_or_default().iter().zip(steps.get(k..).unwrap_or_default());
        let (nc, nb, ec, eb) = since.fold((0.0, 0.0, 0.0, 0.0), |a, (p, st)| {
            (a.0 + p.nc, a.1 + p.nb, a.2 + st.canary, a.3 + st.total - st.canary)
        });
        let (base, canary) = (eb / nb, ec / nc);
        nc > 0.0 && nb > 0.0 && canary - base > (rel * base).max(abs)
    };
    if pairs.iter().all(|p| p.nc <= 0.0) || pairs.iter().all(|p| p.nb <= 0.0) {
        return None;
    }
    Some(super::sequential::evidence(
        &steps,
        (dispersion(pairs, &harm), ctx.looks),
        ctx.alpha_sequential,
        past_tolerance,
    ))
}

/// Medians of the baseline, the canary and the harmful paired difference
/// (direction `s`) over `pairs`; `None` when empty.
fn medians(pairs: &[Pair], s: f64) -> Option<(f64, f64, f64)> {
    let mut bs: Vec<f64> = pairs.iter().map(|p| p.b).collect();
    let mut cs: Vec<f64> = pairs.iter().map(|p| p.c).collect();
    let mut ds: Vec<f64> = pairs.iter().map(|p| s * (p.c - p.b)).collect();
    Some((median(&mut bs)?, median(&mut cs)?, median(&mut ds)?))
}

/// The shift e-detector on a continuous metric's paired differences (every
/// pair judged at this tick), direction `s` ([`super::sequential::shift_log_e`]). Each
/// difference is winsorised at [`WINSOR_SIGMAS`] robust SDs either way: one
/// wild sample (a p99 spike on a canary serving a few requests) would
/// otherwise carry the evidence, which assumes Gaussian steps. The rise is
/// read since the change point, over at least the shortest window (over
/// the shortest window ending now until the evidence crosses).
fn sequential_shift(ctx: &Context, m: &MetricSeries, pairs: &[Pair], s: f64) -> Option<ShiftEvidence> {
    let cap = WINSOR_SIGMAS * noise_scale(pairs)?;
    let x: Vec<f64> = pairs.iter().map(|p| (s * (p.c - p.b)).clamp(-cap, cap)).collect();
    let (log_e, k) = super::sequential::shift_log_e(&x, ctx.looks);
    let threshold = (1.0 / ctx.alpha_shift).ln();
    // Before the evidence crosses, the numbers are the shortest window's (no change point yet).
    let (k, from) = if log_e >= threshold { (k, k) } else { (0, pairs.len()) };
    let since = &pairs[from.min(pairs.len().saturating_sub(ctx.cfg.min_window_samples))..];
    let (baseline, canary, shift) = medians(since, s)?;
    let tolerance = tolerance(ctx, m, false, baseline);
    Some(ShiftEvidence { log_e, threshold, canary, baseline, shift, tolerance, changed_after_steps: k })
}

/// Paired differences are winsorised this many robust SDs from 0 for the shift e-detector.
const WINSOR_SIGMAS: f64 = 3.0;

fn fmt(v: f64, unit: &Unit) -> String {
    unit.show(v)
}

/// The finding's sentence; `persistent` says the windowed test failed it
/// (flagged at enough looks in a row), so a failure by accumulated evidence
/// is not told as a window's.
fn explain(f: &Finding, ev: &Evidence, ctx: &Context, (requests, ratio): (f64, bool), persistent: bool) -> String {
    let window = ev.window as u64 * u64::from(ctx.step_s);
    let reference = match (f.comparison, ctx.baseline_kind) {
        (Comparison::BeforeAfter { rho, effective_n }, kind) => format!(
            "{} {} (autocorrelation {rho:.2}: the earlier window is worth {effective_n:.0} independent samples)",
            if kind == BaselineKind::Seasonal {
                "the same steps one period earlier"
            } else {
                "the window before the release"
            },
            fmt(ev.base, &f.unit)
        ),
        _ => format!("baseline {}", fmt(ev.base, &f.unit)),
    };
    let calibrated = match ctx.cfg.metrics.get(&f.metric).and_then(|o| o.calibrated_from) {
        Some(n) => format!(", calibrated from {n} past releases"),
        None => String::new(),
    };
    let numbers = format!(
        "canary {} vs {reference} over the last {window}s: harmful shift {} (tolerance {}{calibrated}), z = {:.1} vs critical {:.1}",
        fmt(ev.canary, &f.unit),
        fmt(ev.effect, &f.unit),
        fmt(ev.tol, &f.unit),
        ev.z,
        ev.crit
    );
    let (up, down) = f.excursions;
    match f.status {
        MetricStatus::Failing if persistent => {
            format!("{}: FAILING — {numbers}, at {} looks in a row", f.metric, ctx.cfg.consecutive_looks)
        }
        MetricStatus::Failing if up >= ctx.cfg.excursions_to_fail && up > 3 * down => format!(
            "{}: FAILING — {up} steps where only the canary was implausibly worse (baseline alone: {down}); {numbers}",
            f.metric
        ),
        MetricStatus::Failing => accumulated_failure(f, ctx, &numbers),
        MetricStatus::Suspect => format!("{}: suspect — {numbers}; waiting for a second look", f.metric),
        MetricStatus::InsufficientData if ratio && requests < ctx.cfg.min_canary_requests as f64 => format!(
            "{}: only {requests:.0} canary requests (need {}); cannot vouch for it",
            f.metric, ctx.cfg.min_canary_requests
        ),
        MetricStatus::InsufficientData => format!(
            "{}: only {:.0}% of samples present (need {:.0}%); cannot vouch for it",
            f.metric,
            f.coverage * 100.0,
            ctx.cfg.min_coverage * 100.0
        ),
        _ => format!("{}: ok — {numbers}", f.metric),
    }
}

/// A failure neither a window nor excursions explain: the leak test's, or
/// the sequential tests' accumulated evidence (event counts, or a shift).
fn accumulated_failure(f: &Finding, ctx: &Context, numbers: &str) -> String {
    match (f.trend.filter(TrendEvidence::is_leak), f.sequential) {
        (Some(t), _) => format!(
            "{}: FAILING (leak) — the canary gains {} per hour on the baseline (the {}s before: {} per hour, \
             not slowing), Mann–Kendall z = {:.1} vs critical {:.1}; {} over {}h, past tolerance {}; {numbers}",
            f.metric,
            fmt(t.slope_per_hour, &f.unit),
            ctx.cfg.trend_window_s,
            fmt(t.previous_slope_per_hour, &f.unit),
            t.z,
            t.critical,
            fmt(t.projected, &f.unit),
            t.horizon_s / 3600,
            fmt(t.tolerance, &f.unit)
        ),
        (None, Some(s)) => format!(
            "{}: FAILING — {:.0} harmful events on the canary since {}s where its traffic share predicts {:.1}: \
             sequential evidence e^{:.1} past e^{:.1} (valid however often it is checked); {numbers}",
            f.metric,
            s.canary_events,
            (ctx.warmup_steps + s.changed_after_steps) as u64 * u64::from(ctx.step_s),
            s.expected_events,
            s.log_bf,
            s.threshold
        ),
        (None, None) => match f.shift.filter(ShiftEvidence::crossed) {
            Some(e) => format!(
                "{}: FAILING — canary {} vs baseline {} since {}s: harmful shift {} (tolerance {}), \
                 sequential evidence e^{:.1} past e^{:.1} (valid however often it is checked); {numbers}",
                f.metric,
                fmt(e.canary, &f.unit),
                fmt(e.baseline, &f.unit),
                (ctx.warmup_steps + e.changed_after_steps) as u64 * u64::from(ctx.step_s),
                fmt(e.shift, &f.unit),
                fmt(e.tolerance, &f.unit),
                e.log_e,
                e.threshold
            ),
            None => format!("{}: FAILING — {numbers}", f.metric),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noise_prior_pools_as_ten_samples() {
        let used: Vec<Pair> = (0..5).map(|i| Pair { i, b: 100.0, c: 100.0, nb: 0.0, nc: 0.0 }).collect();
        // Window noise 1 on 4 df, prior 5 % of 100 on 10: sqrt((10·25 + 4·1) / 14).
        let (sigma, df) = with_prior(&used, 1.0, 4.0, 0.05);
        assert!((sigma - (254.0f64 / 14.0).sqrt()).abs() < 1e-12 && df == 14.0, "{sigma} {df}");
    }
}
