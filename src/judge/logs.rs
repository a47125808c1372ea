//! Log templates as evidence: is a kind of error line new, or much more
//! frequent, on the canary given the traffic each side served?
//!
//! Lines at the judged levels (errors by default) of both sides are mined
//! into templates with Drain (`crate::logs::drain`), in time order, so a
//! template keeps its id from tick to tick. Each template's lines are
//! counted per side per step and judged with the rare-event statistics of
//! request ratios: given a step's lines of that template on both sides, the
//! canary's count is binomial with its traffic share if both versions log it
//! at one rate per request (`judge::sequential`, a change-point e-detector
//! that holds its error level however often it is read). Lines come in bursts (a retry
//! logs five times, one failure a stack of lines), so the evidence is
//! tempered by the template's dispersion — the larger of the baseline's own
//! index of dispersion and the canary's lines per step it logs on — and a
//! burst counts about as one event.
//!
//! A template fails when the evidence crosses `ln(1/α)` and the canary's
//! rate is past both tolerances: `relative_tolerance` above the baseline's
//! rate (default: double) and `tolerance` lines per request. Log templates
//! have their own error budget (`[judge.logs] alpha`), split over at most
//! `max_templates` templates, so adding a log source does not weaken the
//! metrics' tests; the release's false-rollback bound is the sum of both.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sequential::{self, StepEvents};
use super::{Finding, MetricStatus};
use crate::field::FieldError;
use crate::logs::drain::{Drain, DrainConfig};
use crate::signals::{BadDirection, LogLine, MetricSpec, Observation, Side, Unit};

/// `[judge.logs]`: how log templates are judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogJudgeConfig {
    /// Judge log templates when the source gives log lines.
    pub enabled: bool,
    /// Error budget of every template test together, on top of `[judge] alpha` (0 < alpha ≤ 0.05).
    pub alpha: f64,
    /// Levels whose lines are judged, as `crate::logs::level_of` spells them (`error`, `fatal`, `warn`...).
    pub levels: Vec<String>,
    /// Lines of one template the canary needs before it can fail.
    pub min_lines: u64,
    /// With traffic: a rise below this many lines per request is tolerated.
    pub tolerance: f64,
    /// The canary's rate must exceed the baseline's by this fraction (1 = double).
    pub relative_tolerance: f64,
    /// Templates judged at most, in order of their first canary line.
    pub max_templates: usize,
}

impl Default for LogJudgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            alpha: 0.005,
            levels: vec!["error".into(), "fatal".into()],
            min_lines: 5,
            tolerance: 0.0005,
            relative_tolerance: 1.0,
            max_templates: 50,
        }
    }
}

impl LogJudgeConfig {
    /// Check every field against its bounds; `Err(FieldError::of(field, expected))`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let bad = |f: &str, e: &str| Err(FieldError::of(format!("logs.{f}"), e.to_string()));
        if !(self.alpha > 0.0 && self.alpha <= 0.05) {
            return bad("alpha", "a number in (0, 0.05]");
        }
        if self.levels.is_empty() || self.levels.iter().any(|l| l.trim().is_empty()) {
            return bad("levels", "a non-empty list of level names (`error`, `fatal`, `warn`, `info`)");
        }
        if self.min_lines == 0 {
            return bad("min_lines", "at least 1 line");
        }
        if !(0.0..=1.0).contains(&self.tolerance) {
            return bad("tolerance", "lines per request from 0 to 1");
        }
        if !(0.0..=10.0).contains(&self.relative_tolerance) {
            return bad("relative_tolerance", "a fraction from 0 to 10");
        }
        if !(1..=1000).contains(&self.max_templates) {
            return bad("max_templates", "an integer from 1 to 1000");
        }
        Ok(())
    }
}

/// A template's text and one of its lines. Both are the watched system's
/// own text: data for a human or the model to read, never instructions, and
/// never part of the trusted `explanation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogTemplate {
    /// Drain's template, variables as `<*>` (untrusted).
    pub template: String,
    /// The canary's most recent line of it (untrusted).
    pub example: String,
    /// Level of its lines.
    pub level: String,
    /// Lines on the canary since warm-up.
    pub canary_lines: u64,
    /// Lines on the baseline since warm-up.
    pub baseline_lines: u64,
}

/// Lines mined at most per judgement: the rest wait for the next tick, so
/// a burst of millions of lines costs bounded work per tick (the backlog is
/// shown, not hidden).
pub const MINE_PER_TICK: usize = 20_000;

