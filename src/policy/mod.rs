//! Policy: a pure, synchronous function from (judge result, model verdict,
//! release facts, history, mode) to a [`Decision`] and the trace of rules
//! that produced it. The invariants of `DESIGN.md` are code here; the policy
//! file only tunes numbers within bounds.

pub mod approval;
mod decide;
pub mod file;
pub mod memory;
mod rules;
pub mod waves;

use schemars::JsonSchema;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use decide::evaluate;
pub use file::{Autonomy, DEFAULT_POLICY, FreezeWindow, IrreversibleAction, PolicyFile, PolicyFileError, RateLimit};
pub use rules::RuleId;

use crate::judge::JudgeResult;

/// What the agent will do. Produced only by [`evaluate`]; acted on only by the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Decision {
    /// The window passed: send all traffic to the canary.
    Promote,
    /// Nothing to do yet: keep watching.
    Continue,
    /// Stop advancing and tell a human; keep watching.
    Hold {
        /// Why.
        reason: String,
    },
    /// A human must approve the proposed action before anything happens.
    RequireApproval {
        /// Why a human is needed.
        reason: String,
        /// What would happen on approval.
        proposed: Proposal,
    },
    /// Roll back now, exactly as planned.
    Rollback {
        /// Where traffic goes, derived from configuration and the ledger, never from a model.
        plan: RollbackPlan,
    },
    /// The action the evidence calls for is not allowed at all.
    Deny {
        /// Why.
        reason: String,
    },
}

impl Decision {
    /// Short label for logs, the ledger and reports (the stored tag).
    pub fn label(&self) -> &'static str {
        self.into()
    }

    /// Why, in policy's words (empty for a promotion or going on).
    pub fn reason(&self) -> &str {
        match self {
            Decision::Promote | Decision::Continue => "",
            Decision::Hold { reason } | Decision::RequireApproval { reason, .. } | Decision::Deny { reason } => reason,
            Decision::Rollback { plan } => &plan.reason,
        }
    }
}

/// An action awaiting a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Proposal {
    /// Promote the canary.
    Promote,
    /// Roll back as planned.
    Rollback {
        /// The plan.
        plan: RollbackPlan,
    },
}

impl Proposal {
    /// The same action on the same target and revisions (the reason text
    /// follows the judge's summary and changes from tick to tick).
    pub fn same_action(&self, other: &Proposal) -> bool {
        match (self, other) {
            (Proposal::Promote, Proposal::Promote) => true,
            (Proposal::Rollback { plan: a }, Proposal::Rollback { plan: b }) => a.same_action(b),
            _ => false,
        }
    }
}

impl RollbackPlan {
    /// Same target and revisions, whatever the reason text.
    pub fn same_action(&self, other: &RollbackPlan) -> bool {
        self.target == other.target
            && self.from_revision == other.from_revision
            && self.to_revision == other.to_revision
    }
}

/// Where a rollback goes. Built by policy from release facts only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RollbackPlan {
    /// The declared target the executor acts on.
    pub target: String,
    /// The revision being rolled back.
    pub from_revision: String,
    /// The recorded last-known-good revision.
    pub to_revision: String,
    /// Why, in one line.
    pub reason: String,
}

/// Facts about the release, from configuration and the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseFacts {
    /// Release id.
    pub release_id: String,
    /// Service name (selects per-service autonomy).
    pub service: String,
    /// The target this release acts on.
    pub target: String,
    /// How many targets the configuration declares for this service (its
    /// `[[releases]]`, and agent targets open to it): what policy's
    /// `blast_radius.max_percent` is a percentage of. 0: not known.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub service_targets: u32,
    /// Targets declared in configuration; nothing else may be touched.
    /// Shared by every release of a process (one list, not one per release:
    /// with 10,000 releases a copy each is 10⁸ strings). Stored as its
    /// count only (see [`declared`]): read back from the ledger it is empty,
    /// and whoever decides again takes the list from configuration.
    #[serde(with = "declared")]
    #[schemars(with = "declared::Stored")]
    pub declared_targets: Arc<[String]>,
    /// Revision under judgement.
    pub candidate_revision: String,
    /// Last revision recorded as good, if any.
    pub last_known_good: Option<String>,
    /// Where `last_known_good` came from: the configuration, or the ledger's
    /// newest verified revision on the target (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_good_from: Option<memory::LastKnownGoodOrigin>,
    /// The candidate revision was rolled back before (on any target, by any
    /// agent sharing the ledger) and not cleared: never promoted without a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<memory::Quarantine>,
    /// The release includes an irreversible change (e.g. a schema migration).
    pub irreversible: bool,
    /// Environment (`production`, `staging`, ...).
    pub environment: String,
}

