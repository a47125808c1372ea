//! Running one action: plan, intent (fenced by the lease), execute while
//! renewing the lease, verify, outcome.

use std::time::Duration;

use tracing::{Instrument, info, info_span, warn};

use super::{Actuation, LoopState, Observer, ReleaseRun, ReleaseStatus};
use crate::executor::{ActionKind, ActionPlan, ExecutionPermit, Guarded, Planner};
use crate::ledger::{ActionResult, ApprovalOps, LeaseOp, LeaseRole, LedgerError, OutcomeRecord, Record};
use crate::policy::Decision;
use crate::policy::approval::Closure;

/// The status an action's recorded result gives the release; `None`: the
/// release goes on (a ramp step that took effect).
pub(super) fn status_of(kind: ActionKind, plan_id: &str, result: &ActionResult) -> Option<ReleaseStatus> {
    let done = match kind {
        ActionKind::Rollback => Some(ReleaseStatus::RolledBack),
        ActionKind::Promote => Some(ReleaseStatus::Promoted),
        ActionKind::Raise { .. } => None,
    };
    Some(match result {
        ActionResult::Verified { .. } | ActionResult::Reconciled { .. } => return done,
        ActionResult::ResolvedByHuman { done: true, .. } => return done,
        ActionResult::ResolvedByHuman { done: false, reason } => {
            ReleaseStatus::ActionFailed { action: kind, error: format!("a human recorded it as not done: {reason}") }
        }
        ActionResult::NotVerified { observed, .. } => {
            ReleaseStatus::ActionNotVerified { action: kind, observed: observed.clone() }
        }
        ActionResult::VerifyFailed { error, .. } => {
            ReleaseStatus::ActionNotVerified { action: kind, observed: error.clone() }
        }
        ActionResult::Failed { error } => ReleaseStatus::ActionFailed { action: kind, error: error.clone() },
        ActionResult::Unresolved { observed } => {
            ReleaseStatus::ActionUnresolved { action: kind, plan_id: plan_id.to_string(), observed: observed.clone() }
        }
    })
}

/// Whether a verified `kind` makes its revision known good on the target
/// (release memory): a rollback's or promotion's does; a ramp step leaves
/// both versions serving.
pub(super) fn settles_revision(kind: ActionKind) -> bool {
    match kind {
        ActionKind::Rollback | ActionKind::Promote => true,
        ActionKind::Raise { .. } => false,
    }
}

/// A test hook: with `BACKSTOP_TEST_PAUSE_AT=<point>[@<target>][:<ms>]`, the
/// process announces the point on stderr and stops there (for `ms`, else an
/// hour), so a test can kill it at exactly that step of an action — only of
/// an action on `target` when one is named (a fleet's waves act on several)
/// — or delay it past its lease as a long GC pause or SIGSTOP would. It
/// never changes what runs, only when.
pub async fn pause_point(point: &str, target: &str) {
    let Ok(spec) = std::env::var(crate::config::PAUSE_VAR) else { return };
    let (name, ms) = match spec.split_once(':') {
        Some((n, ms)) => (n, ms.parse().unwrap_or(3_600_000)),
        None => (spec.as_str(), 3_600_000),
    };
    let (name, only) = match name.split_once('@') {
        Some((n, t)) => (n, Some(t)),
        None => (name, None),
    };
    if name == point && only.is_none_or(|t| t == target) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "backstop: paused at {point}");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn execute_and_verify(executor: &Guarded, plan: &ActionPlan, permit: ExecutionPermit) -> ActionResult {
    let output = match executor.execute(plan, permit).await {
        Ok(o) => o,
        Err(e) => return ActionResult::Failed { error: crate::error::chain(&e) },
    };
    pause_point("after_execute", &plan.target).await;
    match executor.verify(plan).await {
        Ok(v) if v.verified => ActionResult::Verified { output, observed: v.observed },
        Ok(v) => ActionResult::NotVerified { output, observed: v.observed },
        Err(e) => ActionResult::VerifyFailed { output, error: crate::error::chain(&e) },
    }
}

