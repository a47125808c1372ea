//! Release memory as the service offers it: every revision's state for the
//! API and the command line, and a person clearing a quarantine, ruled by
//! policy (`policy::approval::rule_clear`) and recorded under their identity.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::ledger::{Actor, Ledger, LedgerError, Record, RevisionRecord};
use crate::policy::PolicyFile;
use crate::policy::approval::{ClearRefused, Principal, rule_clear};
use crate::policy::memory::{Quarantine, RevisionEvent, RevisionState};

/// One revision as the ledger remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RevisionView {
    /// The service.
    pub service: String,
    /// The revision.
    pub revision: String,
    /// The quarantine in force, with the rollback that condemned it.
    pub quarantine: Option<Quarantine>,
    /// Targets it was verified running on, with the unix ms of the newest verification.
    pub verified_on: BTreeMap<String, i64>,
    /// Rollbacks that condemned it, cleared or not.
    pub rollbacks: usize,
}

impl RevisionView {
    fn of(service: &str, revision: &str, s: &RevisionState) -> Self {
        RevisionView {
            service: service.into(),
            revision: revision.into(),
            quarantine: s.quarantine.clone(),
            verified_on: s.verified_on.clone(),
            rollbacks: s.condemned.len(),
        }
    }
}

/// Every revision the ledger knows, by service then revision.
pub async fn revisions(ledger: &Ledger) -> Result<Vec<RevisionView>, LedgerError> {
    let all = ledger.all_revisions().await?;
    Ok(all
        .iter()
        .flat_map(|(svc, known)| known.revisions.iter().map(move |(rev, s)| RevisionView::of(svc, rev, s)))
        .collect())
}

/// A clearing that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClearError {
    /// Policy refused it.
    #[error("not cleared")]
    Refused(#[from] ClearRefused),
    /// The ledger failed.
    #[error("reading or writing the ledger")]
    Ledger(#[from] LedgerError),
}

/// A person lifts `revision`'s quarantine: policy rules (an approver of the
/// service, a quarantine in force, a reason); the clearing is recorded under
/// `actor` before it counts. Running releases see it at their next tick.
pub async fn clear(
    ledger: &Ledger,
    policy: &PolicyFile,
    (service, revision): (&str, &str),
    (actor, who): (&Actor, &Principal),
    (reason, now_ms): (&str, i64),
) -> Result<RevisionView, ClearError> {
    let known = ledger.service_revisions(service).await?;
    rule_clear(policy, (service, revision), who, reason, &known)?;
    let record = Record::Revision(RevisionRecord {
        service: service.into(),
        revision: revision.into(),
        event: RevisionEvent::Cleared { reason: reason.into() },
    });
    ledger.append(&RevisionRecord::ledger_id(service, revision), actor, now_ms, record).await?;
    let known = ledger.service_revisions(service).await?;
    let state = known.revisions.get(revision).cloned().unwrap_or_default();
    Ok(RevisionView::of(service, revision, &state))
}
