//! Release memory: what the ledger knows of a service's revisions across
//! releases, targets and agents — which were rolled back (quarantined, with
//! the evidence that condemned them), which were verified running on which
//! target — and what follows for a new release: whether its candidate is
//! quarantined, and which revision it rolls back to. Pure: the ledger reads
//! the events, this module folds them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What policy does with a release of a quarantined revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineAction {
    /// Judge it and roll it back as any release, but never promote it
    /// without a person: an approver promotes it (approval request, `promote
    /// now`) or clears the quarantine.
    #[default]
    Hold,
    /// Never promote it, not even on a person's word, until an approver
    /// clears the quarantine (`backstop revisions clear`).
    Refuse,
}

/// `[quarantine]` in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantinePolicy {
    /// `hold` (default) or `refuse`.
    #[serde(default)]
    pub action: QuarantineAction,
}

/// Why a revision is known bad: the rollback that condemned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Condemned {
    /// The release that rolled it back.
    pub release_id: String,
    /// Where.
    pub target: String,
    /// The revision traffic went back to.
    pub rolled_back_to: String,
    /// Policy's reason for the rollback (the judge's summary, or the person's words).
    pub reason: String,
    /// The findings that failed at that tick, one line each (at most [`EVIDENCE_MAX`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// Most evidence lines a condemnation keeps (the rest are in its release's ticks).
pub const EVIDENCE_MAX: usize = 8;

/// One event in a revision's history (the body of a `revision` ledger record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RevisionEvent {
    /// Rolled back (the decision was carried out): quarantined for its service.
    Condemned(Condemned),
    /// Verified running on a target: a promotion, or the revision a rollback returned to.
    Verified {
        /// The target.
        target: String,
        /// The release whose action was verified.
        release_id: String,
    },
    /// A person lifted the quarantine.
    Cleared {
        /// Their reason, as typed (untrusted text).
        reason: String,
    },
}

impl RevisionEvent {
    /// One line for a person (`audit list`, `revisions show`).
    pub fn describe(&self) -> String {
        match self {
            RevisionEvent::Condemned(c) => format!(
                "rolled back on `{}` to {} by release {}: {} — quarantined",
                c.target, c.rolled_back_to, c.release_id, c.reason
            ),
            RevisionEvent::Verified { target, release_id } => {
                format!("verified running on `{target}` (release {release_id})")
            }
            RevisionEvent::Cleared { reason } => format!("quarantine cleared: {reason}"),
        }
    }
}

/// A revision event as the ledger holds it: whose, when, by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionFact {
    /// The revision.
    pub revision: String,
    /// Unix ms it was recorded.
    pub at_ms: i64,
    /// Who recorded it (the ledger's actor).
    pub by: String,
    /// What happened.
    pub event: RevisionEvent,
}

/// A quarantine in force: the condemnation, when and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Quarantine {
    /// The revision.
    pub revision: String,
    /// Unix ms it was condemned.
    pub at_ms: i64,
    /// Who carried out the rollback.
    pub by: String,
    /// The rollback and its evidence.
    pub condemned: Condemned,
}

impl Quarantine {
    /// One line for a person: what, where, when, by which release, and why.
    pub fn describe(&self) -> String {
        let c = &self.condemned;
        let at = crate::clock::utc_text(self.at_ms);
        format!(
            "revision {} was rolled back on `{}` to {} at {at} by release {} ({})",
            self.revision, c.target, c.rolled_back_to, c.release_id, c.reason
        )
    }
}

/// One revision's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionState {
    /// The quarantine in force, if any.
    pub quarantine: Option<Quarantine>,
    /// Every condemnation, cleared or not, oldest first.
    pub condemned: Vec<Quarantine>,
    /// Targets it was verified running on, with the unix ms of the newest verification.
    pub verified_on: BTreeMap<String, i64>,
}

/// A service's revisions as the ledger knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRevisions {
    /// By revision.
    pub revisions: BTreeMap<String, RevisionState>,
}