impl ReleaseRun<'_> {
    /// Carry out `decision`'s action. `None`: the intent was refused because
    /// another agent took the lease; this one goes on as an observer.
    /// `closes`: the release's open request closes so, in the intent's transaction.
    pub(super) async fn act(
        &self,
        decision: &Decision,
        actuation: &Actuation,
        st: &mut LoopState,
        observer: &mut dyn Observer,
        closes: Option<Closure>,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let planner = actuation.planner();
        let plan = match decision {
            Decision::Rollback { plan } => planner.plan_rollback(plan, st.now_s),
            _ => planner.plan_promote(&self.facts.candidate_revision, st.now_s),
        };
        let plan = match plan {
            Ok(p) => p,
            Err(e) => return Ok(Some(ReleaseStatus::Denied { reason: crate::error::chain(&e) })),
        };
        let (Actuation::Live(executor), Some(LeaseRole::Holder { token })) = (actuation, st.role.clone()) else {
            return Ok(Some(ReleaseStatus::Recommended { decision: decision.clone(), plan: Some(plan) }));
        };
        self.condemn(decision, st).await?;
        self.carry(executor, &plan, (token, st), observer, closes).await
    }

    /// Raise the canary's share to `weight` percent, the ramp's next step.
    /// `None`: it took effect (the release goes on at the new step) or
    /// another agent took the lease; some status when the release ends
    /// because the raise failed or could not be verified (never retried blindly).
    pub(super) async fn raise(
        &self,
        weight: u8,
        actuation: &Actuation,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let (Actuation::Live(executor), Some(LeaseRole::Holder { token })) = (actuation, st.role.clone()) else {
            return Ok(None);
        };
        let plan = match executor.plan_raise(&self.facts.candidate_revision, weight, st.now_s) {
            Ok(p) => p,
            Err(e) => return Ok(Some(ReleaseStatus::Denied { reason: crate::error::chain(&e) })),
        };
        let ended = self.carry(executor, &plan, (token, st), observer, None).await?;
        if ended.is_none() && matches!(st.role, Some(LeaseRole::Holder { .. })) {
            st.ramp.raised(weight, st.now_s);
        }
        Ok(ended)
    }

    /// Record `plan`'s intent (fenced by the lease `token`), run it while
    /// renewing the lease, verify and record the outcome. `None`: the release
    /// goes on (a ramp step took effect, or the intent was refused because
    /// another agent took the lease and this one now follows).
    async fn carry(
        &self,
        executor: &Guarded,
        plan: &ActionPlan,
        (token, st): (i64, &mut LoopState),
        observer: &mut dyn Observer,
        closes: Option<Closure>,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        pause_point("before_intent", &plan.target).await;
        let fence = LeaseOp::Fence { target: self.lease.clone(), holder: self.agent.instance.clone(), token };
        let approvals = ApprovalOps { only_if_open: None, close_open: closes };
        let at = self.agent.clock.now_ms();
        // No ledger write, no action: the permit exists only once the intent is committed.
        let permit = match self
            .ledger
            .record_intent(executor, &self.facts.release_id, &self.agent.actor(), at, plan, (Some(fence), approvals))
            .await
        {
            Ok(p) => p,
            Err(LedgerError::Fenced { holder, token, .. }) => {
                warn!(%holder, token, "Intent refused: another agent took the target's lease; following it.");
                st.role = Some(LeaseRole::Follower { holder, token });
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        pause_point("after_intent", &plan.target).await;
        observer.on_intent(plan);
        let span = info_span!("action", plan = %plan.id, kind = %plan.kind, target = %plan.target);
        info!(parent: &span, to = %plan.to_revision, "Action starting (intent recorded).");
        let result =
            self.holding_lease(token, execute_and_verify(executor, plan, permit)).instrument(span.clone()).await;
        info!(parent: &span, result = %result.label(), "Action ended.");
        observer.on_outcome(plan, &result);
        let outcome = Record::Outcome(OutcomeRecord { plan_id: plan.id.clone(), result: result.clone() });
        self.record(outcome).await?;
        if matches!(result, ActionResult::Verified { .. }) && settles_revision(plan.kind) {
            self.verified(plan).await?;
        }
        Ok(status_of(plan.kind, &plan.id, &result))
    }

    /// Run `action` to its end (an action is never interrupted), renewing the
    /// lease meanwhile so no other agent takes the target over mid-action.
    async fn holding_lease(&self, token: i64, action: impl Future<Output = ActionResult>) -> ActionResult {
        let every = Duration::from_millis((self.agent.lease_ms / 3).max(50) as u64);
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tokio::pin!(action);
        loop {
            tokio::select! {
                r = &mut action => return r,
                _ = beat.tick() => {
                    let renew = self.append(None, Some(LeaseOp::Renew {
                        target: self.lease.clone(),
                        holder: self.agent.instance.clone(),
                        token,
                        ttl_ms: self.agent.lease_ms,
                    }));
                    if let Err(e) = self.ledger.submit(renew).await {
                        warn!(error = %crate::error::chain(&e), "Cannot renew the lease during an action; the action runs to its end.");
                    }
                }
            }
        }
    }
}