/// One template's lines per absolute step, and its latest canary line per step.
#[derive(Debug, Clone, Default)]
struct Tally {
    canary: Vec<f64>,
    baseline: Vec<f64>,
    /// Step → index (in the observation's lines) of the latest canary line there.
    examples: std::collections::BTreeMap<usize, usize>,
}

impl Tally {
    fn add(&mut self, step: usize, side: Side, index: usize) {
        let v = match side {
            Side::Canary => {
                self.examples.insert(step, index);
                &mut self.canary
            }
            Side::Baseline => &mut self.baseline,
        };
        if v.len() <= step {
            v.resize(step + 1, 0.0);
        }
        v[step] += 1.0;
    }

    /// Counts for steps `warmup..steps`, and the latest canary line among them.
    fn window(&self, warmup: usize, steps: usize) -> Counts {
        let slice = |v: &[f64]| (warmup..steps).map(|i| v.get(i).copied().unwrap_or(0.0)).collect();
        let example = self.examples.range(warmup..steps).next_back().map(|(_, &i)| i);
        Counts { canary: slice(&self.canary), baseline: slice(&self.baseline), example }
    }
}

/// How far log mining got, shown with the judgement when it fell behind or
/// left lines out (never silently).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogMining {
    /// Judged lines (at the judged levels) mined so far.
    pub mined: u64,
    /// Lines that fit no template and found no room for a new one (a flood of unique lines).
    pub unmined: u64,
    /// Lines not yet mined: more arrived than one tick mines; mined at the next ticks.
    pub backlog: u64,
    /// Templates so far.
    pub templates: u64,
}

impl LogMining {
    /// Whether anything was left out or is still waiting.
    pub fn incomplete(&self) -> bool {
        self.unmined > 0 || self.backlog > 0
    }
}

/// Log templates mined incrementally: each judgement mines only the lines
/// that arrived since the last one (at most [`MINE_PER_TICK`]), so a tick's
/// cost follows new lines, not all lines. Drain is online and deterministic,
/// so the templates are the ones mining every line at once would give.
/// Kept by whoever judges one release tick after tick (the loop, a replay);
/// a fresh one mines from the start.
pub struct LogMiner {
    drain: Drain,
    tallies: Vec<Tally>,
    /// Lines of the observation consumed so far, and the last one's fingerprint.
    consumed: usize,
    last: Option<(u64, Side, usize)>,
    levels: Vec<String>,
    step_s: u32,
    stats: LogMining,
}

impl Default for LogMiner {
    fn default() -> Self {
        Self {
            drain: Drain::new(DrainConfig::default()),
            tallies: Vec::new(),
            consumed: 0,
            last: None,
            levels: Vec::new(),
            step_s: 0,
            stats: LogMining::default(),
        }
    }
}

impl LogMiner {
    /// Whether `obs`'s lines extend the ones already mined (same levels and
    /// step, the last consumed line where it was); else mining starts over.
    fn continues(&self, obs: &Observation, lc: &LogJudgeConfig) -> bool {
        let same = self.levels == lc.levels && self.step_s == obs.step_s && obs.logs.len() >= self.consumed;
        let prefix = match (self.consumed, &self.last) {
            (0, _) => true,
            (n, Some((t, side, len))) => {
                obs.logs.get(n - 1).is_some_and(|l| l.t_s == *t && l.target == *side && l.message.len() == *len)
            }
            (_, None) => false,
        };
        same && prefix
    }

    /// Mine the lines of `obs` not yet mined (in the order they come).
    fn mine(&mut self, obs: &Observation, lc: &LogJudgeConfig) {
        if !self.continues(obs, lc) {
            *self = LogMiner { levels: lc.levels.clone(), step_s: obs.step_s, ..LogMiner::default() };
        }
        let step = u64::from(obs.step_s.max(1));
        let end = obs.logs.len().min(self.consumed + MINE_PER_TICK);
        for (index, line) in obs.logs.iter().enumerate().take(end).skip(self.consumed) {
            let level = crate::logs::canonical_level(&line.level).unwrap_or("unknown");
            if !lc.levels.iter().any(|v| v.eq_ignore_ascii_case(level)) {
                continue;
            }
            let Some(id) = self.drain.add(&line.message) else {
                self.stats.unmined += 1;
                continue;
            };
            if id == self.tallies.len() {
                self.tallies.push(Tally::default());
            }
            self.tallies[id].add((line.t_s / step) as usize, line.target, index);
            self.stats.mined += 1;
        }
        self.consumed = end;
        self.last = end.checked_sub(1).and_then(|i| obs.logs.get(i)).map(|l| (l.t_s, l.target, l.message.len()));
        self.stats.backlog = (obs.logs.len() - end) as u64;
        self.stats.templates = self.tallies.len() as u64;
    }

