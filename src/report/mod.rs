//! Reports for humans and machines: what backstop recommends (or did), the
//! exact action, the evidence per metric, and what would change the answer.
//! Markdown for PR comments, chat and `$GITHUB_STEP_SUMMARY`; JSON; and a
//! self-contained HTML page with a chart per metric.

pub mod chart;
pub mod html;
mod markdown;
pub mod text;

use schemars::JsonSchema;
use serde::Serialize;

pub use html::render_html;
pub use markdown::{model_lines, render_markdown};

use crate::assessor::evidence::EvidenceItem;
use crate::assessor::{CanaryVerdict, Usage};
use crate::executor::{ActionKind, ActionPlan};
use crate::judge::{Finding, JudgeResult, MetricStatus, Verdict};
use crate::orchestrator::{Conclusion, RampRaise, RampStep, ReleaseStatus, RunOutcome};
use crate::policy::{Decision, Proposal};
use crate::signals::{Observation, Unit};

/// Everything a report shows, also its JSON form.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Report {
    /// The version of this document's shape (`backstop schema report` prints its JSON Schema).
    pub format: ReportVersion,
    /// Release name from configuration.
    pub release: String,
    /// Release id in the ledger.
    pub release_id: String,
    /// Service.
    pub service: String,
    /// Target.
    pub target: String,
    /// Revision under judgement.
    pub candidate_revision: String,
    /// Whether this run could act (false for `advise`).
    pub acting: bool,
    /// One word: promote, rollback, hold, approve, deny, interrupted.
    pub recommendation: String,
    /// One sentence.
    pub headline: String,
    /// The final status.
    pub status: ReleaseStatus,
    /// The exact action, when there is one.
    pub plan: Option<ActionPlan>,
    /// Release time of the decision, seconds.
    pub decided_at_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// The judge at the decision.
    pub judge: Option<JudgeResult>,
    /// Policy rules that fired.
    pub rules: Vec<String>,
    /// What the model said, with the evidence it cited.
    pub model: ModelReport,
    /// What would change the recommendation.
    pub would_change: Vec<String>,
    /// When the fault began, where the source knows it (simulator, labelled scenario).
    pub known_onset_s: Option<u64>,
    /// The series the charts draw.
    #[serde(skip)]
    #[schemars(skip)]
    pub observation: Option<Observation>,
    /// Where those series come from.
    pub charts: Charts,
    /// The traffic ramp, for a release that has one.
    pub ramp: Option<RampReport>,
}

/// A release's traffic ramp as its report shows it: the plan, and the
/// raises made — or, advising (which raises nothing), those acting would
/// have made, so an approver sees the ramp the agent would walk.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RampReport {
    /// Percent of traffic on the canary at each step (a final 100 is the promotion).
    pub steps: Vec<u8>,
    /// Release seconds each step is judged before the next (and the last before promotion).
    pub min_judged_s: u64,
    /// The raises are those acting would have made: an advisory run raised nothing.
    pub rehearsed: bool,
    /// The raises in order; `None` when this report does not know them (the
    /// release was ended by another agent: `backstop audit` lists them).
    pub raises: Option<Vec<RampRaise>>,
    /// At the decision the last step below 100 had not been judged its
    /// time: a promotion then waits for a person (advising: would have waited).
    pub unfinished: bool,
}

