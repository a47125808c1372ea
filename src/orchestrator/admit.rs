//! A new canary's admission: policy's blast radius (`[blast_radius]
//! max_targets`) lets at most that many targets of one service have a
//! canary at once, across every release and agent on the ledger. The count
//! and the release's start are one ledger transaction, so two agents
//! starting at once cannot both take the last place.

use tracing::warn;

use super::{Conclusion, ReleaseRun, ReleaseStatus, RunOutcome};
use crate::ledger::{Admission, Append, LedgerError, Record, ReleaseFinished};
use crate::policy::RunMode;

impl ReleaseRun<'_> {
    /// Record the release's start. A new acting release under a blast radius
    /// is admitted first; `Some`: it was refused, and ended `denied` naming
    /// the targets already in canary. A continued release was admitted when it began.
    pub(super) async fn admit(
        &self,
        started: Record,
        mode: RunMode,
        continued: bool,
    ) -> Result<Option<RunOutcome>, LedgerError> {
        let limit = self.policy.blast_radius.limit(self.facts.service_targets);
        let limit = limit.filter(|_| mode == RunMode::Act && !continued);
        let Some(max_targets) = limit else {
            self.record(started).await?;
            return Ok(None);
        };
        let admit = Admission { service: self.facts.service.clone(), target: self.facts.target.clone(), max_targets };
        let append = Append { admit: Some(admit), ..self.append(Some(started.clone()), None) };
        let done = self.ledger.submit(append).await?;
        if !done.refused {
            return Ok(None);
        }
        let reason = format!(
            "blast radius: {} already has a canary on {} target(s) ({}), policy's blast radius allows \
             {max_targets} ({}); not started — start it again when one of them ends",
            self.facts.service,
            done.in_canary.len(),
            done.in_canary.join(", "),
            self.policy.blast_radius.says(self.facts.service_targets)
        );
        self.deny_at_start(started, reason).await.map(Some)
    }

    /// End a release before its first tick: started and finished `denied`, `reason` saying why.
    pub(super) async fn deny_at_start(&self, started: Record, reason: String) -> Result<RunOutcome, LedgerError> {
        warn!(%reason, "Release refused at its start.");
        self.record(started).await?;
        let status = ReleaseStatus::Denied { reason };
        let end = ReleaseFinished { status, ticks: 0, decided_at_s: 0, model_usage: Default::default() };
        self.record(Record::ReleaseFinished(end.clone())).await?;
        Ok(self.recorded(end, Conclusion::ThisRun))
    }
}
