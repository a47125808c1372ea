//! Sharing the work with other agents on one ledger: the heartbeat, and the
//! roster every release loop decides on (`orchestrator::seat`). Used by
//! `backstop agent` and by `bench --agents`.

use std::sync::Arc;
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
/// A stop signal during the wait ends it at once ([`Start::Stopped`]): a lease can be an hour.
pub async fn may_start(
    ledger: &Ledger,
    agent: &AgentContext,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Start, LedgerError> {
    let started = agent.clock.now_ms();
    let roster = ledger.roster(started).await?;
    if let Some(m) = roster.other_kind(&agent.instance, started, agent.lease_ms) {
        return Err(LedgerError::OtherAgentKind { instance: m.instance.clone(), age_ms: started - m.seen_ms });
    }
    let mine = roster.member(&agent.instance).cloned();
    let first = mine.as_ref().map(|m| m.seen_ms).filter(|s| s + agent.lease_ms > started);
    let mut now = (mine, started);
    loop {
        match own_id(first, now.0.as_ref(), now.1, agent.lease_ms) {
            OwnId::Free => return Ok(Start::Go),
            OwnId::Taken => {
                return Err(LedgerError::SameInstance { instance: agent.instance.clone(), waited_ms: now.1 - started });
            }
            OwnId::Unsure => {
                if now.1 == started {
                    warn!(instance = %agent.instance, lease_ms = agent.lease_ms,
                        "This instance id's heartbeat is fresh: a process under it that stopped, or one still running. \
                         Waiting for it to lapse (then this one starts) or move (then this one refuses).");
                }
                // A dropped sender disables the stop arm: the wait goes on.
                tokio::select! {
                    () = tokio::time::sleep(OWN_ID_POLL) => {}
                    Ok(_) = stop.wait_for(|s| *s) => return Ok(Start::Stopped),
                }
            }
        }
        let at = agent.clock.now_ms();
        now = (ledger.member(&agent.instance).await?, at);
    }
}

/// What a process says when [`Start::Stopped`] ends it (the agent exits 0, a `watch` 130).
pub const STOPPED_WAITING: &str =
    "stopped while waiting for this instance id's heartbeat to lapse or move: nothing ran";

/// Whether a process may start, once [`may_start`] has waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nothing else runs under this id or as another kind of agent.
    Go,
    /// A stop signal came while it waited: start nothing.
    Stopped,
}

/// What joining the roster came to.
pub enum Joined {
    /// On the roster, beating until [`Heartbeat::leave`].
    Beating(Heartbeat),
    /// Not on the roster: this process only advises (no seats).
    Advising,
    /// A stop signal came while [`may_start`] waited: nothing started.
    Stopped,
}

/// One write of a heartbeat loop, every [`refresh_every`].
pub trait Beat: Send + 'static {
    /// Write the heartbeat (and whatever else this kind of process reads with it).
    fn beat(&mut self) -> impl std::future::Future<Output = Result<(), LedgerError>> + Send;
}

/// An agent's beat: the heartbeat with its capacity, the roster and the finished releases ([`refresh`]).
struct Sharing {
    ledger: Arc<Ledger>,
    agent: AgentContext,
    /// The last finished-release record read.
    after: i64,
}

impl Beat for Sharing {
    async fn beat(&mut self) -> Result<(), LedgerError> {
        refresh(&self.ledger, &self.agent, &mut self.after).await
    }
}

/// An acting `watch`'s beat: the heartbeat only, capacity 0, so it takes no
/// releases from the agents ([`Roster::working`](crate::ledger::Roster::working))
/// and agents of this version and of later ones see it as they start.
struct Present {
    ledger: Arc<Ledger>,
    agent: AgentContext,
}

impl Beat for Present {
    async fn beat(&mut self) -> Result<(), LedgerError> {
        self.ledger.heartbeat(&self.agent.instance, Some(0), self.agent.clock.now_ms()).await
    }
}

/// A heartbeat loop this process runs. [`Heartbeat::leave`] stops it, waits
/// for a write in flight, then removes the row: a write already handed to the
/// database lands even when the task that sent it is aborted, so aborting and
/// then deleting could leave a row behind that the others count for a lease.
/// Dropped (a crash, a failed start): the loop is aborted and the row lapses after a lease.
pub struct Heartbeat {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    ledger: Arc<Ledger>,
    instance: String,
}

