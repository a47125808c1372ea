//! Sharing the work with other agents on the ledger (see `run::share`).

use std::sync::Arc;

use crate::ledger::LedgerError;
use crate::run::share::{Joined, Start, keep_refreshing};

use super::Agent;

impl Agent {
    /// Keep the heartbeat and the roster current until [`Agent::leave_roster`]
    /// (nothing when advising): through a stop too, while loops finish.
    /// [`Start::Stopped`]: a stop signal came while it waited to start.
    pub async fn keep_sharing(self: &Arc<Self>) -> Result<Start, LedgerError> {
        let (ledger, agent) = (self.runtime.ledger.clone(), self.runtime.agent.clone());
        let heartbeat = match keep_refreshing(ledger, agent, self.runtime.stop.clone()).await? {
            Joined::Beating(heartbeat) => heartbeat,
            Joined::Advising => return Ok(Start::Go),
            Joined::Stopped => return Ok(Start::Stopped),
        };
        *self.heartbeat.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(heartbeat);
        Ok(Start::Go)
    }

    /// Compact finished releases' ticks every few minutes, when `ledger.compact_after_days` is set.
    pub fn keep_compacting(self: &Arc<Self>) {
        let (ledger, agent) = (self.runtime.ledger.clone(), self.runtime.agent.clone());
        let days = self.runtime.settings.ledger.compact_after_days;
        crate::run::compaction::keep_compacting(ledger, agent, days, self.runtime.stop.clone());
    }

    /// Stop the heartbeat and leave the roster after a clean stop (every loop has ended).
    pub async fn leave_roster(&self) {
        let heartbeat = self.heartbeat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(h) = heartbeat {
            h.leave().await;
        }
    }
}
