//! What every metric's comparison shares at one tick: the constants of the
//! tick, the shape of a window's evidence, and the practical tolerance.

use super::JudgeConfig;
use super::stats::t_critical;
use crate::signals::{BaselineKind, MetricSeries};

/// Per-tick constants shared by every metric.
pub(crate) struct Context<'a> {
    pub cfg: &'a JudgeConfig,
    pub baseline_kind: BaselineKind,
    pub step_s: u32,
    pub warmup_steps: usize,
    pub windows: Vec<usize>,
    pub alpha_look: f64,
    /// Error budget of each sequential test (no split over looks).
    pub alpha_sequential: f64,
    /// Error budget of each shift e-detector (continuous metrics, concurrent baseline).
    pub alpha_shift: f64,
    /// Steps the window plans after warm-up: the sequential tests' change points.
    pub looks: usize,
    /// Critical values by degrees of freedom, computed once per tick: the
    /// t quantile is by far the most expensive number the judge needs.
    pub crit_cache: std::cell::RefCell<std::collections::HashMap<u64, f64>>,
    /// The normal critical value at `alpha_look`.
    pub crit_normal: f64,
}

impl Context<'_> {
    pub(crate) fn t_crit(&self, df: f64) -> f64 {
        *self.crit_cache.borrow_mut().entry(df as u64).or_insert_with(|| t_critical(self.alpha_look, df))
    }
}

/// The strongest window's evidence at one look.
#[derive(Clone, Default)]
pub(crate) struct Evidence {
    pub flagged: bool,
    pub base: f64,
    pub canary: f64,
    pub effect: f64,
    pub z: f64,
    pub crit: f64,
    pub df: f64,
    pub tol: f64,
    /// Samples in the window.
    pub window: usize,
}

/// Excursions of continuous metrics: beyond tolerance plus this many robust SDs.
pub(crate) const EXCURSION_SIGMAS: f64 = 4.0;

/// The smallest harmful shift that counts at `level`: `max(relative × |level|, absolute)`.
pub(crate) fn tolerance(ctx: &Context, m: &MetricSeries, ratio: bool, level: f64) -> f64 {
    let o = ctx.cfg.metrics.get(&m.spec.name);
    let rel = o.and_then(|o| o.relative_tolerance).unwrap_or(ctx.cfg.relative_tolerance);
    let abs =
        o.and_then(|o| o.absolute_tolerance).unwrap_or(if ratio { ctx.cfg.ratio_absolute_tolerance } else { 0.0 });
    (rel * level.abs()).max(abs)
}