    /// What mining has done so far.
    pub fn stats(&self) -> &LogMining {
        &self.stats
    }
}

/// Per-step counts of one template, after warm-up.
struct Counts {
    canary: Vec<f64>,
    baseline: Vec<f64>,
    example: Option<usize>,
}

/// Findings for the log templates of `obs`, mined incrementally by `miner`;
/// empty when logs are off or absent.
pub(crate) fn judge_logs(
    obs: &Observation,
    cfg: &super::JudgeConfig,
    (warmup_steps, looks): (usize, usize),
    miner: &mut LogMiner,
) -> Vec<Finding> {
    let lc = &cfg.logs;
    if !lc.enabled || obs.logs.is_empty() {
        return Vec::new();
    }
    miner.mine(obs, lc);
    let steps = obs.completed_steps();
    if steps <= warmup_steps {
        return Vec::new();
    }
    let exposure = exposure(obs, warmup_steps, steps);
    let alpha = lc.alpha / lc.max_templates as f64;
    miner
        .tallies
        .iter()
        .enumerate()
        .map(|(id, t)| (id, t.window(warmup_steps, steps)))
        .filter_map(|(id, c)| {
            let line = obs.logs.get(c.example?)?;
            Some(finding(id, &miner.drain.clusters()[id].template(), line, &c, &exposure, lc, (alpha, looks)))
        })
        .take(lc.max_templates)
        .collect()
}

/// What each side was exposed to per step: requests served, or one step
/// each when the source gives no traffic (both sides assumed alike).
struct Exposure {
    canary: Vec<f64>,
    baseline: Vec<f64>,
    per_request: bool,
}

fn exposure(obs: &Observation, warmup: usize, steps: usize) -> Exposure {
    match &obs.traffic {
        Some(t) => {
            let side = |v: &[u64]| (warmup..steps).map(|i| v.get(i).copied().unwrap_or(0) as f64).collect();
            Exposure { canary: side(&t.canary), baseline: side(&t.baseline), per_request: true }
        }
        None => Exposure { canary: vec![1.0; steps - warmup], baseline: vec![1.0; steps - warmup], per_request: false },
    }
}

/// The burst size the evidence is tempered by (≥ 1): the larger of the
/// baseline's index of dispersion over its steps and the canary's lines per
/// active step (the canary's alone when the baseline has no lines). Both
/// versions retry alike under the null, but a canary's few failures can
/// all happen to be retried: tempered by the baseline's bursts only, six
/// retried failures read as eighteen (a healthy low-traffic canary rolled
/// back on a background corpus). The cost: a crash loop's stack of lines
/// counts as fewer events (30–50 s later on two of them, BENCHMARKS.md).
fn dispersion(c: &Counts) -> f64 {
    let n = c.baseline.len() as f64;
    let mean = c.baseline.iter().sum::<f64>() / n.max(1.0);
    let active = c.canary.iter().filter(|x| **x > 0.0).count();
    let canary = c.canary.iter().sum::<f64>() / active.max(1) as f64;
    let d = if mean > 0.0 && n >= 2.0 {
        (c.baseline.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (n - 1.0) / mean).max(canary)
    } else {
        canary
    };
    d.max(1.0)
}

