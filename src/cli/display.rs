//! Live progress for `demo`: a progress bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use super::out;
use backstop::executor::{ActionKind, ActionPlan};
use backstop::judge::{Finding, MetricStatus};
use backstop::ledger::ActionResult;
use backstop::orchestrator::{Observer, TickReport};
use backstop::signals::Unit;

/// Shows each tick as it is judged.
pub struct LiveDisplay {
    bar: Option<ProgressBar>,
    prefix: Option<String>,
}

fn badge(f: &Finding) -> String {
    let s = match f.status {
        MetricStatus::Ok => "ok",
        MetricStatus::Failing => "FAIL",
        MetricStatus::Suspect => "suspect",
        MetricStatus::NoData => "no-data",
        MetricStatus::InsufficientData => "thin",
        MetricStatus::Ignored => "ignored",
        MetricStatus::SharedBreach => "SHARED-BREACH",
        MetricStatus::BaselineShifted => "BASELINE-SHIFT",
        MetricStatus::Drifted => "DRIFT",
        MetricStatus::LabelsPending => "labels-pending",
    };
    let shift = match (f.relative_effect, &f.unit) {
        (_, Unit::Ratio) => f.effect.map(|e| format!("{:+.2}pt", e * 100.0)),
        (Some(r), _) => Some(format!("{:+.0}%", r * 100.0)),
        _ => None,
    };
    match shift {
        Some(x) => format!("{}={s}({x})", f.metric),
        None => format!("{}={s}", f.metric),
    }
}

impl LiveDisplay {
    /// A bar when stdout is a terminal and `plain` is false.
    pub fn new(duration_s: u64, plain: bool) -> Self {
        let bar = (!plain && std::io::stdout().is_terminal()).then(|| {
            let b = ProgressBar::new(duration_s);
            let style = ProgressStyle::with_template("{bar:30.cyan/blue} {pos:>5}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        Self { bar, prefix: None }
    }

    /// Prefix plain lines with a release name (several releases at once).
    pub fn prefixed(mut self, prefix: Option<String>) -> Self {
        self.prefix = prefix;
        self
    }

    fn line(&self, text: &str) {
        match (&self.bar, &self.prefix) {
            (Some(b), _) => b.println(backstop::report::text::plain(text)),
            (None, Some(p)) => out(&format!("[{p}] {text}")),
            (None, None) => out(text),
        }
    }

    /// Remove the bar before the final report.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Observer for LiveDisplay {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        let metrics: Vec<String> = t.judge.findings.iter().map(badge).collect();
        let text = format!(
            "t={:>5}s  {:<16} {}",
            t.now_s,
            t.outcome.decision.label(),
            if metrics.is_empty() { t.judge.summary.clone() } else { metrics.join("  ") }
        );
        match &self.bar {
            Some(b) => {
                b.set_position(t.now_s);
                b.set_message(text);
                if t.outcome.decision.label() != "continue" {
                    b.println(format!("t={}s {}: {}", t.now_s, t.outcome.decision.label(), t.judge.summary));
                }
            }
            None => self.line(&text),
        }
    }

    fn on_intent(&mut self, plan: &ActionPlan) {
        let what = match plan.kind {
            ActionKind::Raise { weight } => format!("raise to {weight}%"),
            kind @ (ActionKind::Rollback | ActionKind::Promote) => kind.to_string(),
        };
        self.line(&format!("intent recorded in ledger: {what} {} -> {}", plan.target, plan.to_revision));
    }

    fn on_outcome(&mut self, _plan: &ActionPlan, result: &ActionResult) {
        let line = match result {
            ActionResult::Verified { output, observed } => format!("executed: {output}\nverified=true ({observed})"),
            ActionResult::NotVerified { output, observed } => {
                format!("executed: {output}\nverified=false ({observed})")
            }
            ActionResult::VerifyFailed { output, error } => format!("executed: {output}\nverify FAILED: {error}"),
            ActionResult::Failed { error } => format!("execution FAILED: {error}"),
            ActionResult::Reconciled { observed } => format!("reconciled: {observed}"),
            ActionResult::Unresolved { observed } => format!("unresolved: {observed}"),
            ActionResult::ResolvedByHuman { done, reason } => format!("resolved by a human: done={done} ({reason})"),
        };
        for l in line.lines() {
            self.line(l);
        }
    }
}
