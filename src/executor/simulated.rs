//! The simulated executor: drives the built-in simulator's traffic split.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ActionKind, ActionPlan, Checked, Executor, ExecutorError, Planner, Verification};
use crate::policy::RollbackPlan;
use crate::signals::simulator::Simulator;

/// Acts on a [`Simulator`]: rollback sets the canary weight to 0 and returns
/// traffic to the last-known-good revision; `verify` reads the simulator back.
pub struct SimulatedExecutor {
    target: String,
    sim: Arc<Simulator>,
}

impl SimulatedExecutor {
    /// An executor for `target`, driving `sim`.
    pub fn new(target: impl Into<String>, sim: Arc<Simulator>) -> Self {
        Self { target: target.into(), sim }
    }
}

impl Planner for SimulatedExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(ActionPlan::new(
            ActionKind::Rollback,
            &self.target,
            &rollback.to_revision,
            at_s,
            vec![
                format!("set canary weight of {} to 0%", self.target),
                format!("route all traffic to revision {}", rollback.to_revision),
                "read the traffic split back and check the canary gets no traffic".into(),
            ],
        ))
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(ActionPlan::new(
            ActionKind::Promote,
            &self.target,
            revision,
            at_s,
            vec![format!("set canary weight of {} to 100%", self.target)],
        ))
    }

    fn plan_raise(&self, revision: &str, weight: u8, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(ActionPlan::new(
            ActionKind::Raise { weight },
            &self.target,
            revision,
            at_s,
            vec![format!("set canary weight of {} to {weight}%", self.target)],
        ))
    }
}

#[async_trait]
impl Executor for SimulatedExecutor {
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError> {
        match plan.kind {
            ActionKind::Rollback => self.sim.roll_back_to(&plan.to_revision, plan.at_s),
            ActionKind::Promote => self.sim.set_canary_weight(1.0),
            ActionKind::Raise { weight } => self.sim.set_canary_weight(f64::from(weight) / 100.0),
        }
        Ok(format!("{} applied to {}", plan.steps.join("; "), self.target))
    }

    async fn probe(&self) -> Result<String, ExecutorError> {
        Ok(format!("simulator: canary weight {:.0}%", self.sim.status().canary_weight * 100.0))
    }

    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError> {
        let s = self.sim.status();
        let verified = match plan.kind {
            ActionKind::Rollback => s.canary_weight == 0.0 && s.rolled_back_to.as_deref() == Some(&plan.to_revision),
            ActionKind::Promote => s.canary_weight == 1.0,
            ActionKind::Raise { weight } => (s.canary_weight * 100.0).round() == f64::from(weight),
        };
        Ok(Verification {
            verified,
            observed: format!(
                "canary weight {:.0}%, stable revision {}, rolled back to {}",
                s.canary_weight * 100.0,
                s.active_revision,
                s.rolled_back_to.as_deref().unwrap_or("-")
            ),
        })
    }
}
