//! `--judge backstop+model`: our judge with the configured model consulted at
//! the same decision points, combined by the same policy as a live release
//! (advisory mode: what backstop would have done). Each scenario gets its
//! own budget, as a release would.

use std::sync::Arc;

use super::{EvalJudge, Replay, ReplayDecision};
use crate::assessor::{Assessor, Consultation, Deliberation, Timing};
use crate::judge::judge_with;
use crate::judge::replay::window_end;
use crate::orchestrator::step::{Next, RampProgress, RampStep, Situation, what_now};
use crate::policy::{self, History, ModelInput, PolicyFile, PolicyInput, Proposal, ReleaseFacts, RunMode};
use crate::release::ReleaseStatus;
use crate::signals::{ReplaySource, ScenarioData};

/// The judge plus the model, through policy.
pub struct AssessorJudge {
    /// Policy (its `[judge]` section tunes the judge).
    pub policy: PolicyFile,
    /// The configured endpoint.
    pub assessor: Arc<Assessor>,
    /// Where every consultation taken is kept, with its scenario's name
    /// (`backstop bench --model-on`); `None` keeps nothing.
    pub record: Option<Kept>,
}

/// Consultations kept during a replay, each with its scenario's name.
pub type Kept = Arc<std::sync::Mutex<Vec<(String, Consultation)>>>;

fn facts(data: &ScenarioData) -> ReleaseFacts {
    ReleaseFacts {
        release_id: format!("eval-{}", data.name),
        service: data.service.clone(),
        target: format!("eval/{}", data.service),
        service_targets: 0,
        declared_targets: vec![format!("eval/{}", data.service)].into(),
        candidate_revision: "canary".into(),
        last_known_good: Some("baseline".into()),
        quarantine: None,
        last_known_good_from: None,
        irreversible: false,
        environment: "evaluation".into(),
    }
}

impl AssessorJudge {
    async fn replay_async(&self, data: &ScenarioData) -> Replay {
        let config = self.policy.judge_for(&data.service);
        let src = ReplaySource::new(Arc::new(data.clone()));
        let facts = facts(data);
        let step = u64::from(data.step_s.max(1));
        // Replayed, not live: no tick waits on the model, so a consultation gets the
        // configured deadline, not 80 % of the scenario's step — otherwise the scores
        // would depend on how busy the machine is (a 10 s step leaves a local model 8 s).
        let mut model = Deliberation::new(Some(self.assessor.clone()), Timing::Simulated);
        let mut now = step;
        let mut asking: Option<(String, Proposal)> = None;
        let mut miner = crate::judge::LogMiner::default();
        loop {
            let obs = src.observe_at(now);
            let judged = judge_with(&obs, &config, &mut miner);
            let done = |decision, at| Replay::judged(decision, at, &judged);
            // An undecided end of the window as the judge-only replay scores it
            // (an incident, a drift or pending labels held for a human).
            let ended = |escalated: bool| match window_end(&judged, &config) {
                ReplayDecision::Inconclusive if escalated => done(ReplayDecision::Escalate, Some(now)),
                ReplayDecision::Inconclusive => done(ReplayDecision::Inconclusive, None),
                d => done(d, Some(now)),
            };
            let decide = |m: &ModelInput| {
                let input = PolicyInput {
                    judge: &judged,
                    model: m,
                    release: &facts,
                    history: &History::default(),
                    mode: RunMode::Advise,
                    signal_failure: None,
                    now_ms: 0,
                };
                policy::evaluate(&self.policy, &input)
            };
            let (outcome, consulted) = model.decide(&facts, Some(&obs), &judged, decide).await;
            if let (true, Some(record), Some(c)) = (consulted, &self.record, model.last())
                && let Ok(mut kept) = record.lock()
            {
                kept.push((data.name.clone(), c.clone()));
            }
            // Held by the model or for an incident both versions share: a human is asked.
            let escalated = judged.incidents().next().is_some() || outcome.trace.iter().any(|r| r.rule.is_model());
            let judge_clear = judged.findings.iter().all(|f| f.status.is_clear());
            let limit = self.policy.source.consecutive_failure_limit;
            let next = what_now(advisory(&outcome.decision, now >= data.duration_s, &asking, judge_clear, limit));
            let promote = matches!(outcome.decision, policy::Decision::Promote);
            match then(next, promote, escalated, now >= data.duration_s) {
                Then::Stop(decision) => return done(decision, Some(now)),
                Then::WindowEnd => return ended(escalated),
                Then::Ask(reason, proposed) => asking = Some((reason, proposed)),
                Then::Withdraw => asking = None,
                Then::Go => {}
            }
            now = (now + step).min(data.duration_s);
        }
    }
}

/// The loop's situation at one replayed tick: advising, no lease, no
/// ramp, a source that never fails — so the live loop's own rule (asking
/// never delays the judge's own action) decides.
fn advisory<'a>(
    decision: &'a policy::Decision,
    window_done: bool,
    asking: &'a Option<(String, Proposal)>,
    judge_clear: bool,
    failure_limit: u32,
) -> Situation<'a> {
    Situation {
        decision,
        window_done,
        role: None,
        mode: RunMode::Advise,
        held: false,
        asking: asking.as_ref().map(|(r, p)| (r.as_str(), p)),
        answerable: false,
        // A scenario's replay never fails to observe.
        failing_ticks: 0,
        failure: None,
        failure_limit,
        judge_clear,
        // Replays judge recorded traffic: nothing to ramp.
        ramp: RampStep::Off,
        progress: RampProgress::default(),
    }
}

/// What a replay does with the loop's answer at one tick.
enum Then {
    /// The replay ends with this decision, now.
    Stop(ReplayDecision),
    /// The window ended undecided: scored as the judge-only replay scores it.
    WindowEnd,
    /// A human is asked (why, and what is proposed).
    Ask(String, Proposal),
    /// The open question is withdrawn.
    Withdraw,
    /// On to the next tick.
    Go,
}

/// Every `Next` answered (no wildcard: a new one must be written here).
/// Stopping for a human is not a rollback: FORMAT.md's `escalate`.
fn then(next: Next, promote: bool, escalated: bool, window_done: bool) -> Then {
    match next {
        Next::Act if promote => Then::Stop(ReplayDecision::Promote),
        Next::Act => Then::Stop(ReplayDecision::Rollback),
        Next::Ask { reason, proposed } => Then::Ask(reason, proposed),
        Next::Withdraw => Then::Withdraw,
        Next::Finish(status) => match *status {
            ReleaseStatus::AwaitingApproval { .. } => Then::Stop(ReplayDecision::Escalate),
            ReleaseStatus::Held { .. } if escalated => Then::Stop(ReplayDecision::Escalate),
            _ if window_done => Then::WindowEnd,
            _ => Then::Go,
        },
        Next::Continue | Next::Follow | Next::Raise(_) if window_done => Then::WindowEnd,
        Next::Continue | Next::Follow | Next::Raise(_) => Then::Go,
    }
}

impl EvalJudge for AssessorJudge {
    fn name(&self) -> &'static str {
        super::JudgeName::BackstopModel.as_str()
    }

    fn decide(&self, data: &ScenarioData) -> (ReplayDecision, Option<u64>) {
        let r = self.replay(data);
        (r.decision, r.decided_at_s)
    }

    fn replay(&self, data: &ScenarioData) -> Replay {
        // Scenarios run on plain threads; each gets a small runtime for its HTTP calls.
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(self.replay_async(data)),
            Err(_) => Replay::bare(ReplayDecision::Inconclusive, None),
        }
    }
}