/// The ramp in sentences, for every rendering (none without a ramp).
pub fn ramp_lines(r: &Report) -> Vec<String> {
    let Some(ramp) = &r.ramp else { return vec![] };
    let steps: Vec<String> = ramp.steps.iter().map(u8::to_string).collect();
    let mut lines = vec![format!(
        "Steps: {} % of traffic, each judged {} s before the next.",
        steps.join(" → "),
        ramp.min_judged_s
    )];
    let at = |raises: &[RampRaise]| -> String {
        raises.iter().map(|x| format!("{} % at t={}s", x.weight, x.at_s)).collect::<Vec<_>>().join(", ")
    };
    lines.push(match (&ramp.raises, ramp.rehearsed) {
        (None, _) => "The raises are not in this report: another run ended the release (backstop audit lists the raises made).".into(),
        (Some(v), true) if v.is_empty() => "This advisory run raised nothing; acting, backstop would not have raised either: no tick was quiet when a step was due.".into(),
        (Some(v), true) => format!(
            "This advisory run raised nothing; acting, backstop would have raised the canary to {} (each on a quiet tick once its step was due).",
            at(v)
        ),
        (Some(v), false) if v.is_empty() => "No raise took effect.".into(),
        (Some(v), false) => format!("Raised to {}.", at(v)),
    });
    if ramp.rehearsed && ramp.unfinished && r.recommendation == "promote" {
        lines.push(
            "Acting, this promotion would have waited for a person: the ramp's last step below 100 would not yet have been judged its time."
                .into(),
        );
    }
    lines
}

impl RampReport {
    /// The ramp `cfg` as `outcome` walked it (or, advising, would have).
    pub fn new(cfg: &crate::release::RampConfig, outcome: &RunOutcome, acting: bool) -> RampReport {
        let unfinished = outcome.ramp.as_ref().is_some_and(|t| {
            matches!(RampStep::of(cfg.raises(), cfg.min_judged_s, t.progress), RampStep::Due(_) | RampStep::Judging)
        });
        RampReport {
            steps: cfg.steps.clone(),
            min_judged_s: cfg.min_judged_s,
            rehearsed: !acting,
            raises: outcome.ramp.as_ref().map(|t| t.raises.clone()),
            unfinished,
        }
    }
}

/// The version of a report's JSON. A change that removes or retypes a
/// field is a new version; added fields are not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ReportVersion {
    /// The first published shape.
    #[default]
    #[serde(rename = "backstop.report/v1")]
    V1,
}

/// A harmful shift or a tolerance as people read it: ratios in percentage
/// points (0.16 % → 2.79 % is +2.63 pp, not +1604 %), other units in their unit.
pub fn shift(v: f64, unit: &crate::signals::Unit) -> String {
    match unit {
        crate::signals::Unit::Ratio => format!("{:+.2} pp", v * 100.0),
        u => format!("{}{}", if v >= 0.0 { "+" } else { "" }, u.show(v)),
    }
}

/// Where a report's charts come from.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "data", rename_all = "snake_case")]
pub enum Charts {
    /// This run's last observation.
    Judged,
    /// A release reported from the ledger: its data read again from the
    /// source, the same data its last tick judged (their digests match).
    ReadAgain,
    /// No charts, and why.
    NotDrawn {
        /// Why (the source gave nothing at the last tick, or the data read
        /// again differ from what was judged).
        reason: String,
    },
}

/// The model's part of a report.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelReport {
    /// One line: accepted, rejected (why), unavailable (why), or not configured.
    pub status: String,
    /// The latest verdict, as the model gave it.
    pub verdict: Option<CanaryVerdict>,
    /// The evidence that verdict cites, as shown to the model.
    pub cited: Vec<EvidenceItem>,
    /// Tool calls in the latest consultation.
    pub tool_calls: usize,
    /// Calls and tokens over the whole release.
    pub usage: Usage,
}

impl ModelReport {
    /// The model's part of a finished run.
    pub fn new(outcome: &RunOutcome) -> Self {
        let c = outcome.consultation.as_ref();
        let status = match c {
            None if outcome.model_configured => {
                "the model was not consulted (no decision point called for it): judge-only decision".into()
            }
            None => "no model configured: judge-only decision".into(),
            Some(c) => match (&c.verdict, &c.rejection, &c.error) {
                (_, _, Some(e)) => format!("{} unavailable ({e}): judge-only decision", c.model),
                (_, Some(r), _) => format!("{} answered but its {r}: judge-only decision", c.model),
                (Some(v), None, None) => format!(
                    "{} verdict accepted: {}, recommends {} (confidence {:.2}); policy may only make the outcome stricter",
                    c.model, v.health, v.action, v.confidence
                ),
                (None, None, None) => format!("{}: no verdict", c.model),
            },
        };
        ModelReport {
            status,
            verdict: c.and_then(|c| c.verdict.clone()),
            cited: c.map(|c| c.cited.clone()).unwrap_or_default(),
            tool_calls: c.map_or(0, |c| c.tool_calls.len()),
            usage: outcome.model_usage,
        }
    }
}

