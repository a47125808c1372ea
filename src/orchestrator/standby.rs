//! A release this agent does not hold: it is neither observed nor judged
//! here (the holder does that, and writes the one tick record per tick);
//! this agent only watches the target's lease and claims it when
//! [`seat::standby`] says so — at once when it ranks first, and when the
//! holder stops renewing, within the lease plus one check. Between checks it
//! sleeps until the lease's known expiry at least (renewals only push it
//! later), so thousands of standbys wake about once a lease, not once a tick.
//! A holder with more than its share hands a quiet release over ([`seat::holding`]).

use std::time::Duration;

use tracing::{debug, info};

use super::seat::{self, Holding, HoldingView, Standby, StandbyView};
use super::{Judged, LoopState, Observer, ReleaseRun, RunOutcome, aborted};
use crate::executor::Guarded;
use crate::ledger::{LeaseOp, LeaseRole, LeaseRow, LedgerError, Roster};
use crate::orchestrator::human::OperatorState;
use crate::orchestrator::{Conclusion, ReleaseStatus};
use crate::policy::Decision;

/// What one look at the lease found.
enum Look {
    /// The release ended (another agent finished it, or this one just found it recovered to its end).
    Ended(Box<RunOutcome>),
    /// This agent holds it now: go on ticking.
    Holding,
    /// Look again after this long.
    Sleep(Duration),
}

/// Shortest wait between two standby checks (a replay at full speed must not spin).
const MIN_CHECK: Duration = Duration::from_millis(20);

