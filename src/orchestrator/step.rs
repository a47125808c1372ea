//! "What now" after a tick: a pure function of policy's decision, the
//! window and this agent's lease, so the loop around it stays a shell.

use super::ReleaseStatus;
use crate::ledger::LeaseRole;
use crate::policy::{Decision, RunMode};

/// The loop's next move.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Keep judging.
    Continue,
    /// Another agent holds the target: keep judging, never act, and end when it ends the release.
    Follow,
    /// End the release with this status; nothing to run.
    Finish(Box<ReleaseStatus>),
    /// Run (or, advising, plan) the decision's action.
    Act,
}

/// The next move for `decision`. `window_done`: the analysis window has
/// passed. `role`: this agent's lease on the target (none when advising).
pub fn what_now(decision: &Decision, window_done: bool, role: Option<&LeaseRole>, mode: RunMode) -> Next {
    let follower = mode == RunMode::Act && matches!(role, Some(LeaseRole::Observer { .. }));
    let end = |status| if follower { Next::Follow } else { Next::Finish(Box::new(status)) };
    match decision {
        Decision::Continue => Next::Continue,
        Decision::Hold { reason } if window_done => end(ReleaseStatus::Held { reason: reason.clone() }),
        Decision::Hold { .. } => Next::Continue,
        Decision::RequireApproval { reason, proposed } => {
            end(ReleaseStatus::AwaitingApproval { reason: reason.clone(), proposed: proposed.clone() })
        }
        Decision::Deny { reason } => end(ReleaseStatus::Denied { reason: reason.clone() }),
        Decision::Promote | Decision::Rollback { .. } if follower => Next::Follow,
        Decision::Promote | Decision::Rollback { .. } => Next::Act,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RollbackPlan;

    fn rollback() -> Decision {
        Decision::Rollback {
            plan: RollbackPlan {
                target: "t".into(),
                from_revision: "v2".into(),
                to_revision: "v1".into(),
                reason: "r".into(),
            },
        }
    }

    #[test]
    fn only_the_holder_acts() {
        let holder = LeaseRole::Holder { token: 3 };
        let observer = LeaseRole::Observer { holder: "other".into(), token: 3 };
        assert_eq!(what_now(&rollback(), false, Some(&holder), RunMode::Act), Next::Act);
        assert_eq!(what_now(&rollback(), false, Some(&observer), RunMode::Act), Next::Follow);
        assert_eq!(what_now(&Decision::Promote, true, Some(&observer), RunMode::Act), Next::Follow);
    }

    #[test]
    fn a_hold_ends_the_release_only_when_the_window_has_passed() {
        let hold = Decision::Hold { reason: "no data".into() };
        assert_eq!(what_now(&hold, false, None, RunMode::Advise), Next::Continue);
        assert!(
            matches!(what_now(&hold, true, None, RunMode::Advise), Next::Finish(s) if matches!(*s, ReleaseStatus::Held { .. }))
        );
    }

    #[test]
    fn advising_plans_without_a_lease() {
        assert_eq!(what_now(&rollback(), false, None, RunMode::Advise), Next::Act);
        assert_eq!(what_now(&Decision::Continue, true, None, RunMode::Advise), Next::Continue);
    }
}

#[cfg(test)]
mod label_tests {
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