fn recommendation(status: &ReleaseStatus) -> (&'static str, Option<ActionPlan>) {
    match status {
        ReleaseStatus::Promoted => ("promote", None),
        ReleaseStatus::RolledBack => ("rollback", None),
        ReleaseStatus::ActionNotVerified { .. }
        | ReleaseStatus::ActionFailed { .. }
        | ReleaseStatus::ActionUnresolved { .. } => ("hold", None),
        ReleaseStatus::Recommended { decision, plan } => match decision {
            Decision::Promote => ("promote", plan.clone()),
            _ => ("rollback", plan.clone()),
        },
        ReleaseStatus::AwaitingApproval { proposed: Proposal::Promote, .. } => ("approve promotion", None),
        ReleaseStatus::AwaitingApproval { proposed: Proposal::Rollback { .. }, .. } => ("approve rollback", None),
        ReleaseStatus::Held { .. } => ("hold", None),
        ReleaseStatus::Denied { .. } => ("deny", None),
        ReleaseStatus::Interrupted => ("interrupted", None),
        ReleaseStatus::Aborted { .. } => ("aborted", None),
    }
}

fn action_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Rollback => "rollback",
        ActionKind::Promote => "promotion",
        ActionKind::Raise { .. } => "ramp step",
    }
}

fn headline(status: &ReleaseStatus, candidate: &str) -> String {
    match status {
        ReleaseStatus::Promoted => format!("{candidate} was promoted and the promotion verified."),
        ReleaseStatus::RolledBack => format!("{candidate} was rolled back and the rollback verified."),
        ReleaseStatus::ActionNotVerified { action, observed } => format!(
            "Held for a human: the {} ran but did not verify ({observed}); check the target before retrying.",
            action_name(*action)
        ),
        ReleaseStatus::ActionFailed { action, error } => format!(
            "Held for a human: the {} failed ({error}); the target may be in either state, check it before retrying.",
            action_name(*action)
        ),
        ReleaseStatus::ActionUnresolved { action, plan_id, observed } => format!(
            "Held for a human: a {} (plan {plan_id}) was recorded as about to run before the agent stopped, and the target does not show it done ({observed}); it is not retried. Check the target, then `backstop audit resolve {plan_id}`.",
            action_name(*action)
        ),
        ReleaseStatus::Recommended { decision, .. } => {
            format!("backstop would {} {candidate}; nothing was executed.", decision.label().replace('_', " "))
        }
        ReleaseStatus::AwaitingApproval { reason, .. } => format!("A human must approve: {reason}."),
        ReleaseStatus::Held { reason } => format!("Held: {reason}."),
        ReleaseStatus::Denied { reason } => format!("Denied by policy: {reason}."),
        ReleaseStatus::Interrupted => "Interrupted before a decision.".into(),
        ReleaseStatus::Aborted { reason } => format!("Aborted: {reason}; nothing was done to the target."),
    }
}

fn fmt(v: f64, unit: &Unit) -> String {
    unit.show(v)
}

