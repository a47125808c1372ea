//! The model's part of one release's loop: its budget, which decision points
//! were already asked about, the consultation running beside the loop, and
//! the verdict policy currently sees. The orchestrator and
//! `eval --judge backstop+model` share it, so both ask the model at the same
//! points and let policy decide again with its answer.
//!
//! A live tick waits for the model only until the consultation deadline; the
//! consultation goes on beside the loop, and its answer is taken at the first
//! tick after it arrives — if it is still valid then (younger than
//! `verdict_valid_s` and citing only evidence still in force). One
//! consultation per release is in flight at a time; a decision point that
//! comes up meanwhile is asked about once it is done. When release time is simulated
//! there is no real time to save: each answer is waited for, up to the deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::info;

use super::evidence::out_of_force;
use super::{Ask, Assessor, Consultation, ModelSession, Rejection, Staleness, Trigger, TriggerState, Usage};
use crate::judge::JudgeResult;
use crate::policy::{ModelInput, PolicyOutcome, ReleaseFacts};
use crate::signals::Observation;

/// How the release's clock runs, which decides whether an answer may come
/// after its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Ticks `tick_s` real seconds apart (`watch`, `advise`, the agent): a
    /// tick waits at most the deadline (and never over 80 % of the tick), and
    /// a later answer is taken at a later tick.
    RealTime {
        /// Seconds between ticks.
        tick_s: u64,
    },
    /// Release time runs faster than real time (a replay, `eval`, a demo or
    /// `--pace-ms` below the tick): stopping the clock costs nobody anything,
    /// so each answer is waited for, up to the deadline, at its own tick.
    Simulated,
}

/// What a consultation was asked, kept for its record.
struct Asked {
    trigger: String,
    asked_at_s: u64,
}

/// A consultation running beside the loop.
struct InFlight {
    handle: JoinHandle<Consultation>,
    asked: Asked,
}

/// One release's model state.
pub struct Deliberation {
    session: Option<ModelSession>,
    triggers: TriggerState,
    input: ModelInput,
    /// Release time of the tick the verdict in `input` describes, while it is one.
    given_at_s: Option<u64>,
    last: Option<Consultation>,
    in_flight: Option<InFlight>,
    timing: Timing,
}

impl Drop for Deliberation {
    /// A release that ends stops its consultation: nobody would read the answer.
    fn drop(&mut self) {
        if let Some(f) = &self.in_flight {
            f.handle.abort();
        }
    }
}

impl Deliberation {
    /// With `model`, or judge-only without.
    pub fn new(model: Option<Arc<Assessor>>, timing: Timing) -> Self {
        let input = match model {
            Some(_) => ModelInput::Unavailable { reason: "not consulted yet".into() },
            None => ModelInput::NotConfigured,
        };
        let cap_tick_s = match timing {
            Timing::RealTime { tick_s } => tick_s,
            Timing::Simulated => 0,
        };
        let session = model.map(|m| ModelSession::new(m, cap_tick_s));
        Self {
            session,
            triggers: TriggerState::default(),
            input,
            given_at_s: None,
            last: None,
            in_flight: None,
            timing,
        }
    }

    /// Policy's outcome at this tick. A late answer that arrived since the last
    /// tick is taken first; when a decision point calls for it (and nothing is
    /// in flight) the model is asked, and policy decides again with an answer
    /// that comes within the deadline. `true` when a consultation was taken at
    /// this tick ([`Self::last`]).
    pub async fn decide(
        &mut self,
        facts: &ReleaseFacts,
        obs: Option<&Observation>,
        judged: &JudgeResult,
        policy: impl Fn(&ModelInput) -> PolicyOutcome,
    ) -> (PolicyOutcome, bool) {
        let (Some(obs), Some(valid_s)) = (obs, self.session.as_ref().map(ModelSession::verdict_valid_s)) else {
            return (policy(&self.input), false);
        };
        self.expire(obs.now_s, valid_s);
        if let Some(c) = self.arrived().await {
            self.take(c, facts, obs, judged, valid_s);
            return (policy(&self.input), true);
        }
        let outcome = policy(&self.input);
        if self.in_flight.is_some() {
            return (outcome, false);
        }
        let Some(trigger) = self.triggers.check(judged, &outcome.decision, Some(obs)) else {
            return (outcome, false);
        };
        self.start(trigger, facts, obs, judged);
        match self.wait().await {
            Some(c) => {
                self.take(c, facts, obs, judged, valid_s);
                (policy(&self.input), true)
            }
            None => (outcome, false),
        }
    }

