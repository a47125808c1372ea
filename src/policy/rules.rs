//! The rules policy can fire, by stable id: what a trace, the ledger and
//! every report name. One enum, its text derived once (strum), so a rule is
//! never matched by its spelling and a new one cannot be half-named.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A rule's stable id (`judge.verdict`, `invariant.irreversible`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString, strum::EnumIter)]
pub enum RuleId {
    /// The judge's verdict at this tick (always first).
    #[strum(serialize = "judge.verdict")]
    JudgeVerdict,
    /// An advisory run: a recommendation only.
    #[strum(serialize = "mode.advise")]
    ModeAdvise,
    /// Policy's decision (always last).
    #[strum(serialize = "decision")]
    Decision,
    /// A signal backend failed: hold, never roll back on it alone.
    #[strum(serialize = "invariant.signal_failure_holds")]
    SignalFailureHolds,
    /// Missing data holds.
    #[strum(serialize = "invariant.missing_data_holds")]
    MissingDataHolds,
    /// An irreversible release is never rolled back automatically.
    #[strum(serialize = "invariant.irreversible")]
    Irreversible,
    /// Only the named override may approve an irreversible rollback.
    #[strum(serialize = "invariant.irreversible_override")]
    IrreversibleOverride,
    /// Actions touch declared targets only.
    #[strum(serialize = "invariant.declared_target")]
    DeclaredTarget,
    /// A rollback needs a recorded last-known-good revision.
    #[strum(serialize = "invariant.last_known_good")]
    LastKnownGood,
    /// At most N automated rollbacks per target per window.
    #[strum(serialize = "invariant.rate_limit")]
    RateLimit,
    /// A guard on the canary was breached.
    #[strum(serialize = "guard.canary_breach")]
    GuardCanaryBreach,
    /// A guard was breached on both sides: an incident.
    #[strum(serialize = "guard.shared_breach")]
    GuardSharedBreach,
    /// The baseline moved on its own: an incident.
    #[strum(serialize = "judge.baseline_shifted")]
    BaselineShifted,
    /// The judge is still gathering evidence.
    #[strum(serialize = "judge.running")]
    JudgeRunning,
    /// The window ended without enough evidence.
    #[strum(serialize = "judge.window_complete_inconclusive")]
    WindowCompleteInconclusive,
    /// A freeze window is active.
    #[strum(serialize = "freeze.active")]
    FreezeActive,
    /// The service's autonomy lets backstop act.
    #[strum(serialize = "autonomy.auto")]
    AutonomyAuto,
    /// The service's autonomy makes a human decide.
    #[strum(serialize = "autonomy.human")]
    AutonomyHuman,
    /// The candidate was rolled back before: a person promotes it, or clears it.
    #[strum(serialize = "memory.quarantine_holds")]
    QuarantineHolds,
    /// The candidate was rolled back before: not promoted until a person clears it.
    #[strum(serialize = "memory.quarantine_refuses")]
    QuarantineRefuses,
    /// A wave of a fleet release failed: the fleet stops.
    #[strum(serialize = "waves.failed")]
    WaveFailed,
    /// A target an earlier wave promoted is rolled back.
    #[strum(serialize = "waves.rollback_promoted")]
    WaveRollsBackPromoted,
    /// A target an earlier wave promoted is held for a person.
    #[strum(serialize = "waves.hold_promoted")]
    WaveHoldsPromoted,
    /// A rollback within policy.
    #[strum(serialize = "rollback.within_policy")]
    RollbackWithinPolicy,
    /// A drift holds for a human.
    #[strum(serialize = "ml.drift_holds")]
    DriftHolds,
    /// The window ended waiting for labels: held.
    #[strum(serialize = "ml.labels_pending_hold")]
    LabelsPendingHold,
    /// The window ended waiting for labels: promoted with a watch.
    #[strum(serialize = "ml.labels_pending_promote_with_watch")]
    LabelsPendingPromoteWithWatch,
    /// The model cannot loosen a judge failure.
    #[strum(serialize = "model.cannot_loosen")]
    ModelCannotLoosen,
    /// The model concurs with a promotion.
    #[strum(serialize = "model.concurs")]
    ModelConcurs,
    /// The model asks to hold.
    #[strum(serialize = "model.hold")]
    ModelHold,
    /// Policy requires a model verdict before promotion and there is none.
    #[strum(serialize = "model.required_missing")]
    ModelRequiredMissing,
    /// Policy requires a model verdict and the model is unavailable.
    #[strum(serialize = "model.required_unavailable")]
    ModelRequiredUnavailable,
    /// A model rollback allowed by policy, with verified evidence.
    #[strum(serialize = "model.rollback_corroborated")]
    ModelRollbackCorroborated,
    /// A model rollback that needs a human.
    #[strum(serialize = "model.rollback_needs_human")]
    ModelRollbackNeedsHuman,
    /// A person asked for a rollback.
    #[strum(serialize = "human.rollback")]
    HumanRollback,
    /// A person asked for a promotion.
    #[strum(serialize = "human.promote")]
    HumanPromote,
    /// An approval policy still proposes: executed.
    #[strum(serialize = "approval.approved")]
    ApprovalApproved,
    /// The approver rejected.
    #[strum(serialize = "approval.rejected")]
    ApprovalRejected,
    /// The answer came after the request expired.
    #[strum(serialize = "approval.expired")]
    ApprovalExpired,
    /// The answerer is not an approver.
    #[strum(serialize = "approval.not_an_approver")]
    NotAnApprover,
    /// Judged again, policy cannot confirm the proposal now (a hold or a denial).
    #[strum(serialize = "approval.cannot_confirm")]
    ApprovalCannotConfirm,
    /// Judged again, policy proposes something else: stale.
    #[strum(serialize = "approval.stale")]
    ApprovalStale,
    /// An operator's hold closed the request.
    #[strum(serialize = "approval.closed_by_hold")]
    ClosedByHold,
    /// An operator's abort closed the request.
    #[strum(serialize = "approval.closed_by_abort")]
    ClosedByAbort,
    /// The judge acted on its own, superseding the request.
    #[strum(serialize = "approval.superseded_by_judge")]
    SupersededByJudge,
    /// The release ended with the request open.
    #[strum(serialize = "approval.closed_by_end")]
    ClosedByEnd,
    /// A rule id this version does not know (a record written by another version).
    #[strum(default)]
    Other(String),
}

