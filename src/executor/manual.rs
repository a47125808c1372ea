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
        Ok(ActionPlan {
            id: uuid::Uuid::new_v4().to_string(),
            kind: ActionKind::Rollback,
            target: self.target.clone(),
            to_revision: rollback.to_revision.clone(),
            at_s,
            steps: vec![format!(
                "no executor is configured for {}: a human must send its traffic back to revision {}",
                self.target, rollback.to_revision
            )],
        })
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(ActionPlan {
            id: uuid::Uuid::new_v4().to_string(),
            kind: ActionKind::Promote,
            target: self.target.clone(),
            to_revision: revision.into(),
            at_s,
            steps: vec![format!(
                "no executor is configured for {}: the pipeline (or a human) promotes revision {revision}",
                self.target
            )],
        })
    }
}
