//! Recovery: before this agent judges or acts on a target it holds, every
//! intent on that target left without a settled outcome (a crash between
//! intent and outcome) is checked against the target's real state. Done ⇒
//! recorded as reconciled, never run again. Not done, or the executor cannot
//! tell ⇒ held for a human with both facts; never a blind retry.

use tracing::warn;

use super::act::status_of;
use super::{LoopState, ReleaseRun, ReleaseStatus};
use crate::executor::{ActionKind, Guarded};
use crate::ledger::{ActionResult, LeaseRole, LedgerError, OutcomeRecord, Record};

impl ReleaseRun<'_> {
    /// Reconcile open intents if this agent holds the lease and has not yet
    /// done so under it. Some status when the release ends here.
    pub(super) async fn recover_if_holder(
        &self,
        executor: &Guarded,
        st: &mut LoopState,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        if st.recovered || !matches!(st.role, Some(LeaseRole::Holder { .. })) {
            return Ok(None);
        }
        st.recovered = true;
        let mut ends = None;
        for open in self.ledger.open_intents(&self.facts.target).await? {
            let plan = &open.intent.plan;
            let result = match executor.verify(plan).await {
                Ok(v) if v.verified => ActionResult::Reconciled { observed: v.observed },
                Ok(v) => ActionResult::Unresolved { observed: v.observed },
                Err(e) => ActionResult::Unresolved { observed: format!("cannot read the target back: {e}") },
            };
            warn!(plan = %plan.id, intent_seq = open.seq, release = %open.release_id, ?result,
                "An intent had no outcome (the agent stopped mid-action); reconciled against the target.");
            let unresolved = !result.settles();
            self.record(Record::Outcome(OutcomeRecord { plan_id: plan.id.clone(), result: result.clone() })).await?;
            let ours = open.release_id == self.facts.release_id;
            if matches!(result, ActionResult::Reconciled { .. }) && ours {
                match plan.kind {
                    // A ramp step found done: the release goes on from it.
                    ActionKind::Raise { weight } => st.ramp.raised(weight, st.now_s),
                    ActionKind::Rollback | ActionKind::Promote => self.verified(plan).await?,
                }
            }
            if (unresolved || ours)
                && let Some(status) = status_of(plan.kind, &plan.id, &result)
            {
                ends.get_or_insert(status);
            }
        }
        Ok(ends)
    }
}