/// How a release's declared targets are written: as their number. The
/// list is the configuration's, the same for every release of a process,
/// and 10,000 releases each writing 10,000 names put 1 GiB into the ledger
/// at their starts (`backstop bench`). Records written before hold the list;
/// both read.
pub mod declared {
    use std::sync::Arc;

    use schemars::JsonSchema;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The stored shape: the list (older records) or its count.
    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(untagged)]
    pub enum Stored {
        /// Records written before: every declared target.
        List(Vec<String>),
        /// How many targets were declared.
        Count {
            /// The number.
            count: usize,
        },
    }

    /// Write the count.
    pub fn serialize<S: Serializer>(targets: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
        Stored::Count { count: targets.len() }.serialize(s)
    }

    /// Read either shape; a count reads as no list.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[String]>, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::List(list) => list.into(),
            Stored::Count { .. } => Arc::from([]),
        })
    }
}

/// What the ledger says about recent history of this target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Automated rollbacks of this target, oldest first.
    pub automated_rollbacks: Vec<PastRollback>,
}

/// One automated rollback the ledger recorded (its intent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastRollback {
    /// When its intent was written (unix ms).
    pub at_ms: i64,
    /// The release rolled back.
    pub release_id: String,
}

impl History {
    /// The rollbacks within `window_ms` before `now_ms`.
    pub fn recent(&self, now_ms: i64, window_ms: i64) -> Vec<&PastRollback> {
        self.automated_rollbacks.iter().filter(|r| now_ms - r.at_ms < window_ms).collect()
    }

    /// The releases of `recent`, for a person: the ids, newest first, at most five.
    pub fn named(recent: &[&PastRollback]) -> String {
        let mut ids: Vec<&str> = recent.iter().rev().map(|r| r.release_id.as_str()).collect();
        ids.dedup();
        let more = ids.len().saturating_sub(5);
        let mut text = ids.into_iter().take(5).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    }
}

/// How the agent is running.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RunMode {
    /// `watch`/`demo`: may act within policy.
    Act,
    /// `advise`/dry-run: decisions are recommendations only.
    Advise,
}

/// The model's verdict as policy sees it (the model arrives in a later
/// release; this is its seam).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ModelInput {
    /// No model is configured.
    NotConfigured,
    /// The model could not be reached, timed out, or was rejected.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A validated verdict.
    Verdict {
        /// What the model recommends.
        recommendation: ModelRecommendation,
        /// Every cited evidence id exists and shows a canary-only problem.
        evidence_verified: bool,
    },
}

/// The model's recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelRecommendation {
    /// Promote.
    Promote,
    /// Keep watching.
    Continue,
    /// Hold for a human.
    Hold,
    /// Roll back.
    Rollback,
}

/// Everything policy decides on.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    /// The judge's result at this tick.
    pub judge: &'a JudgeResult,
    /// The model's verdict, or why there is none.
    pub model: &'a ModelInput,
    /// Release facts.
    pub release: &'a ReleaseFacts,
    /// Recent history of the target.
    pub history: &'a History,
    /// Act or advise.
    pub mode: RunMode,
    /// A signal backend failed at this tick (its reason).
    pub signal_failure: Option<&'a str>,
    /// Wall-clock unix ms, for rate limits and freeze windows.
    pub now_ms: i64,
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuleHit {
    /// Stable rule id (`judge.verdict`, `invariant.irreversible`, ...).
    pub rule: RuleId,
    /// What it saw.
    pub detail: String,
}

/// A decision and how it was reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyOutcome {
    /// The decision.
    pub decision: Decision,
    /// Rules in the order they fired.
    pub trace: Vec<RuleHit>,
}

#[cfg(test)]
mod tests;

fn is_zero(n: &u32) -> bool {
    *n == 0
}
