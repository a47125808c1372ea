//! The one guard every action passes: the permit must cover the plan and the
//! plan must name the executor's own target. Executors receive a
//! [`Checked`] plan, which only this module can make, so none of them can be
//! driven around the guard and none repeats its checks.

use std::sync::Arc;

use super::{ActionPlan, ExecutionPermit, Executor, ExecutorError, Planner, Verification};
use crate::policy::RollbackPlan;

/// A plan that passed the guard: covered by a ledger permit (for
/// execution) and aimed at the executor's declared target.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    plan: &'a ActionPlan,
}

impl std::ops::Deref for Checked<'_> {
    type Target = ActionPlan;

    fn deref(&self) -> &ActionPlan {
        self.plan
    }
}

/// An executor behind the guard: what an acting run holds.
#[derive(Clone)]
pub struct Guarded {
    inner: Arc<dyn Executor>,
}

impl Guarded {
    /// Put `inner` behind the guard.
    pub fn new(inner: Arc<dyn Executor>) -> Self {
        Self { inner }
    }

    fn aimed<'a>(&self, plan: &'a ActionPlan) -> Result<Checked<'a>, ExecutorError> {
        let configured = self.inner.target();
        if plan.target != configured {
            return Err(ExecutorError::TargetMismatch {
                requested: plan.target.clone(),
                configured: configured.into(),
            });
        }
        Ok(Checked { plan })
    }

    /// Carry out `plan`, which `permit` (issued by the ledger for this plan's
    /// recorded intent) must cover.
    pub async fn execute(&self, plan: &ActionPlan, permit: ExecutionPermit) -> Result<String, ExecutorError> {
        permit.check(plan)?;
        let checked = self.aimed(plan)?;
        self.inner.apply(checked).await
    }

    /// Reach the target read-only, for `config check`.
    pub async fn probe(&self) -> Result<String, ExecutorError> {
        self.inner.probe().await
    }

    /// Read the target back: did `plan` take effect? Reading needs no permit,
    /// only the right target (recovery verifies intents of earlier runs).
    pub async fn verify(&self, plan: &ActionPlan) -> Result<Verification, ExecutorError> {
        let checked = self.aimed(plan)?;
        self.inner.read_back(checked).await
    }
}

impl Planner for Guarded {
    fn target(&self) -> &str {
        self.inner.target()
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        ensure_target(self.inner.target(), &rollback.target)?;
        self.inner.plan_rollback(rollback, at_s)
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        self.inner.plan_promote(revision, at_s)
    }

    fn plan_raise(&self, revision: &str, weight: u8, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        self.inner.plan_raise(revision, weight, at_s)
    }
}

/// A plan may only name the planner's own declared target.
pub(crate) fn ensure_target(configured: &str, requested: &str) -> Result<(), ExecutorError> {
    if configured == requested {
        Ok(())
    } else {
        Err(ExecutorError::TargetMismatch { requested: requested.into(), configured: configured.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{ActionKind, SimulatedExecutor};
    use crate::signals::simulator::Simulator;

    fn guarded() -> (Guarded, Arc<Simulator>) {
        let sim = Arc::new(Simulator::new(crate::signals::simulator::SimConfig::default()));
        (Guarded::new(Arc::new(SimulatedExecutor::new("sim/a", sim.clone()))), sim)
    }

    #[tokio::test]
    async fn the_guard_refuses_a_foreign_permit_and_a_foreign_target_before_the_executor_runs() {
        let (g, sim) = guarded();
        let plan = ActionPlan::new(ActionKind::Rollback, "sim/a", "v41", 10, vec![]);
        let other = ActionPlan::new(ActionKind::Rollback, "sim/a", "v41", 10, vec![]);
        let r = g.execute(&plan, ExecutionPermit::issued_by_ledger(&other.id, 1)).await;
        assert!(matches!(r, Err(ExecutorError::PermitMismatch { .. })), "{r:?}");
        let elsewhere = ActionPlan::new(ActionKind::Rollback, "sim/b", "v41", 10, vec![]);
        let r = g.execute(&elsewhere, ExecutionPermit::issued_by_ledger(&elsewhere.id, 2)).await;
        assert!(matches!(r, Err(ExecutorError::TargetMismatch { .. })), "{r:?}");
        assert!(matches!(g.verify(&elsewhere).await, Err(ExecutorError::TargetMismatch { .. })));
        let foreign = RollbackPlan {
            target: "sim/b".into(),
            from_revision: "v42".into(),
            to_revision: "v41".into(),
            reason: "r".into(),
        };
        assert!(matches!(g.plan_rollback(&foreign, 10), Err(ExecutorError::TargetMismatch { .. })));
        assert_eq!(sim.status().rolled_back_to, None, "nothing reached the executor");
        g.execute(&plan, ExecutionPermit::issued_by_ledger(&plan.id, 3)).await.expect("the covered plan runs");
        assert!(g.verify(&plan).await.expect("reads back").verified);
    }
}
