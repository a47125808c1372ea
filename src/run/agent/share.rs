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

    /// Leave the roster after a clean stop (every loop has ended).
    pub async fn leave_roster(&self) {
        crate::run::share::leave(&self.runtime.ledger, &self.runtime.agent).await;
    }
}
