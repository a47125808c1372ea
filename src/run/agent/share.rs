//! Sharing the work with other agents on the ledger (see `run::share`).

use std::sync::Arc;

use crate::ledger::LedgerError;

use super::Agent;

impl Agent {
    /// Keep the heartbeat and the roster current until the stop signal (nothing when advising).
    pub async fn keep_sharing(self: &Arc<Self>) -> Result<(), LedgerError> {
        let (ledger, agent) = (self.runtime.ledger.clone(), self.runtime.agent.clone());
        crate::run::share::keep_refreshing(ledger, agent, self.runtime.stop.clone()).await.map(drop)
    }

    /// Compact finished releases' ticks every few minutes, when `ledger.compact_after_days` is set.
    pub fn keep_compacting(self: &Arc<Self>) {
        let (ledger, agent) = (self.runtime.ledger.clone(), self.runtime.agent.clone());
        let days = self.runtime.settings.ledger.compact_after_days;
        crate::run::compaction::keep_compacting(ledger, agent, days, self.runtime.stop.clone());
    }

    /// Leave the roster after a clean stop (every loop has ended).
    pub async fn leave_roster(&self) {
        crate::run::share::leave(&self.runtime.ledger, &self.runtime.agent).await;
    }
}
