//! Sharing the work with other agents on one ledger: the heartbeat, and the
//! roster every release loop decides on (`orchestrator::seat`). Used by
//! `backstop agent` and by `bench --agents`.

use std::time::Duration;

use tracing::warn;

use crate::ledger::{Ledger, LedgerError, Roster};
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

/// Refused while another process could hold this one's leases beside it:
/// a live agent of another kind (another version; [`Roster::other_kind`](crate::ledger::Roster::other_kind)),
/// or a live process under this one's instance id. A heartbeat of this id
/// heard within a lease is a predecessor that died (a restart with a fixed
/// `agent.instance_id`) or a twin still running: read again after two
/// heartbeats' time, a twin's has moved. Checked before anything acting
/// starts (`agent`, `watch`); a twin started within the same two heartbeats
/// is not seen.
pub async fn may_start(ledger: &Ledger, agent: &AgentContext) -> Result<(), LedgerError> {
    let now = agent.clock.now_ms();
    let roster = ledger.roster(now).await?;
    if let Some(m) = roster.other_kind(&agent.instance, now, agent.lease_ms) {
        return Err(LedgerError::OtherAgentKind { instance: m.instance.clone(), age_ms: now - m.seen_ms });
    }
    let live = |r: &Roster, now: i64| r.member(&agent.instance).filter(|m| m.seen_ms + agent.lease_ms > now).cloned();
    let Some(before) = live(&roster, now) else { return Ok(()) };
    let wait = 2 * refresh_every(agent);
    tokio::time::sleep(wait).await;
    let now = agent.clock.now_ms();
    match live(&ledger.roster(now).await?, now) {
        Some(m) if m.seen_ms != before.seen_ms => {
            Err(LedgerError::SameInstance { instance: agent.instance.clone(), waited_ms: wait.as_millis() as i64 })
        }
        Some(_) | None => Ok(()),
    }
}

/// An acting `watch` on the roster: its heartbeat, capacity 0 (it takes no
/// releases from the agents, [`Roster::working`]), so agents of this version
/// and of later ones see it as they start. Dropped: the heartbeat stops and
/// the row lapses after a lease; [`Presence::end`] removes it at once.
pub struct Presence {
    task: tokio::task::JoinHandle<()>,
    ledger: std::sync::Arc<Ledger>,
    instance: String,
}

impl Presence {
    /// Heartbeat as `agent` from now on, once [`may_start`] allows it.
    pub async fn start(ledger: std::sync::Arc<Ledger>, agent: &AgentContext) -> Result<Self, LedgerError> {
        may_start(&ledger, agent).await?;
        ledger.heartbeat(&agent.instance, Some(0), agent.clock.now_ms()).await?;
        let (every, beating, instance) = (refresh_every(agent), ledger.clone(), agent.instance.clone());
        let agent = agent.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = beating.heartbeat(&agent.instance, Some(0), agent.clock.now_ms()).await {
                    warn!(error = %crate::error::chain(&e), "Cannot write the heartbeat.");
                }
            }
        });
        Ok(Self { task, ledger, instance })
    }

    /// Stop the heartbeat and leave the roster (the run is over).
    pub async fn end(self) {
        self.task.abort();
        if let Err(e) = self.ledger.leave(&self.instance).await {
            warn!(error = %crate::error::chain(&e), "Cannot leave the roster; the row lapses after a lease.");
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Refresh once now, then keep refreshing until `stop` flips; refused as
/// [`may_start`] says.
pub async fn keep_refreshing(
    ledger: std::sync::Arc<Ledger>,
    agent: AgentContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, LedgerError> {
    if agent.seats.is_none() {
        return Ok(tokio::spawn(async {}));
    }
    may_start(&ledger, &agent).await?;
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