    /// Start a consultation in its own task: at most the deadline in a
    /// replay; live, until its verdict could no longer be valid.
    fn start(&mut self, trigger: Trigger, facts: &ReleaseFacts, obs: &Observation, judged: &JudgeResult) {
        let Some(session) = self.session.clone() else { return };
        let limit = match self.timing {
            Timing::Simulated => session.deadline(),
            Timing::RealTime { .. } => session.deadline().max(Duration::from_secs(session.verdict_valid_s())),
        };
        let asked = Asked { trigger: trigger.to_string(), asked_at_s: obs.now_s };
        let (facts, obs, judged) = (facts.clone(), obs.clone(), judged.clone());
        let handle = tokio::spawn(async move {
            let ask = Ask { trigger: &trigger, facts: &facts, obs: &obs, judged: &judged };
            session.run(ask, limit).await
        });
        self.in_flight = Some(InFlight { handle, asked });
    }

    /// Wait for the consultation just started: up to the deadline live (then
    /// it goes on beside the loop), to its end in a replay.
    async fn wait(&mut self) -> Option<Consultation> {
        let deadline = self.session.as_ref()?.deadline();
        let flight = self.in_flight.as_mut()?;
        let joined = match self.timing {
            Timing::Simulated => Some((&mut flight.handle).await),
            Timing::RealTime { .. } => tokio::time::timeout(deadline, &mut flight.handle).await.ok(),
        };
        let Some(result) = joined else {
            info!(
                trigger = %flight.asked.trigger,
                deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                "The model is still answering at the tick's deadline: the judge decides this tick alone, and the answer is taken when it comes if it is still valid."
            );
            return None;
        };
        let flight = self.in_flight.take()?;
        Some(self.joined(&flight.asked, result))
    }

    /// The consultation in flight, when it has finished since the last tick.
    async fn arrived(&mut self) -> Option<Consultation> {
        if !self.in_flight.as_ref()?.handle.is_finished() {
            return None;
        }
        let flight = self.in_flight.take()?;
        let result = flight.handle.await;
        Some(self.joined(&flight.asked, result))
    }

    /// The task's consultation, or one that records why the task gave none.
    fn joined(&self, asked: &Asked, result: Result<Consultation, tokio::task::JoinError>) -> Consultation {
        result.unwrap_or_else(|e| {
            let model = self.session.as_ref().map_or_else(String::new, |s| s.model_name().to_string());
            let reason = format!("the consultation's task ended without an answer: {e}");
            Consultation::failed(asked.trigger.clone(), model, asked.asked_at_s, reason)
        })
    }

    /// Count the consultation and let policy see its answer — if a late one
    /// still describes the release now.
    fn take(
        &mut self,
        mut c: Consultation,
        facts: &ReleaseFacts,
        obs: &Observation,
        judged: &JudgeResult,
        valid_s: u64,
    ) {
        if let Some(session) = self.session.as_mut() {
            session.spent(c.usage);
        }
        c.arrived_at_s = obs.now_s;
        if let Some(why) = staleness(&c, facts, obs, judged, valid_s) {
            let r = Rejection::Stale { asked_at_s: c.asked_at_s, arrived_at_s: c.arrived_at_s, why };
            info!(rejection = %r, "The model's late verdict no longer counts; the judge decides alone.");
            c.input = ModelInput::Unavailable { reason: r.to_string() };
            c.rejection = Some(r);
        }
        self.input = c.input.clone();
        self.given_at_s = matches!(self.input, ModelInput::Verdict { .. }).then_some(c.asked_at_s);
        self.last = Some(c);
    }

    /// A verdict older than `valid_s` release seconds (counted from the tick it
    /// describes) stops counting: a hold (or anything else) given early never
    /// sticks to the window's end.
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

    /// The latest consultation taken.
    pub fn last(&self) -> Option<&Consultation> {
        self.last.as_ref()
    }

    /// Calls and tokens spent so far (a consultation in flight counts once taken).
    pub fn usage(&self) -> Usage {
        self.session.as_ref().map(|s| s.used).unwrap_or_default()
    }

    /// A model is configured.
    pub fn configured(&self) -> bool {
        self.session.is_some()
    }
}

/// Why an accepted verdict that came after its tick no longer counts, if it does not.
fn staleness(
    c: &Consultation,
    facts: &ReleaseFacts,
    obs: &Observation,
    judged: &JudgeResult,
    valid_s: u64,
) -> Option<Staleness> {
    if c.arrived_at_s == c.asked_at_s || !matches!(c.input, ModelInput::Verdict { .. }) {
        return None;
    }
    if c.arrived_at_s.saturating_sub(c.asked_at_s) > valid_s {
        return Some(Staleness::Expired { valid_s });
    }
    out_of_force(&c.cited, obs, judged, facts).map(|id| Staleness::OutOfForce { id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ModelRecommendation;

    #[test]
    fn a_verdict_expires_and_the_judge_decides_alone_again() {
        let mut d = Deliberation::new(None, Timing::Simulated);
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
