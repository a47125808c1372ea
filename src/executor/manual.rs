//! The planner for a target with no executor configured: it says exactly
//! what a human would have to do, and can execute nothing.

use super::{ActionKind, ActionPlan, ExecutorError, Planner, ensure_target};
use crate::policy::RollbackPlan;

/// Plans for a human operator.
pub struct ManualPlanner {
    target: String,
}

impl ManualPlanner {
    /// A planner for `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Self { target: target.into() }
    }
}

impl Planner for ManualPlanner {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        ensure_target(&self.target, &rollback.target)?;
        Ok(ActionPlan::new(
            ActionKind::Rollback,
            &self.target,
            &rollback.to_revision,
            at_s,
            vec![format!(
                "no executor is configured for {}: a human must send its traffic back to revision {}",
                self.target, rollback.to_revision
            )],
        ))
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(ActionPlan::new(
            ActionKind::Promote,
            &self.target,
            revision,
            at_s,
            vec![format!(
                "no executor is configured for {}: the pipeline (or a human) promotes revision {revision}",
                self.target
            )],
        ))
    }

    fn plan_raise(&self, revision: &str, weight: u8, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(ActionPlan::new(
            ActionKind::Raise { weight },
            &self.target,
            revision,
            at_s,
            vec![format!(
                "no executor is configured for {}: a human sends {weight}% of its traffic to revision {revision}",
                self.target
            )],
        ))
    }
}