impl Heartbeat {
    /// `beat` every `every` until [`Heartbeat::leave`]; `instance` is the row it writes.
    pub fn spawn(mut beat: impl Beat, every: Duration, ledger: Arc<Ledger>, instance: String) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            // The sender gone counts as a stop too (`wait_for` ends either way).
            while tokio::time::timeout(every, stopped.wait_for(|s| *s)).await.is_err() {
                if let Err(e) = beat.beat().await {
                    warn!(error = %crate::error::chain(&e), "Cannot write the heartbeat or read the roster.");
                }
            }
        });
        Self { stop, task: Some(task), ledger, instance }
    }

    /// Stop beating, wait for a beat in flight, and leave the roster, so the
    /// others count this process gone at once instead of after a lease.
    pub async fn leave(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Err(e) = self.ledger.leave(&self.instance).await {
            warn!(error = %crate::error::chain(&e), "Cannot leave the roster; the others count this process gone after a lease.");
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// An acting `watch` on the roster, once [`may_start`] allows it: one heartbeat now, then [`Present`]'s.
pub async fn be_present(
    ledger: Arc<Ledger>,
    agent: &AgentContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Joined, LedgerError> {
    if may_start(&ledger, agent, &mut stop).await? == Start::Stopped {
        return Ok(Joined::Stopped);
    }
    ledger.heartbeat(&agent.instance, Some(0), agent.clock.now_ms()).await?;
    let present = Present { ledger: ledger.clone(), agent: agent.clone() };
    Ok(Joined::Beating(Heartbeat::spawn(present, refresh_every(agent), ledger, agent.instance.clone())))
}

/// An agent on the roster, once [`may_start`] allows it: one refresh now,
/// then [`Sharing`]'s until [`Heartbeat::leave`].
pub async fn keep_refreshing(
    ledger: Arc<Ledger>,
    agent: AgentContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Joined, LedgerError> {
    if agent.seats.is_none() {
        return Ok(Joined::Advising);
    }
    if may_start(&ledger, &agent, &mut stop).await? == Start::Stopped {
        return Ok(Joined::Stopped);
    }
    let mut after = ledger.checkpoint().await?.seq;
    refresh(&ledger, &agent, &mut after).await?;
    let (every, instance) = (refresh_every(&agent), agent.instance.clone());
    Ok(Joined::Beating(Heartbeat::spawn(Sharing { ledger: ledger.clone(), agent, after }, every, ledger, instance)))
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

    /// Hands its write to another task after `delay`, as a database runs a
    /// statement it was sent even when the sender is gone; `landed` is then
    /// whether the write succeeded.
    struct Handed {
        ledger: Arc<Ledger>,
        delay: Duration,
        landed: Arc<tokio::sync::watch::Sender<Option<bool>>>,
        began: Arc<tokio::sync::Notify>,
    }

    impl Beat for Handed {
        async fn beat(&mut self) -> Result<(), LedgerError> {
            let (ledger, delay, landed) = (self.ledger.clone(), self.delay, self.landed.clone());
            let mut written = self.landed.subscribe();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                landed.send_replace(Some(ledger.heartbeat("me", Some(0), 1).await.is_ok()));
            });
            self.began.notify_one();
            let _ = written.wait_for(Option::is_some).await;
            Ok(())
        }
    }

    /// A heartbeat in flight when the process leaves lands before the row is
    /// removed, never after it (where it would stand for a lease).
    #[tokio::test]
    async fn leaving_waits_for_a_heartbeat_in_flight_so_no_row_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(&crate::ledger::sqlite_url(&dir.path().join("l.db"))).await.unwrap());
        let landed = Arc::new(tokio::sync::watch::channel(None).0);
        let began = Arc::new(tokio::sync::Notify::new());
        let delay = Duration::from_millis(300);
        let handed = Handed { ledger: ledger.clone(), delay, landed: landed.clone(), began: began.clone() };
        let heartbeat = Heartbeat::spawn(handed, Duration::from_millis(20), ledger.clone(), "me".into());
        began.notified().await;
        heartbeat.leave().await;
        let written = *landed.subscribe().wait_for(Option::is_some).await.unwrap();
        assert_eq!(written, Some(true), "the heartbeat in flight was written");
        assert!(
            ledger.member("me").await.unwrap().is_none(),
            "the heartbeat in flight landed after the row was removed"
        );
    }
}
