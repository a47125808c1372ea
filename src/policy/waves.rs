//! A fleet release whose wave failed: what happens to the targets an
//! earlier wave (or the failing one) already promoted. Pure, like every
//! rule: the fleet coordinator carries out the decision, each rollback its
//! own release with its own permit, intent and verification.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Decision, History, PolicyFile, PolicyOutcome, ReleaseFacts, RollbackPlan, RuleHit, RuleId};

/// `[waves]` in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WavesPolicy {
    /// What a failed wave does to the targets already promoted: `rollback` (default) or `hold`.
    #[serde(default)]
    pub on_failure: OnWaveFailure,
}

/// What a failed wave does to the waves already promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OnWaveFailure {
    /// Roll each promoted target back to its last-known-good revision.
    #[default]
    Rollback,
    /// Leave them promoted and hold the fleet for a person.
    Hold,
}

/// A promoted member of a fleet whose wave `failed_wave` (1-based) failed.
#[derive(Debug, Clone)]
pub struct RevertAsk<'a> {
    /// The promoted release (its candidate is running on its target).
    pub release: &'a ReleaseFacts,
    /// Automated rollbacks of its target in the rate limit's window.
    pub history: &'a History,
    /// Why the fleet stopped, in one line (which member failed, and how).
    pub why: &'a str,
    /// Now, unix ms.
    pub now_ms: i64,
}

/// Roll the promoted target back, or hold it for a person. The guardrails
/// of any automatic rollback hold: an irreversible release is held, the
/// target must be declared and have a last-known-good revision, and the
/// rate limit counts this rollback like the judge's.
pub fn rule_revert(policy: &PolicyFile, ask: &RevertAsk) -> PolicyOutcome {
    let r = ask.release;
    let mut trace = vec![RuleHit { rule: RuleId::WaveFailed, detail: ask.why.to_string() }];
    let window_ms = i64::from(policy.rate_limit.window_minutes) * 60_000;
    let recent = ask.history.recent(ask.now_ms, window_ms);
    let hold = |rule: RuleId, detail: String, trace: &mut Vec<RuleHit>| {
        trace.push(RuleHit { rule, detail: detail.clone() });
        Decision::Hold { reason: format!("{}; {detail}; held for a person", ask.why) }
    };
    let decision = if policy.waves.on_failure == OnWaveFailure::Hold {
        hold(RuleId::WaveHoldsPromoted, "policy [waves] on_failure = \"hold\"".into(), &mut trace)
    } else if !r.declared_targets.iter().any(|d| d == &r.target) {
        hold(RuleId::DeclaredTarget, format!("target {} is not declared", r.target), &mut trace)
    } else if r.last_known_good.is_none() {
        hold(RuleId::LastKnownGood, "no last-known-good revision recorded".into(), &mut trace)
    } else if r.irreversible {
        hold(RuleId::Irreversible, "the release is irreversible: never rolled back automatically".into(), &mut trace)
    } else if recent.len() >= policy.rate_limit.max_rollbacks as usize {
        let detail = format!(
            "{} automated rollbacks of {} in {} min ({})",
            recent.len(),
            r.target,
            policy.rate_limit.window_minutes,
            History::named(&recent)
        );
        hold(RuleId::RateLimit, detail, &mut trace)
    } else {
        trace.push(RuleHit { rule: RuleId::WaveRollsBackPromoted, detail: r.target.clone() });
        let plan = RollbackPlan {
            target: r.target.clone(),
            from_revision: r.candidate_revision.clone(),
            to_revision: r.last_known_good.clone().unwrap_or_default(),
            reason: format!("{}; the promoted wave is rolled back (policy [waves] on_failure = \"rollback\")", ask.why),
        };
        Decision::Rollback { plan }
    };
    trace.push(RuleHit { rule: RuleId::Decision, detail: decision.label().to_string() });
    PolicyOutcome { decision, trace }
}