fn finding(
    id: usize,
    template: &str,
    line: &LogLine,
    c: &Counts,
    ex: &Exposure,
    lc: &LogJudgeConfig,
    (alpha, looks): (f64, usize),
) -> Finding {
    // Steps where both sides were exposed, by their index in `c`.
    let exposed: Vec<usize> = (0..c.canary.len()).filter(|&i| ex.canary[i] > 0.0 && ex.baseline[i] > 0.0).collect();
    let steps: Vec<StepEvents> = exposed
        .iter()
        .map(|&i| StepEvents {
            canary: c.canary[i],
            total: c.canary[i] + c.baseline[i],
            share: ex.canary[i] / (ex.canary[i] + ex.baseline[i]),
        })
        .collect();
    let (rate_c, rate_b) = rates(c, ex, 0);
    let absolute = if ex.per_request { lc.tolerance } else { 0.0 };
    let past_tolerance = |k: usize| {
        let from = exposed.get(k).copied().unwrap_or(c.canary.len());
        let (rate_c, rate_b) = rates(c, ex, from);
        let lines: f64 = c.canary[from..].iter().sum();
        lines >= lc.min_lines as f64 && rate_c - rate_b > absolute && rate_c > rate_b * (1.0 + lc.relative_tolerance)
    };
    let evidence = sequential::evidence(&steps, (dispersion(c), looks), alpha, past_tolerance);
    let (lines_c, lines_b) = (c.canary.iter().sum::<f64>(), c.baseline.iter().sum::<f64>());
    let spec = MetricSpec {
        name: format!("log-template-{}", id + 1),
        unit: if ex.per_request { Unit::Ratio } else { Unit::Other("lines/step".into()) },
        bad_direction: BadDirection::Up,
    };
    let mut f = Finding::empty(&spec);
    f.status = if evidence.crossed() { MetricStatus::Failing } else { MetricStatus::Ok };
    (f.baseline, f.canary, f.effect) = (Some(rate_b), Some(rate_c), Some(rate_c - rate_b));
    f.relative_effect = (rate_b > 0.0).then(|| (rate_c - rate_b) / rate_b);
    f.tolerance = Some(absolute.max(rate_b * lc.relative_tolerance));
    (f.samples, f.coverage) = (c.canary.len(), 1.0);
    f.explanation = explain(&spec, &evidence, lines_b, ex.per_request);
    f.sequential = Some(evidence);
    f.log = Some(LogTemplate {
        template: template.to_string(),
        example: line.message.clone(),
        level: line.level.clone(),
        canary_lines: lines_c as u64,
        baseline_lines: lines_b as u64,
    });
    f
}

/// Lines per unit of exposure on each side (canary, baseline) over steps `from..`.
fn rates(c: &Counts, ex: &Exposure, from: usize) -> (f64, f64) {
    let lines = |v: &[f64]| v.get(from..).unwrap_or_default().iter().sum::<f64>();
    (lines(&c.canary) / lines(&ex.canary).max(1.0), lines(&c.baseline) / lines(&ex.baseline).max(1.0))
}

