//! Sharing the work with other agents on one ledger: the heartbeat, and the
//! roster every release loop decides on (`orchestrator::seat`). Used by
//! `backstop agent` and by `bench --agents`.

use std::time::Duration;

use tracing::warn;

use crate::ledger::{Ledger, LedgerError};
use crate::orchestrator::AgentContext;

/// Finished releases read per refresh at most.
const FINISHED_PAGE: i64 = 10_000;

/// Longest time between two refreshes; at least four happen per lease.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// How often `agent` refreshes: every two seconds, and at least four times a lease.
pub fn refresh_every(agent: &AgentContext) -> Duration {
    REFRESH_EVERY.min(Duration::from_millis((agent.lease_ms / 4).max(50) as u64))
}

/// Write `agent`'s heartbeat and read the roster once; `after` is the last
/// finished-release record read, moved on. Nothing without seats.
pub async fn refresh(ledger: &Ledger, agent: &AgentContext, after: &mut i64) -> Result<(), LedgerError> {
    let Some(seats) = agent.seats.as_ref() else { return Ok(()) };
    let now = agent.clock.now_ms();
    ledger.heartbeat(&agent.instance, seats.capacity, now).await?;
    let finished = ledger.finished_after(*after, FINISHED_PAGE).await?;
    if let Some((seq, _)) = finished.last() {
        *after = *seq;
    }
    seats.add_finished(finished.into_iter().map(|(_, id)| id));
    seats.set_roster(ledger.roster(now).await?, &agent.instance, agent.lease_ms);
    Ok(())
}

/// Refused while an agent of another kind (another version) is alive on the
/// ledger ([`Roster::other_kind`](crate::ledger::Roster::other_kind)): its
/// leases and this process's would not exclude each other. Checked before
/// anything acting starts (`agent`, `watch`).
pub async fn alone_in_kind(ledger: &Ledger, agent: &AgentContext) -> Result<(), LedgerError> {
    let now = agent.clock.now_ms();
    match ledger.roster(now).await?.other_kind(&agent.instance, now, agent.lease_ms) {
        Some(m) => Err(LedgerError::OtherAgentKind { instance: m.instance.clone(), age_ms: now - m.seen_ms }),
        None => Ok(()),
    }
}

/// Refresh once now, then keep refreshing until `stop` flips; refused as
/// [`alone_in_kind`] says.
pub async fn keep_refreshing(
    ledger: std::sync::Arc<Ledger>,
    agent: AgentContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, LedgerError> {
    if agent.seats.is_none() {
        return Ok(tokio::spawn(async {}));
    }
    alone_in_kind(&ledger, &agent).await?;
    let mut after = ledger.checkpoint().await?.seq;
    refresh(&ledger, &agent, &mut after).await?;
    let every = refresh_every(&agent);
    Ok(tokio::spawn(async move {
        loop {
            if tokio::time::timeout(every, stop.wait_for(|s| *s)).await.is_ok() {
                return;
            }
            if let Err(e) = refresh(&ledger, &agent, &mut after).await {
                warn!(error = %crate::error::chain(&e), "Cannot write the heartbeat or read the roster.");
            }
        }
    }))
}

/// Leave the roster after a clean stop, so the others count `agent` gone at once instead of after a lease.
pub async fn leave(ledger: &Ledger, agent: &AgentContext) {
    if agent.seats.is_none() {
        return;
    }
    if let Err(e) = ledger.leave(&agent.instance).await {
        warn!(error = %crate::error::chain(&e), "Cannot leave the roster; the others count this agent gone after a lease.");
    }
}
