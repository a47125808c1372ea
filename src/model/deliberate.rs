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
    last: Option<Consultation>,
}

impl Deliberation {
    /// With `model`, or judge-only without.
    pub fn new(model: Option<Arc<Assessor>>) -> Self {
        let input = match model {
            Some(_) => ModelInput::Unavailable { reason: "not consulted yet".into() },
            None => ModelInput::NotConfigured,
        };
        Self { session: model.map(ModelSession::new), triggers: TriggerState::default(), input, last: None }
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
        let outcome = policy(&self.input);
        let (Some(session), Some(obs)) = (self.session.as_mut(), obs) else {
            return (outcome, false);
        };
        let Some(trigger) = self.triggers.check(judged, &outcome.decision, Some(obs)) else {
            return (outcome, false);
        };
        let c = session.consult(Ask { trigger: &trigger, facts, obs, judged }).await;
        self.input = c.input.clone();
        self.last = Some(c);
        (policy(&self.input), true)
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