/// Trusted numbers only: the template's text stays in [`LogTemplate`].
fn explain(spec: &MetricSpec, e: &sequential::SequentialEvidence, lines_b: f64, per_request: bool) -> String {
    let given = if per_request { "its traffic share" } else { "an even split" };
    let numbers = format!(
        "{:.0} canary lines of this error template where {given} predicts {:.1} (baseline {:.0} lines); \
         evidence ln BF {:.1}, threshold {:.1}",
        e.canary_events, e.expected_events, lines_b, e.log_bf, e.threshold
    );
    match (e.crossed(), e.past_tolerance) {
        (true, _) => format!("{}: FAILING (log template) — {numbers}", spec.name),
        (false, false) => {
            format!("{}: ok — {numbers}; below the log tolerance (too few lines, or not much more often)", spec.name)
        }
        (false, true) => format!("{}: ok so far — {numbers}; not yet conclusive", spec.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{JudgeConfig, judge};
    use crate::signals::{BaselineKind, Traffic};

    fn obs(lines: Vec<LogLine>, traffic: bool) -> Observation {
        let n = 180;
        Observation {
            service: "checkout".into(),
            step_s: 10,
            duration_s: 1800,
            now_s: 1800,
            traffic: traffic.then(|| Traffic { baseline: vec![950; n], canary: vec![50; n] }),
            baseline_kind: BaselineKind::Concurrent,
            metrics: vec![],
            logs: lines,
            events: vec![],
            ml: Default::default(),
        }
    }

    fn line(t_s: u64, target: Side, level: &str, message: String) -> LogLine {
        LogLine { t_s, target, level: level.into(), message }
    }

    /// Background errors on both sides at one rate per request (19 : 1 by
    /// traffic), plus `extra` on the canary: a new template every `every` s.
    fn lines(extra_every: Option<u64>) -> Vec<LogLine> {
        let mut v = Vec::new();
        for t in (60..1800).step_by(10) {
            if t % 20 == 0 {
                v.push(line(t, Side::Baseline, "error", format!("upstream inventory timed out after {}ms", 500 + t)));
            }
            if t % 400 == 0 {
                v.push(line(t, Side::Canary, "error", format!("upstream inventory timed out after {}ms", 900 + t)));
            }
            if extra_every.is_some_and(|e| t % e == 0) {
                let order = format!("{:x}", t * 7919);
                v.push(line(
                    t,
                    Side::Canary,
                    "error",
                    format!("NullPointerException in CartPricing.apply order={order}"),
                ));
            }
            v.push(line(t, Side::Canary, "info", format!("served request {t}")));
        }
        v
    }

    #[test]
    fn a_new_error_template_on_the_canary_fails_and_names_its_template_as_data() {
        let r = judge(&obs(lines(Some(60)), true), &JudgeConfig::default());
        let f = r.findings.iter().find(|f| f.status == MetricStatus::Failing).expect("failing template");
        let t = f.log.as_ref().unwrap();
        assert_eq!(t.template, "NullPointerException in CartPricing.apply <*>");
        assert!(t.example.starts_with("NullPointerException in CartPricing.apply order="));
        assert_eq!(t.baseline_lines, 0);
        assert!(!f.explanation.contains("NullPointer"), "template text stays out of trusted text");
        assert_eq!(r.verdict, super::super::Verdict::Fail);
    }

    #[test]
    fn a_template_both_sides_log_at_one_rate_passes() {
        let r = judge(&obs(lines(None), true), &JudgeConfig::default());
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].status, MetricStatus::Ok);
        assert_eq!(r.verdict, super::super::Verdict::Pass);
    }

    #[test]
    fn levels_are_judged_in_any_spelling() {
        let mut v = lines(None);
        v.extend((0..12).map(|k| line(300 + 60 * k, Side::Canary, "CRITICAL", format!("disk full on /var {k}"))));
        let r = judge(&obs(v, true), &JudgeConfig::default());
        assert!(r.findings.iter().any(|f| f.log.as_ref().is_some_and(|t| t.template.starts_with("disk full"))));
    }

    #[test]
    fn info_lines_are_not_judged_and_logs_can_be_turned_off() {
        let r = judge(&obs(lines(Some(60)), true), &JudgeConfig::default());
        assert!(r.findings.iter().all(|f| f.log.as_ref().is_some_and(|t| !t.template.starts_with("served"))));
        let mut cfg = JudgeConfig::default();
        cfg.logs.enabled = false;
        assert!(judge(&obs(lines(Some(60)), true), &cfg).findings.is_empty());
    }

    #[test]
    fn a_single_burst_is_not_enough() {
        // Twenty lines in one step: one failure logged twenty times.
        let mut v = lines(None);
        v.extend((0..20).map(|k| line(900, Side::Canary, "error", format!("retry {k} of checkout payment failed"))));
        let r = judge(&obs(v, true), &JudgeConfig::default());
        assert!(r.findings.iter().all(|f| f.status == MetricStatus::Ok), "{:?}", r.findings);
    }

    #[test]
    fn a_canary_that_retries_its_share_of_failures_is_not_failed_for_the_retries() {
        // The baseline logs the template once per failure, ~87 failures at 950
        // requests a step; the canary's share (50 a step) predicts ~4.6. It has
        // 6 failures, each retried three times: 24 lines, four to a step.
        let mut v = lines(None);
        for t in (300..1800).step_by(250) {
            v.extend(
                (0..4).map(|k| {
                    line(t, Side::Canary, "error", format!("upstream inventory timed out after {}ms", 700 + k))
                }),
            );
        }
        let r = judge(&obs(v, true), &JudgeConfig::default());
        let f = &r.findings[0];
        assert_eq!(f.log.as_ref().map(|t| t.canary_lines), Some(24 + 4), "{f:?}");
        assert_eq!(f.status, MetricStatus::Ok, "{}", f.explanation);
    }

    #[test]
    fn without_traffic_the_sides_are_taken_as_alike() {
        let r = judge(&obs(lines(Some(60)), false), &JudgeConfig::default());
        let failing: Vec<&Finding> = r.findings.iter().filter(|f| f.status == MetricStatus::Failing).collect();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].unit.as_str(), "lines/step");
    }

    #[test]
    fn log_settings_are_checked() {
        let mut l = LogJudgeConfig { alpha: 0.0, ..Default::default() };
        assert_eq!(l.validate().unwrap_err().field, "logs.alpha");
        l = LogJudgeConfig { levels: vec![], ..Default::default() };
        assert_eq!(l.validate().unwrap_err().field, "logs.levels");
        assert!(LogJudgeConfig::default().validate().is_ok());
    }
}