impl ServiceRevisions {
    /// Fold events, in ledger order.
    pub fn fold(facts: impl IntoIterator<Item = RevisionFact>) -> Self {
        let mut out = Self::default();
        for f in facts {
            let state = out.revisions.entry(f.revision.clone()).or_default();
            match f.event {
                RevisionEvent::Condemned(condemned) => {
                    let q = Quarantine { revision: f.revision, at_ms: f.at_ms, by: f.by, condemned };
                    state.condemned.push(q.clone());
                    state.quarantine = Some(q);
                }
                RevisionEvent::Verified { target, .. } => {
                    state.verified_on.insert(target, f.at_ms);
                }
                RevisionEvent::Cleared { .. } => state.quarantine = None,
            }
        }
        out
    }

    /// The quarantine in force on `revision`, if any.
    pub fn quarantine(&self, revision: &str) -> Option<&Quarantine> {
        self.revisions.get(revision).and_then(|s| s.quarantine.as_ref())
    }

    /// Revisions verified on `target`, newest verification first.
    fn verified_on(&self, target: &str) -> Vec<(&str, i64)> {
        let mut v: Vec<(&str, i64)> = self
            .revisions
            .iter()
            .filter_map(|(rev, s)| s.verified_on.get(target).map(|at| (rev.as_str(), *at)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(a.0)));
        v
    }
}

/// Where a release's last-known-good revision came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum LastKnownGoodOrigin {
    /// The configuration (or registration) named it, and the ledger does not contradict it.
    Configured,
    /// The ledger: the newest revision verified on the target and not quarantined.
    Ledger {
        /// Unix ms of that verification.
        verified_at_ms: i64,
    },
}

/// What a release starts with from the ledger's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recalled {
    /// The revision to roll back to, if any is known.
    pub last_known_good: Option<String>,
    /// Where it came from (`None` when there is none).
    pub origin: Option<LastKnownGoodOrigin>,
    /// The candidate's quarantine, if it is quarantined.
    pub quarantine: Option<Quarantine>,
}

/// A configured last-known-good revision the ledger contradicts. Both facts are named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Contradiction {
    /// It was itself rolled back.
    #[error(
        "last_known_good `{configured}` contradicts the ledger: {} — it is quarantined (clear it with `backstop revisions clear`, or name another revision)",
        quarantine.describe()
    )]
    Quarantined {
        /// The configured value.
        configured: String,
        /// Its quarantine.
        quarantine: Box<Quarantine>,
    },
    /// The ledger knows what ran on the target, and this was never verified there.
    #[error(
        "last_known_good `{configured}` contradicts the ledger: it was never verified running on `{target}`, where the ledger verified {} (newest first); name one of those, or leave last_known_good out to use the newest",
        verified.join(", ")
    )]
    NeverVerified {
        /// The configured value.
        configured: String,
        /// The target.
        target: String,
        /// Revisions verified there, newest first (at most five).
        verified: Vec<String>,
    },
}

