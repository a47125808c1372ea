//! Sharing the work with other agents on one ledger: the heartbeat, and the
//! roster every release loop decides on (`orchestrator::seat`). Used by
//! `backstop agent` and by `bench --agents`.

use std::time::Duration;

use tracing::warn;

use crate::ledger::{Ledger, LedgerError, Member};
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

/// How often a process whose id has a fresh heartbeat reads it again.
const OWN_ID_POLL: Duration = Duration::from_millis(200);

/// What this process's own id's heartbeat, read again, says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnId {
    /// Nobody else runs under it: no row, or silent for a lease (a predecessor that died).
    Free,
    /// Unmoved, and heard within a lease: read again.
    Unsure,
    /// It moved since the first read: another process runs under the id.
    Taken,
}

/// `first_seen_ms`: the heartbeat as first read (None: none, or lapsed);
/// `now`: as read at `now_ms`. An agent heartbeats at least four times a
/// lease, so a twin's moves within a lease, and a dead predecessor's lapses.
pub fn own_id(first_seen_ms: Option<i64>, now: Option<&Member>, now_ms: i64, ttl_ms: i64) -> OwnId {
    match (first_seen_ms, now) {
        (None, _) | (_, None) => OwnId::Free,
        (Some(first), Some(m)) if m.seen_ms != first => OwnId::Taken,
        (Some(_), Some(m)) if m.seen_ms + ttl_ms > now_ms => OwnId::Unsure,
        (Some(_), Some(_)) => OwnId::Free,
    }
}

/// Refused while another process could hold this one's leases beside it:
/// a live agent of another kind (another version; [`Roster::other_kind`](crate::ledger::Roster::other_kind)),
/// or a live process under this one's instance id ([`own_id`]: a fresh
/// heartbeat of this id is watched until it moves — a twin — or lapses —
/// a predecessor that died, so a restart under a fixed `agent.instance_id`
/// waits out at most the rest of a lease). Checked before anything acting
/// starts (`agent`, `watch`); a twin started within the same heartbeat is not seen.
pub async fn may_start(ledger: &Ledger, agent: &AgentContext) -> Result<(), LedgerError> {
    let started = agent.clock.now_ms();
    let roster = ledger.roster(started).await?;
    if let Some(m) = roster.other_kind(&agent.instance, started, agent.lease_ms) {
        return Err(LedgerError::OtherAgentKind { instance: m.instance.clone(), age_ms: started - m.seen_ms });
    }
    let first = roster.member(&agent.instance).map(|m| m.seen_ms).filter(|s| s + agent.lease_ms > started);
    let mut now = (roster.member(&agent.instance).cloned(), started);
    loop {
        match own_id(first, now.0.as_ref(), now.1, agent.lease_ms) {
            OwnId::Free => return Ok(()),
            OwnId::Taken => {
                return Err(LedgerError::SameInstance { instance: agent.instance.clone(), waited_ms: now.1 - started });
            }
            OwnId::Unsure => {
                if now.1 == started {
                    warn!(instance = %agent.instance, lease_ms = agent.lease_ms,
                        "This instance id's heartbeat is fresh: a process under it that stopped, or one still running. \
                         Waiting for it to lapse (then this one starts) or move (then this one refuses).");
                }
                tokio::time::sleep(OWN_ID_POLL).await;
            }
        }
        let at = agent.clock.now_ms();
        now = (ledger.member(&agent.instance).await?, at);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ms: i64) -> Member {
        Member { instance: "me".into(), capacity: None, seen_ms: ms, sharing: Some(crate::ledger::SHARING) }
    }

    /// A fresh heartbeat of this process's own id: moved means a twin runs,
    /// silent for a lease means the predecessor died, anything else is read again.
    #[test]
    fn a_moved_heartbeat_is_a_twin_and_a_lapsed_one_a_predecessor() {
        assert_eq!(own_id(None, Some(&seen(9_000)), 10_000, 5_000), OwnId::Free, "none fresh at the first read");
        assert_eq!(own_id(Some(9_000), None, 10_000, 5_000), OwnId::Free, "left the roster since");
        assert_eq!(own_id(Some(9_000), Some(&seen(9_000)), 10_000, 5_000), OwnId::Unsure);
        assert_eq!(own_id(Some(9_000), Some(&seen(9_000)), 14_000, 5_000), OwnId::Free, "silent for a lease");
        assert_eq!(own_id(Some(9_000), Some(&seen(9_500)), 10_000, 5_000), OwnId::Taken);
        assert_eq!(own_id(Some(9_000), Some(&seen(9_500)), 20_000, 5_000), OwnId::Taken, "it moved, whenever read");
    }
}