/// What would flip the answer, metric by metric, in numbers.
fn would_change(judge: Option<&JudgeResult>) -> Vec<String> {
    let Some(j) = judge else { return vec!["a decision: the run ended before one".into()] };
    let failing: Vec<&Finding> = j.failing().collect();
    if !failing.is_empty() {
        return failing
            .iter()
            .map(|f| {
                format!(
                    "{}: the canary's harmful shift ({}) falling below its tolerance ({}), or its evidence (z {:.1}) below the critical value {:.1}",
                    f.metric,
                    fmt(f.effect.unwrap_or(0.0), &f.unit),
                    fmt(f.tolerance.unwrap_or(0.0), &f.unit),
                    f.z.unwrap_or(0.0),
                    f.critical.unwrap_or(0.0)
                )
            })
            .collect();
    }
    let drifted: Vec<String> = j
        .drifted()
        .map(|f| {
            format!(
                "{}: held for a human because it drifted while labelled quality holds (policy: judge.ml.drift); \
                 labelled quality falling beyond its tolerance would roll back instead",
                f.metric
            )
        })
        .collect();
    if !drifted.is_empty() {
        return drifted;
    }
    let lacking: Vec<&Finding> = j.lacking_data().chain(j.labels_pending()).collect();
    if j.verdict == Verdict::Inconclusive && !lacking.is_empty() {
        return lacking.iter().map(|f| format!("{}: enough data to judge ({})", f.metric, f.explanation)).collect();
    }
    // Passing or still running: the metric closest to failing.
    let closest =
        j.findings.iter().filter(|f| f.status == MetricStatus::Ok || f.status == MetricStatus::Suspect).max_by(
            |a, b| {
                let r = |f: &Finding| f.effect.unwrap_or(0.0) / f.tolerance.unwrap_or(f64::INFINITY).max(1e-12);
                r(a).total_cmp(&r(b))
            },
        );
    // Labelled quality is tested on the labels that have arrived, not at looks in a row.
    let looks = |f: &Finding| if f.ml.is_some() { "" } else { " at two looks in a row" };
    match closest {
        Some(f) => vec![format!(
            "{} (the closest to failing): a harmful shift above {} (now {}) with z above {:.1} (now {:.1}){}",
            f.metric,
            fmt(f.tolerance.unwrap_or(0.0), &f.unit),
            fmt(f.effect.unwrap_or(0.0), &f.unit),
            f.critical.unwrap_or(0.0),
            f.z.unwrap_or(0.0),
            looks(f)
        )],
        None => vec![],
    }
}

impl Report {
    /// Build the report of a finished run.
    pub fn new(
        release: &str,
        facts: &crate::policy::ReleaseFacts,
        outcome: &RunOutcome,
        duration_s: u64,
        acting: bool,
        known_onset_s: Option<u64>,
    ) -> Self {
        let (rec, plan) = recommendation(&outcome.status);
        let mut headline = headline(&outcome.status, &facts.candidate_revision);
        match outcome.conclusion {
            Conclusion::ThisRun => {}
            Conclusion::AlreadyFinished => headline.push_str(" (recorded earlier; this run judged nothing again)"),
            Conclusion::OtherAgent => headline.push_str(" (by the agent holding the target's lease)"),
            Conclusion::Recovered => headline
                .push_str(" (reconciled after a restart: recorded before the agent stopped; not executed again)"),
        }
        Report {
            format: ReportVersion::V1,
            release: release.into(),
            release_id: outcome.release_id.clone(),
            service: facts.service.clone(),
            target: facts.target.clone(),
            candidate_revision: facts.candidate_revision.clone(),
            acting,
            recommendation: rec.into(),
            headline,
            status: outcome.status.clone(),
            plan,
            decided_at_s: outcome.decided_at_s,
            duration_s,
            judge: outcome.final_judge.clone(),
            rules: outcome.final_rules.iter().map(|r| format!("{}: {}", r.rule, r.detail)).collect(),
            model: ModelReport::new(outcome),
            would_change: would_change(outcome.final_judge.as_ref()),
            known_onset_s,
            observation: outcome.last_observation.clone(),
            charts: match outcome.last_observation {
                Some(_) => Charts::Judged,
                None => Charts::NotDrawn { reason: "no data at the last tick".into() },
            },
            ramp: None,
        }
    }
}