/// What a release of `candidate` on `target` starts with, given the
/// configured last-known-good revision and the service's revisions. A
/// configured revision is refused when it is quarantined, or when the
/// ledger knows what ran on the target and it was never verified there; an
/// empty one becomes the newest revision verified on the target (not the
/// candidate, not quarantined).
pub fn recall(
    candidate: &str,
    target: &str,
    configured: Option<&str>,
    known: &ServiceRevisions,
) -> Result<Recalled, Contradiction> {
    let quarantine = known.quarantine(candidate).cloned();
    let verified = known.verified_on(target);
    if let Some(c) = configured {
        if let Some(q) = known.quarantine(c) {
            return Err(Contradiction::Quarantined { configured: c.into(), quarantine: Box::new(q.clone()) });
        }
        if !verified.is_empty() && !verified.iter().any(|(r, _)| *r == c) {
            let names = verified.iter().take(5).map(|(r, _)| (*r).to_string()).collect();
            return Err(Contradiction::NeverVerified { configured: c.into(), target: target.into(), verified: names });
        }
        let origin = Some(LastKnownGoodOrigin::Configured);
        return Ok(Recalled { last_known_good: Some(c.into()), origin, quarantine });
    }
    let newest = verified.into_iter().find(|(r, _)| *r != candidate && known.quarantine(r).is_none());
    Ok(Recalled {
        last_known_good: newest.map(|(r, _)| r.to_string()),
        origin: newest.map(|(_, at)| LastKnownGoodOrigin::Ledger { verified_at_ms: at }),
        quarantine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(revision: &str, at_ms: i64, event: RevisionEvent) -> RevisionFact {
        RevisionFact { revision: revision.into(), at_ms, by: "agent:a".into(), event }
    }

    fn verified(target: &str) -> RevisionEvent {
        RevisionEvent::Verified { target: target.into(), release_id: "r".into() }
    }

    fn condemned(target: &str) -> RevisionEvent {
        RevisionEvent::Condemned(Condemned {
            release_id: "r-bad".into(),
            target: target.into(),
            rolled_back_to: "v41".into(),
            reason: "error_ratio +5 pt".into(),
            evidence: vec!["error_ratio: canary 5.2 % vs 0.2 %".into()],
        })
    }

    #[test]
    fn a_revision_rolled_back_on_one_target_is_quarantined_on_every_target_until_cleared() {
        let known = ServiceRevisions::fold([fact("v42", 10, condemned("eu-1"))]);
        let r = recall("v42", "us-1", Some("v41"), &known).unwrap();
        let q = r.quarantine.expect("quarantined on another target");
        assert_eq!(q.condemned.target, "eu-1");
        assert!(q.describe().contains("rolled back on `eu-1` to v41"), "{}", q.describe());
        let cleared = ServiceRevisions::fold([
            fact("v42", 10, condemned("eu-1")),
            fact("v42", 20, RevisionEvent::Cleared { reason: "flaky dependency, fixed".into() }),
        ]);
        assert_eq!(recall("v42", "us-1", Some("v41"), &cleared).unwrap().quarantine, None);
        assert_eq!(cleared.revisions["v42"].condemned.len(), 1, "the history keeps the condemnation");
        let again = ServiceRevisions::fold([
            fact("v42", 10, condemned("eu-1")),
            fact("v42", 20, RevisionEvent::Cleared { reason: "x".into() }),
            fact("v42", 30, condemned("us-1")),
        ]);
        assert_eq!(recall("v42", "eu-1", None, &again).unwrap().quarantine.map(|q| q.at_ms), Some(30));
    }

    #[test]
    fn last_known_good_is_the_newest_verified_revision_on_the_target_that_is_not_quarantined() {
        let known = ServiceRevisions::fold([
            fact("v40", 1, verified("eu-1")),
            fact("v41", 2, verified("eu-1")),
            fact("v43", 3, verified("us-1")),
            fact("v42", 4, verified("eu-1")),
            fact("v42", 5, condemned("us-1")),
        ]);
        let r = recall("v44", "eu-1", None, &known).unwrap();
        assert_eq!(r.last_known_good.as_deref(), Some("v41"), "v42 is quarantined, v43 never ran on eu-1");
        assert_eq!(r.origin, Some(LastKnownGoodOrigin::Ledger { verified_at_ms: 2 }));
        assert_eq!(recall("v41", "eu-1", None, &known).unwrap().last_known_good.as_deref(), Some("v40"));
        let unknown = recall("v44", "ap-1", None, &known).unwrap();
        assert_eq!((unknown.last_known_good, unknown.origin), (None, None), "nothing verified on ap-1");
    }

    #[test]
    fn a_configured_revision_the_ledger_contradicts_is_refused_naming_both_facts() {
        let known = ServiceRevisions::fold([
            fact("v41", 1, verified("eu-1")),
            fact("v42", 2, verified("eu-1")),
            fact("v42", 3, condemned("us-1")),
        ]);
        let bad = recall("v44", "eu-1", Some("v42"), &known).unwrap_err();
        let text = bad.to_string();
        assert!(text.contains("last_known_good `v42`") && text.contains("rolled back on `us-1`"), "{text}");
        let never = recall("v44", "eu-1", Some("v39"), &known).unwrap_err().to_string();
        assert!(never.contains("`v39`") && never.contains("never verified running on `eu-1`"), "{never}");
        assert!(never.contains("v41"), "names what was verified there: {never}");
        let fine = recall("v44", "eu-1", Some("v41"), &known).unwrap();
        assert_eq!(fine.origin, Some(LastKnownGoodOrigin::Configured));
        let new_target = recall("v44", "ap-1", Some("v39"), &known).unwrap();
        assert_eq!(new_target.last_known_good.as_deref(), Some("v39"), "nothing known on ap-1 contradicts it");
    }
}
