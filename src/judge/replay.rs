//! Replaying a recorded release through the judge alone, tick by tick, as
//! `eval` scores it and `calibrate` tries tolerances on past releases: the
//! first `Fail` rolls back, a `Pass` promotes, and a window that ends
//! inconclusive is what policy would make of it.

use std::sync::Arc;

use serde::Serialize;

use super::{GuardNote, JudgeConfig, JudgeResult, LogMiner, Verdict, judge_with};
use crate::signals::{ReplaySource, ScenarioData};

/// One replay's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Decision.
    pub decision: ReplayDecision,
    /// Replay time of the decision.
    pub decided_at_s: Option<u64>,
    /// Guards that fired, first hit per metric.
    pub guard_hits: Vec<GuardNote>,
    /// The explanations of the findings behind a rollback or an escalation.
    pub why: Vec<String>,
}

impl Replay {
    /// A decision with no judge result behind it (a peer, a failed replay).
    pub fn bare(decision: ReplayDecision, decided_at_s: Option<u64>) -> Self {
        Replay { decision, decided_at_s, guard_hits: vec![], why: vec![] }
    }

    /// A decision taken on `r`: its guard hits, and why, from the failing
    /// findings (else the incident-like ones).
    pub fn judged(decision: ReplayDecision, decided_at_s: Option<u64>, r: &JudgeResult) -> Self {
        let mut why: Vec<String> = r.failing().map(|f| f.explanation.clone()).collect();
        if why.is_empty() && decision == ReplayDecision::Escalate {
            why = r.incidents().map(|f| f.explanation.clone()).collect();
        }
        Replay { decision, decided_at_s, guard_hits: r.guard_notes(), why }
    }
}

/// A judge's decision on a whole scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayDecision {
    /// Rolled back at `decided_at_s`.
    Rollback,
    /// Promoted at the end of the window.
    Promote,
    /// The agent stopped and asked a human (approval requested or held by the
    /// model); nothing was executed.
    Escalate,
    /// No decision by the end of the window.
    Inconclusive,
}

/// [`BackstopJudge::replay`] with a judge configuration as given (calibration
/// replays past releases with trial tolerances through it).
pub fn replay_with(data: &ScenarioData, config: &JudgeConfig) -> Replay {
    let src = ReplaySource::new(Arc::new(data.clone()));
    let step = u64::from(data.step_s);
    let mut now = step;
    let mut miner = LogMiner::default();
    loop {
        let r = judge_with(&src.observe_at(now), config, &mut miner);
        let done = |decision, at| Replay::judged(decision, at, &r);
        match r.verdict {
            Verdict::Fail => return done(ReplayDecision::Rollback, Some(now)),
            Verdict::Pass => return done(ReplayDecision::Promote, Some(now)),
            Verdict::Inconclusive if now >= data.duration_s => {
                return match window_end(&r, config) {
                    ReplayDecision::Inconclusive => done(ReplayDecision::Inconclusive, None),
                    d => done(d, Some(now)),
                };
            }
            Verdict::Inconclusive => now = (now + step).min(data.duration_s),
        }
    }
}

/// What an inconclusive end of the window comes to, as the policy would
/// decide it: an incident or a drift is held for a human (escalated); a
/// window that only waits for labels follows `[judge.ml] labels_pending`.
pub fn window_end(r: &JudgeResult, config: &JudgeConfig) -> ReplayDecision {
    if r.incidents().next().is_some() || r.drifted().next().is_some() {
        return ReplayDecision::Escalate;
    }
    if r.labels_pending().next().is_some() && r.lacking_data().next().is_none() {
        return match config.ml.labels_pending {
            super::ml::PendingAction::Hold => ReplayDecision::Escalate,
            super::ml::PendingAction::Promote => ReplayDecision::Promote,
        };
    }
    ReplayDecision::Inconclusive
}
