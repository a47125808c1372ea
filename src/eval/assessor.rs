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
            // The live loop's own rule: asking never delays the judge's own action.
            let situation = Situation {
                decision: &outcome.decision,
                window_done: now >= data.duration_s,
                role: None,
                mode: RunMode::Advise,
                held: false,
                asking: asking.as_ref().map(|(r, p): &(String, Proposal)| (r.as_str(), p)),
                answerable: false,
                // A scenario's replay never fails to observe.
                failing_ticks: 0,
                failure: None,
                failure_limit: self.policy.source.consecutive_failure_limit,
                judge_clear: judged.findings.iter().all(|f| f.status.is_clear()),
                // Replays judge recorded traffic: nothing to ramp.
                ramp: RampStep::Off,
                progress: RampProgress::default(),
            };
            match what_now(situation) {
                Next::Act if matches!(outcome.decision, policy::Decision::Promote) => {
                    return done(ReplayDecision::Promote, Some(now));
                }
                Next::Act => return done(ReplayDecision::Rollback, Some(now)),
                Next::Ask { reason, proposed } => asking = Some((reason, proposed)),
                Next::Withdraw => asking = None,
                // Stopping for a human is not a rollback: FORMAT.md's `escalate`.
                Next::Finish(status) => match *status {
                    ReleaseStatus::AwaitingApproval { .. } => return done(ReplayDecision::Escalate, Some(now)),
                    ReleaseStatus::Held { .. } if escalated => return done(ReplayDecision::Escalate, Some(now)),
                    _ if now >= data.duration_s => return ended(escalated),
                    _ => {}
                },
                Next::Continue | Next::Follow | Next::Raise(_) if now >= data.duration_s => return ended(escalated),
                Next::Continue | Next::Follow | Next::Raise(_) => {}
            }
            now = (now + step).min(data.duration_s);
        }
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
