//! Agents compacting the ledger on their own (`[ledger] compact_after_days`):
//! every few minutes, the tick records of releases that ended that long ago
//! are summed up (`ledger::compact`). Several agents may do it at once: each
//! group is one transaction holding the head, and a release already summed
//! up is skipped.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::ledger::Ledger;
use crate::orchestrator::AgentContext;

/// Longest time between two compactions.
const EVERY_AT_MOST: Duration = Duration::from_secs(600);
/// Shortest time between two compactions.
const EVERY_AT_LEAST: Duration = Duration::from_secs(1);
/// Releases summed up per pass at most, so one pass never holds the
/// database for long (the rest wait for the next pass).
const PER_PASS: u64 = 5_000;

/// How long to wait between passes for an age of `after_ms`: a tenth of it, within 1 s to 10 min.
pub fn every(after_ms: i64) -> Duration {
    Duration::from_millis((after_ms / 10).max(0) as u64).clamp(EVERY_AT_LEAST, EVERY_AT_MOST)
}

/// Compact now and every [`every`] until `stop` flips; nothing unless `after_days` is set.
pub fn keep_compacting(
    ledger: Arc<Ledger>,
    agent: AgentContext,
    after_days: Option<f64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let Some(days) = after_days else { return tokio::spawn(async {}) };
    let after_ms = (days * 86_400_000.0) as i64;
    tokio::spawn(async move {
        loop {
            let now = agent.clock.now_ms();
            match ledger.compact(now - after_ms, (now, &agent.actor()), PER_PASS).await {
                Ok(done) if done.releases > 0 => {
                    info!(releases = done.releases, removed = done.removed, "Compacted finished releases' ticks.")
                }
                Ok(_) => {}
                Err(e) => warn!(error = %crate::error::chain(&e), "Cannot compact the ledger; trying again later."),
            }
            if tokio::time::timeout(every(after_ms), stop.wait_for(|s| *s)).await.is_ok() {
                return;
            }
        }
    })
}