impl ReleaseRun<'_> {
    /// Wait as a standby until this agent holds the release (`None`: go on
    /// ticking, recovered from the ledger), or it ends (another agent
    /// finished it, an operator aborted it, or this agent stops).
    pub(super) async fn stand_by(
        &self,
        executor: &Guarded,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<RunOutcome>, LedgerError> {
        let handed = self.agent.seats.as_ref().map(|s| s.standing_by(&self.lease));
        let done = self.standby_loop(executor, st, observer, handed.as_deref()).await;
        if let Some(seats) = &self.agent.seats {
            seats.stood_down(&self.lease);
        }
        done
    }

    async fn standby_loop(
        &self,
        executor: &Guarded,
        st: &mut LoopState,
        observer: &mut dyn Observer,
        handed: Option<&tokio::sync::Notify>,
    ) -> Result<Option<RunOutcome>, LedgerError> {
        let mut stop = self.stop.clone();
        let mut operator = self.controls.map(|c| c.operator.clone());
        let mut free_since: Option<i64> = None;
        loop {
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                return self.finish(st, ReleaseStatus::Interrupted, None).await.map(Some);
            }
            if self.operator_state() == OperatorState::Aborted {
                return self.finish(st, aborted(), None).await.map(Some);
            }
            let sleep = match self.look(executor, st, observer, &mut free_since).await? {
                Look::Ended(done) => return Ok(Some(*done)),
                Look::Holding => return Ok(None),
                Look::Sleep(d) => d,
            };
            self.refuse_requests().await;
            let until = tokio::time::Instant::now() + sleep;
            // An answer cannot reach a standby (it shows no open request), and a person's request
            // is relayed to the holder by the agent; one that raced in is refused at the next look;
            // an operator's change is read at the top.
            let handed_over = async {
                match handed {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wait_a_while((until, Duration::from_secs(3600)), &mut stop, operator.as_mut()) => {}
                () = handed_over => {}
            }
        }
    }

    /// One look at the lease: the release ended elsewhere, this agent now
    /// holds it (recovered), or how long to sleep before the next look.
    async fn look(
        &self,
        executor: &Guarded,
        st: &mut LoopState,
        observer: &mut dyn Observer,
        free_since: &mut Option<i64>,
    ) -> Result<Look, LedgerError> {
        let now_ms = self.agent.clock.now_ms();
        let row = self.lease_now(now_ms).await?;
        let free = row.as_ref().is_none_or(|r| r.expires_ms <= now_ms);
        if (free || self.agent.seats.as_ref().is_some_and(|s| s.finished(&self.facts.release_id)))
            && let Some(done) = self.ledger.finished(&self.facts.release_id).await?.filter(|d| d.status.is_final())
        {
            return Ok(Look::Ended(Box::new(self.recorded(done, Conclusion::OtherAgent))));
        }
        let since = match &row {
            Some(r) if r.expires_ms <= now_ms => r.expires_ms,
            Some(_) => {
                *free_since = None;
                now_ms
            }
            None => *free_since.get_or_insert(now_ms),
        };
        let roster = self.agent.seats.as_ref().and_then(|s| s.roster());
        match seat::standby(&self.standby_view(row.as_ref(), roster.as_deref(), now_ms, since)) {
            Standby::Claim => {
                let role = self.claim_lease().await?;
                self.note_role(st, role);
                if matches!(st.role, Some(LeaseRole::Holder { .. })) {
                    return Ok(match self.on_acquire(executor, st).await? {
                        Some(done) => Look::Ended(Box::new(done)),
                        None => Look::Holding,
                    });
                }
            }
            Standby::Wait(waiting) => {
                debug!(?waiting, "Standing by.");
                observer.on_standby(&waiting);
            }
        }
        // A live holder's lease cannot lapse before its known expiry: sleep until then.
        let live_ms = row.as_ref().map_or(0, |r| r.expires_ms - now_ms).max(0) as u64;
        Ok(Look::Sleep(self.check_every().max(Duration::from_millis(live_ms))))
    }

    fn standby_view<'a>(
        &'a self,
        row: Option<&'a LeaseRow>,
        roster: Option<&'a Roster>,
        now_ms: i64,
        free_since_ms: i64,
    ) -> StandbyView<'a> {
        let seats = self.agent.seats.as_deref();
        StandbyView {
            me: &self.agent.instance,
            lease: &self.lease,
            row,
            roster,
            held: seats.map_or(0, |s| s.held()),
            capacity: seats.and_then(|s| s.capacity),
            now_ms,
            free_since_ms,
            check_ms: self.check_every().as_millis() as i64,
            ttl_ms: self.agent.lease_ms,
        }
    }

    /// The lease row now: from the roster when it shows a live holder
    /// (renewals only push a lapse later), else read fresh.
    async fn lease_now(&self, now_ms: i64) -> Result<Option<LeaseRow>, LedgerError> {
        let roster = self.agent.seats.as_ref().and_then(|s| s.roster());
        if let Some(row) = roster.as_ref().and_then(|r| r.leases.get(&self.lease))
            && row.expires_ms > now_ms
        {
            return Ok(Some(row.clone()));
        }
        self.ledger.lease(&self.lease).await
    }

    /// Time between standby checks: a tick, but at least a tenth of the lease
    /// (thousands of standbys need not wake faster than a takeover could happen).
    pub(super) fn check_every(&self) -> Duration {
        let tenth = Duration::from_millis((self.agent.lease_ms / 10).max(0) as u64);
        self.pace.max(tenth).max(MIN_CHECK)
    }

    /// The lease op a holder's tick carries: renew the seat held, or refuse the record if it was lost.
    pub(super) fn keep_op(&self, st: &LoopState) -> LeaseOp {
        match &st.role {
            Some(LeaseRole::Holder { token }) => LeaseOp::Keep {
                target: self.lease.clone(),
                holder: self.agent.instance.clone(),
                token: *token,
                ttl_ms: self.agent.lease_ms,
            },
            Some(LeaseRole::Follower { .. }) | None => self.claim(),
        }
    }

    /// After a quiet tick, give the release back if this agent holds more than its share.
    pub(super) async fn maybe_shed(&self, t: &Judged, st: &mut LoopState) -> Result<(), LedgerError> {
        let Some(seats) = self.agent.seats.as_ref() else { return Ok(()) };
        let Some(LeaseRole::Holder { token }) = st.role else { return Ok(()) };
        let quiet = matches!(t.outcome.decision, Decision::Continue)
            && t.failure.is_none()
            && t.judged.findings.iter().all(|f| f.status.is_clear())
            && st.asking.is_none()
            && self.operator_state() == OperatorState::Running;
        let roster = seats.roster();
        let view = HoldingView {
            me: &self.agent.instance,
            lease: &self.lease,
            roster: roster.as_deref(),
            held: seats.held(),
            now_ms: self.agent.clock.now_ms(),
            ttl_ms: self.agent.lease_ms,
            quiet,
        };
        let Holding::Shed { to } = seat::holding(&view) else { return Ok(()) };
        if !seats.take_shed() {
            return Ok(());
        }
        info!(to = %to, token, lease = %self.lease, "Handing the release over: this agent holds more than its share.");
        let hand = LeaseOp::Hand {
            target: self.lease.clone(),
            holder: self.agent.instance.clone(),
            token,
            to,
            ttl_ms: self.agent.lease_ms,
        };
        let done = self.ledger.submit(self.append(None, Some(hand))).await?;
        if done.role.is_some() {
            self.note_role(st, done.role);
        }
        Ok(())
    }
}
