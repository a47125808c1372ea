//! The model's part of one release's loop: its budget, which decision points
//! were already asked about, and the verdict policy currently sees. The
//! orchestrator and `eval --judge backstop+model` share it, so both ask the
//! model at the same points and let policy decide again with its answer.

use std::sync::Arc;

use super::{Ask, Assessor, Consultation, ModelSession, TriggerState, Usage};
use crate::judge::JudgeResult;
use crate::policy::{ModelInput, PolicyOutcome, ReleaseFacts};
use crate::signals::Observation;

/// One release's model state.
pub struct Deliberation {
    session: Option<ModelSession>,
    triggers: TriggerState,
    input: ModelInput,
    /// Release time of the verdict in `input`, while it is one.
    given_at_s: Option<u64>,
    last: Option<Consultation>,
}

impl Deliberation {
    /// With `model`, or judge-only without; ticks are `tick_s` release seconds apart.
    pub fn new(model: Option<Arc<Assessor>>, tick_s: u64) -> Self {
        let input = match model {
            Some(_) => ModelInput::Unavailable { reason: "not consulted yet".into() },
            None => ModelInput::NotConfigured,
        };
        let session = model.map(|m| ModelSession::new(m, tick_s));
        Self { session, triggers: TriggerState::default(), input, given_at_s: None, last: None }
    }

    /// Policy's outcome at this tick; when a decision point calls for it, the
    /// model is consulted and policy decides again. `true` when it was consulted.
    pub async fn decide(
        &mut self,
        facts: &ReleaseFacts,
        obs: Option<&Observation>,
        judged: &JudgeResult,
        policy: impl Fn(&ModelInput) -> PolicyOutcome,
    ) -> (PolicyOutcome, bool) {
        if let (Some(obs), Some(session)) = (obs, self.session.as_ref()) {
            self.expire(obs.now_s, session.verdict_valid_s());
        }
        let outcome = policy(&self.input);
        let (Some(session), Some(obs)) = (self.session.as_mut(), obs) else {
            return (outcome, false);
        };
        let Some(trigger) = self.triggers.check(judged, &outcome.decision, Some(obs)) else {
            return (outcome, false);
        };
        let c = session.consult(Ask { trigger: &trigger, facts, obs, judged }).await;
        self.input = c.input.clone();
        self.given_at_s = matches!(self.input, ModelInput::Verdict { .. }).then_some(obs.now_s);
        self.last = Some(c);
        (policy(&self.input), true)
    }

    /// A verdict older than `valid_s` release seconds stops counting: a
    /// hold (or anything else) given early never sticks to the window's end.
    fn expire(&mut self, now_s: u64, valid_s: u64) {
        if let Some(at) = self.given_at_s
            && now_s.saturating_sub(at) > valid_s
        {
            self.input =
                ModelInput::Unavailable { reason: format!("the verdict of t={at}s expired after {valid_s} s") };
            self.given_at_s = None;
        }
    }

    /// What policy sees now.
    pub fn input(&self) -> &ModelInput {
        &self.input
    }

    /// The latest consultation.
    pub fn last(&self) -> Option<&Consultation> {
        self.last.as_ref()
    }

    /// Calls and tokens spent so far.
    pub fn usage(&self) -> Usage {
        self.session.as_ref().map(|s| s.used).unwrap_or_default()
    }

    /// A model is configured.
    pub fn configured(&self) -> bool {
        self.session.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ModelRecommendation;

    #[test]
    fn a_verdict_expires_and_the_judge_decides_alone_again() {
        let mut d = Deliberation::new(None, 10);
        d.input = ModelInput::Verdict { recommendation: ModelRecommendation::Hold, evidence_verified: false };
        d.given_at_s = Some(100);
        d.expire(400, 300);
        assert!(matches!(d.input, ModelInput::Verdict { .. }), "still within 300 s");
        d.expire(401, 300);
        assert!(matches!(&d.input, ModelInput::Unavailable { reason } if reason.contains("expired")), "{:?}", d.input);
        // Nothing to expire once it has.
        d.expire(10_000, 300);
        assert!(d.given_at_s.is_none());
    }
}
