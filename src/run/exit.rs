//! The documented exit codes, in one place: every command that runs
//! releases (`watch`, `advise`, `demo`, `approve`) maps outcomes here.

use crate::executor::ActionKind;
use crate::orchestrator::{ReleaseStatus, RunOutcome};
use crate::policy::{Decision, Proposal};

/// Promoted (or, with no executor configured, promotion recommended: the pipeline promotes).
pub const PROMOTED: u8 = 0;
/// Rolled back, and the rollback verified.
pub const ROLLED_BACK: u8 = 10;
/// Rollback called for but not executed (no executor, approval needed, denied), or it
/// failed or did not verify: held for a human, the target's state needs a look.
pub const ROLLBACK_NOT_EXECUTED: u8 = 11;
/// Held for a human (approval to promote, not enough evidence, aborted, or the promotion failed).
pub const HELD: u8 = 12;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// A signal source, the ledger or the agent failed.
pub const BACKEND: u8 = 3;
/// `audit verify` found tampering.
pub const TAMPERED: u8 = 4;
/// Stopped by SIGINT/SIGTERM between ticks.
pub const INTERRUPTED: u8 = 130;

/// Exit code for one release's outcome.
pub fn code(o: &RunOutcome) -> u8 {
    for_status(&o.status, o.signal_failure.is_some())
}

/// Exit code for a status; `signal_failed`: the last tick had no observation.
pub fn for_status(status: &ReleaseStatus, signal_failed: bool) -> u8 {
    match status {
        ReleaseStatus::Promoted => PROMOTED,
        ReleaseStatus::RolledBack => ROLLED_BACK,
        ReleaseStatus::Recommended { decision: Decision::Promote, .. } => PROMOTED,
        ReleaseStatus::Recommended { .. }
        | ReleaseStatus::Denied { .. }
        | ReleaseStatus::ActionFailed { action: ActionKind::Rollback, .. }
        | ReleaseStatus::ActionNotVerified { action: ActionKind::Rollback, .. }
        | ReleaseStatus::ActionUnresolved { action: ActionKind::Rollback, .. }
        | ReleaseStatus::AwaitingApproval { proposed: Proposal::Rollback { .. }, .. } => ROLLBACK_NOT_EXECUTED,
        ReleaseStatus::Held { .. } if signal_failed => BACKEND,
        ReleaseStatus::Held { .. }
        | ReleaseStatus::Aborted { .. }
        | ReleaseStatus::AwaitingApproval { .. }
        | ReleaseStatus::ActionFailed { action: ActionKind::Promote, .. }
        | ReleaseStatus::ActionNotVerified { action: ActionKind::Promote, .. }
        | ReleaseStatus::ActionUnresolved { action: ActionKind::Promote, .. }
        | ReleaseStatus::ActionFailed { action: ActionKind::Raise { .. }, .. }
        | ReleaseStatus::ActionNotVerified { action: ActionKind::Raise { .. }, .. }
        | ReleaseStatus::ActionUnresolved { action: ActionKind::Raise { .. }, .. } => HELD,
        ReleaseStatus::Interrupted => INTERRUPTED,
    }
}

/// The code of several releases: the most severe (an interruption over a
/// backend failure over a rollback not executed over a hold over a rollback).
pub fn worst(codes: impl IntoIterator<Item = u8>) -> u8 {
    codes.into_iter().max_by_key(|c| severity(*c)).unwrap_or(PROMOTED)
}

fn severity(code: u8) -> u8 {
    match code {
        INTERRUPTED => 6,
        BACKEND => 5,
        ROLLBACK_NOT_EXECUTED => 4,
        HELD => 3,
        ROLLED_BACK => 2,
        _ => 1,
    }
}

/// Exit code of a fleet release: interrupted, else the most severe of its
/// members' and reverts' endings (a member never started counts for nothing).
pub fn for_fleet(o: &super::fleet::FleetOutcome) -> u8 {
    use crate::orchestrator::fleet::MemberState;
    if o.end.is_none() {
        return INTERRUPTED;
    }
    let ended = |s: &MemberState| match s {
        MemberState::Ended { status, .. } => Some(for_status(status, false)),
        MemberState::NotStarted | MemberState::Unfinished => None,
    };
    worst(o.members.iter().flat_map(|m| [ended(&m.release), ended(&m.revert)]).flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_outcome_decides_and_none_is_success() {
        assert_eq!(worst([PROMOTED, ROLLED_BACK, HELD]), HELD);
        assert_eq!(worst([ROLLED_BACK, ROLLBACK_NOT_EXECUTED, HELD]), ROLLBACK_NOT_EXECUTED);
        assert_eq!(worst([]), PROMOTED);
        assert_eq!(for_status(&ReleaseStatus::Held { reason: "x".into() }, true), BACKEND);
        assert_eq!(for_status(&ReleaseStatus::Aborted { reason: "x".into() }, false), HELD);
    }
}