impl RuleId {
    /// The id as written in traces and the ledger.
    pub fn as_str(&self) -> Cow<'static, str> {
        match self {
            RuleId::Other(s) => Cow::Owned(s.clone()),
            known => Cow::Borrowed(known.into()),
        }
    }

    /// Whether the model's verdict fired this rule.
    pub fn is_model(&self) -> bool {
        matches!(
            self,
            RuleId::ModelCannotLoosen
                | RuleId::ModelConcurs
                | RuleId::ModelHold
                | RuleId::ModelRequiredMissing
                | RuleId::ModelRequiredUnavailable
                | RuleId::ModelRollbackCorroborated
                | RuleId::ModelRollbackNeedsHuman
        )
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for RuleId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for RuleId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // `Other` takes any text, so parsing never fails.
        Ok(text.parse().unwrap_or(RuleId::Other(text)))
    }
}

impl JsonSchema for RuleId {
    fn schema_name() -> Cow<'static, str> {
        "RuleId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "description": "A rule's stable id, such as `judge.verdict`." })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn every_id_reads_back_as_itself_and_an_unknown_one_is_kept() {
        for id in RuleId::iter().filter(|r| !matches!(r, RuleId::Other(_))) {
            let text = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<RuleId>(&text).unwrap(), id, "{text}");
        }
        let old: RuleId = serde_json::from_str("\"policy.retired_rule\"").unwrap();
        assert_eq!(old, RuleId::Other("policy.retired_rule".into()));
        assert_eq!(serde_json::to_string(&old).unwrap(), "\"policy.retired_rule\"");
    }
}
