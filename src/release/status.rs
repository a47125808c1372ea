//! How a release ended, as the ledger records it and every report, gate
//! and exit code reads it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::executor::{ActionKind, ActionPlan};
use crate::policy::{Decision, Proposal};

/// How a release ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr)]
#[serde(tag = "status", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReleaseStatus {
    /// Promoted and verified.
    Promoted,
    /// Rolled back and verified.
    RolledBack,
    /// Held for a human: the action ran but the system does not show it
    /// took effect. Nothing is retried; the target's state needs a look.
    ActionNotVerified {
        /// Which action.
        action: ActionKind,
        /// What was read back.
        observed: String,
    },
    /// Held for a human: the action failed (the ledger holds the error), so
    /// the target may be in either state. Nothing is retried.
    ActionFailed {
        /// Which action.
        action: ActionKind,
        /// Error text.
        error: String,
    },
    /// Held for a human: an earlier run recorded the intent to act and then
    /// stopped (a crash) before recording what happened, and the target does
    /// not show the action done (or the executor cannot tell). Never retried.
    ActionUnresolved {
        /// Which action.
        action: ActionKind,
        /// The intent's plan id (`backstop audit resolve` takes it).
        plan_id: String,
        /// What the target shows now.
        observed: String,
    },
    /// Advisory run: this is what would have been done.
    Recommended {
        /// The decision.
        decision: Decision,
        /// The exact plan, when the decision acts.
        plan: Option<ActionPlan>,
    },
    /// A human must approve.
    AwaitingApproval {
        /// Why.
        reason: String,
        /// What would happen on approval.
        proposed: Proposal,
    },
    /// Held for a human.
    Held {
        /// Why.
        reason: String,
    },
    /// Policy refused.
    Denied {
        /// Why.
        reason: String,
    },
    /// Stopped by a signal between ticks; no action was left half done. The
    /// release continues when it is run again.
    Interrupted,
    /// An operator ended the release; nothing was done to the target.
    Aborted {
        /// Who, and why.
        reason: String,
    },
}

impl ReleaseStatus {
    /// Whether the release is over. `Interrupted` continues when run again;
    /// `ActionUnresolved` is checked again at each run (the target may show
    /// the action done by now, or a human may have resolved it).
    pub fn is_final(&self) -> bool {
        !matches!(self, ReleaseStatus::Interrupted | ReleaseStatus::ActionUnresolved { .. })
    }

    /// The stored tag, for one-line listings.
    pub fn label(&self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::ReleaseStatus;

    #[test]
    fn a_status_label_is_its_stored_tag() {
        let s = ReleaseStatus::Held { reason: "r".into() };
        assert_eq!(serde_json::to_value(&s).unwrap()["status"], s.label());
        assert_eq!(
            serde_json::to_value(ReleaseStatus::RolledBack).unwrap()["status"],
            ReleaseStatus::RolledBack.label()
        );
    }
}
