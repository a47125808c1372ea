//! Release memory in the loop: what a release starts with from the ledger
//! (its candidate's quarantine, the revision it rolls back to), what it
//! learns while it runs (a quarantine made elsewhere meanwhile, a person
//! clearing one), and what it leaves for the next release (a rolled-back
//! revision condemned with its evidence, a revision verified on the target).

use std::borrow::Cow;

use tracing::info;

use super::{LoopState, ReleaseRun};
use crate::executor::ActionPlan;
use crate::judge::{JudgeResult, Verdict};
use crate::ledger::{LedgerError, Record, RevisionRecord};
use crate::policy::memory::{self, Condemned, Contradiction, EVIDENCE_MAX, RevisionEvent};
use crate::policy::{Decision, ReleaseFacts};

impl ReleaseRun<'_> {
    /// The facts this release runs with: as configured, with the ledger's
    /// memory applied — the candidate's quarantine, and the last-known-good
    /// revision from the ledger when none is configured — or the
    /// contradiction that refuses it.
    pub(super) async fn recall(&self) -> Result<Result<ReleaseFacts, Contradiction>, LedgerError> {
        let f = &self.facts;
        let known = self.ledger.service_revisions(&f.service).await?;
        let recalled = memory::recall(&f.candidate_revision, &f.target, f.last_known_good.as_deref(), &known);
        Ok(recalled.map(|r| ReleaseFacts {
            last_known_good: r.last_known_good,
            last_known_good_from: r.origin,
            quarantine: r.quarantine,
            ..f.clone()
        }))
    }

    /// Look at the candidate's quarantine again when it matters: while one
    /// is in force (a person may clear it) and when the judge passes the
    /// canary (another target may have rolled the revision back meanwhile).
    /// Otherwise no query: one per release per tick would be 10,000 a tick.
    pub(super) async fn refresh_quarantine(&self, st: &mut LoopState, judged: &JudgeResult) -> Result<(), LedgerError> {
        if st.quarantine.is_none() && judged.verdict != Verdict::Pass {
            return Ok(());
        }
        let known = self.ledger.service_revisions(&self.facts.service).await?;
        let now = known.quarantine(&self.facts.candidate_revision).cloned();
        if now != st.quarantine {
            info!(quarantined = now.is_some(), "The candidate's quarantine changed in the ledger.");
        }
        st.quarantine = now;
        Ok(())
    }

    /// The facts as they stand now (the quarantine may have changed since the start).
    pub(super) fn facts_now<'s>(&'s self, st: &LoopState) -> Cow<'s, ReleaseFacts> {
        if st.quarantine == self.facts.quarantine {
            Cow::Borrowed(&self.facts)
        } else {
            Cow::Owned(ReleaseFacts { quarantine: st.quarantine.clone(), ..self.facts.clone() })
        }
    }

    /// A rollback is about to run: the candidate is known bad for its
    /// service from now on, with the evidence. Written before the intent, so
    /// a crash between them leaves the revision quarantined, never a
    /// rollback with the revision still trusted.
    pub(super) async fn condemn(&self, decision: &Decision, st: &LoopState) -> Result<(), LedgerError> {
        let Decision::Rollback { plan } = decision else { return Ok(()) };
        let condemned = Condemned {
            release_id: self.facts.release_id.clone(),
            target: plan.target.clone(),
            rolled_back_to: plan.to_revision.clone(),
            reason: plan.reason.clone(),
            evidence: st.failing.clone(),
        };
        self.remember(&plan.from_revision, RevisionEvent::Condemned(condemned)).await
    }

    /// An action took effect: the revision it left running (its plan's
    /// `to_revision`: the candidate of a promotion, the last-known-good of a
    /// rollback) is verified on the target.
    pub(super) async fn verified(&self, plan: &ActionPlan) -> Result<(), LedgerError> {
        let event = RevisionEvent::Verified { target: plan.target.clone(), release_id: self.facts.release_id.clone() };
        self.remember(&plan.to_revision, event).await
    }

    async fn remember(&self, revision: &str, event: RevisionEvent) -> Result<(), LedgerError> {
        let service = self.facts.service.clone();
        let id = RevisionRecord::ledger_id(&service, revision);
        let record = Record::Revision(RevisionRecord { service, revision: revision.to_string(), event });
        self.ledger.append(&id, &self.agent.actor(), self.agent.clock.now_ms(), record).await?;
        Ok(())
    }
}

/// The failing findings of a judgement, one line each: a condemnation's evidence.
pub(super) fn failing_lines(judged: &JudgeResult) -> Vec<String> {
    if judged.verdict != Verdict::Fail {
        return vec![];
    }
    judged.failing().take(EVIDENCE_MAX).map(|f| format!("{}: {}", f.metric, f.explanation)).collect()
}
