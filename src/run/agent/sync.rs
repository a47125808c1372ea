//! Reading what other agents recorded: their registrations, operators'
//! holds, and people's rollback and promotion requests relayed to the agent
//! holding the release.

use std::sync::{Arc, PoisonError};

use tracing::{debug, warn};

use crate::ledger::{
    Actor, LedgerError, OperatorAction, OperatorRecord, PersonRequestRecord, Record, RecordKind, StoredRecord,
};
use crate::orchestrator::human::{OperatorState, PersonRequest, RELAY_WAIT, Relayed};
use crate::policy::approval::Principal;
use crate::release::release_id;

use super::{Agent, ReleaseState, SYNC_EVERY};

/// Operator records read per ledger query while syncing.
const SYNC_PAGE: i64 = 1_000;

impl Agent {
    /// Run, too, every release registered in the ledger (by this agent before a
    /// restart, or by another agent sharing the ledger) that has not finished.
    pub async fn sync(self: &Arc<Self>) -> Result<usize, LedgerError> {
        let mut admitted = 0;
        // Oldest first, page by page: every registration is read, however many came since.
        loop {
            let after = *self.synced.lock().unwrap_or_else(PoisonError::into_inner);
            let rows = self.runtime.ledger.of_kind_from(RecordKind::Operator, after, SYNC_PAGE).await?;
            let full = rows.len() as i64 == SYNC_PAGE;
            admitted += self.sync_page(rows).await?;
            if !full {
                self.take_relayed().await?;
                return Ok(admitted);
            }
        }
    }

    /// Read every person's request relayed through the ledger since the last
    /// read, then offer each one still open to this agent's loop for its
    /// release where that loop is not standing by (the holder's loop rules on
    /// it; one that no longer holds lets it go, and it is offered again).
    async fn take_relayed(&self) -> Result<(), LedgerError> {
        loop {
            let after = *self.relays_read.lock().unwrap_or_else(PoisonError::into_inner);
            let rows = self.runtime.ledger.of_kind_from(RecordKind::PersonRequest, after, SYNC_PAGE).await?;
            let full = rows.len() as i64 == SYNC_PAGE;
            for (stored, rec) in rows {
                *self.relays_read.lock().unwrap_or_else(PoisonError::into_inner) = stored.seq;
                let (Record::PersonRequest(p), Ok(actor)) = (rec, stored.actor.parse::<Actor>()) else { continue };
                let pending = PendingRelay {
                    release_id: stored.release_id,
                    at_ms: stored.at_ms,
                    actor,
                    request: p,
                    offered_ms: None,
                };
                self.relays_pending.lock().unwrap_or_else(PoisonError::into_inner).push(pending);
            }
            if !full {
                return self.offer_relayed().await;
            }
        }
    }

    /// One pass over the pending relayed requests: each is dropped, offered
    /// to the release's loop, or kept, as [`relay_fate`] says. The ledger is
    /// read only for one that would be offered (whether it was ruled on
    /// meanwhile); one no loop here holds just waits, or expires.
    async fn offer_relayed(&self) -> Result<(), LedgerError> {
        let pending = std::mem::take(&mut *self.relays_pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut kept = Vec::with_capacity(pending.len());
        let now_ms = self.runtime.agent.clock.now_ms();
        for mut p in pending {
            let to_loop = self
                .table()
                .values()
                .find(|e| e.view.release_id == p.release_id && e.view.state != ReleaseState::Standby)
                .map(|e| e.to_loop.clone());
            let mut fate = relay_fate(&p, now_ms, to_loop.is_some());
            if fate == RelayFate::Offer {
                fate = unless_ruled(fate, self.runtime.ledger.ruled_on(&p.release_id, &p.request.id).await?);
            }
            match fate {
                RelayFate::Drop(why) => debug!(id = %p.request.id, ?why, "Relayed request no longer pending."),
                RelayFate::Wait => kept.push(p),
                RelayFate::Offer => {
                    if let Some(to_loop) = to_loop
                        && to_loop.requests.try_send(p.to_request()).is_ok()
                    {
                        to_loop.wake.notify_one();
                        p.offered_ms = Some(now_ms);
                    }
                    kept.push(p);
                }
            }
        }
        self.relays_pending.lock().unwrap_or_else(PoisonError::into_inner).extend(kept);
        Ok(())
    }

    /// Take in one page of operator records, in ledger order; how many releases it started.
    async fn sync_page(self: &Arc<Self>, rows: Vec<(StoredRecord, Record)>) -> Result<usize, LedgerError> {
        let mut admitted = 0;
        for (stored, rec) in rows {
            *self.synced.lock().unwrap_or_else(PoisonError::into_inner) = stored.seq;
            let Record::Operator(op) = rec else { continue };
            let OperatorRecord { action: OperatorAction::Register, release: Some(cfg), .. } = op else {
                // A hold, resume or abort, perhaps asked of another agent: this one honours it too.
                let name =
                    self.table().iter().find(|(_, e)| e.view.release_id == stored.release_id).map(|(n, _)| n.clone());
                if let Some(name) = name {
                    self.apply_operator(&name, &stored.release_id, op.action);
                }
                continue;
            };
            let id = release_id(&cfg);
            let known = self.table().get(&cfg.name).map(|e| e.view.release_id.clone());
            if known.as_deref() == Some(id.as_str()) {
                continue;
            }
            if self.runtime.ledger.finished(&id).await?.is_some_and(|f| f.status.is_final()) {
                continue;
            }
            if known.is_some() {
                // A later revision of a release this agent runs (a gate asked about it): the
                // earlier analysis was aborted in the ledger by the agent that started this one.
                if let Some(old) = self.table().remove(&cfg.name) {
                    let _ = old.operator.send(OperatorState::Aborted);
                }
            }
            if self.admit(*cfg, stored.actor.clone()).is_ok() {
                admitted += 1;
            }
        }
        Ok(admitted)
    }

    /// Keep reading registrations until the stop signal.
    pub fn keep_synced(self: &Arc<Self>) {
        let agent = self.clone();
        tokio::spawn(async move {
            let mut stop = agent.runtime.stop.clone();
            loop {
                if let Err(e) = agent.sync().await {
                    warn!(error = %crate::error::chain(&e), "Cannot read registrations from the ledger.");
                }
                if tokio::time::timeout(SYNC_EVERY, stop.wait_for(|s| *s)).await.is_ok() {
                    return;
                }
            }
        });
    }
}

/// A person's request relayed through the ledger, not yet ruled on.
#[derive(Debug, Clone)]
pub(crate) struct PendingRelay {
    release_id: String,
    /// When it was asked, unix ms (its record's time).
    at_ms: i64,
    actor: Actor,
    request: PersonRequestRecord,
    /// When it was last handed to a loop of this agent, unix ms.
    offered_ms: Option<i64>,
}

impl PendingRelay {
    fn to_request(&self) -> PersonRequest {
        let p = &self.request;
        PersonRequest {
            action: p.action,
            actor: self.actor.clone(),
            who: Principal { identity: p.identity.clone(), groups: p.groups.clone() },
            reason: p.reason.clone(),
            reply: None,
            relayed: Some(Relayed { id: p.id.clone(), at_ms: self.at_ms }),
        }
    }
}

/// How long an offered request is left to its loop before it is offered
/// again (the loop may have lost the release before ruling), ms.
const REOFFER_MS: i64 = 10_000;

/// Why a relayed request stops being pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// A ruling under its id is in the ledger.
    Ruled,
    /// Older than [`RELAY_WAIT`]: its sender has told the person no answer came.
    Expired,
}

/// What to do with one pending relayed request at a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayFate {
    Drop(Gone),
    /// Hand it to this agent's loop for the release (the loop checks it is still open).
    Offer,
    /// Keep it: no loop here holds the release, or one was just given it.
    Wait,
}

/// Pure: the fate of `p` at `now_ms`, given whether this agent has a loop
/// for the release that is not standing by. `Offer` is checked against the
/// ledger before it is carried out (a ruling there drops it instead).
pub(crate) fn relay_fate(p: &PendingRelay, now_ms: i64, holding_loop: bool) -> RelayFate {
    if now_ms - p.at_ms > RELAY_WAIT.as_millis() as i64 {
        return RelayFate::Drop(Gone::Expired);
    }
    let due = p.offered_ms.is_none_or(|at| now_ms - at >= REOFFER_MS);
    match (holding_loop, due) {
        (true, true) => RelayFate::Offer,
        (true, false) | (false, _) => RelayFate::Wait,
    }
}

/// Pure: an `Offer` whose request the ledger shows ruled on is dropped instead.
pub(crate) fn unless_ruled(fate: RelayFate, ruled: bool) -> RelayFate {
    match (fate, ruled) {
        (RelayFate::Offer, true) => RelayFate::Drop(Gone::Ruled),
        (fate, _) => fate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::human::PersonAction;

    fn pending(at_ms: i64, offered_ms: Option<i64>) -> PendingRelay {
        PendingRelay {
            release_id: "r".into(),
            at_ms,
            actor: "human:cli:ops@example.com".parse().unwrap(),
            request: PersonRequestRecord {
                id: "rollback-1".into(),
                action: PersonAction::Rollback,
                identity: "ops@example.com".into(),
                groups: vec![],
                reason: "burning".into(),
            },
            offered_ms,
        }
    }

    #[test]
    fn a_request_waits_for_a_holding_loop_and_is_offered_again_until_ruled_or_expired() {
        let p = pending(1_000, None);
        assert_eq!(relay_fate(&p, 2_000, false), RelayFate::Wait, "no loop here holds it: a takeover");
        assert_eq!(relay_fate(&p, 3_000, true), RelayFate::Offer, "the new holder gets it");
        let offered = pending(1_000, Some(3_000));
        assert_eq!(relay_fate(&offered, 4_000, true), RelayFate::Wait, "just given to the loop");
        assert_eq!(relay_fate(&offered, 3_000 + REOFFER_MS, true), RelayFate::Offer, "not ruled yet: again");
        let late = 1_000 + RELAY_WAIT.as_millis() as i64 + 1;
        assert_eq!(relay_fate(&p, late, true), RelayFate::Drop(Gone::Expired), "its sender gave up");
        assert_eq!(relay_fate(&p, late, false), RelayFate::Drop(Gone::Expired), "held here or not");
        assert_eq!(unless_ruled(RelayFate::Offer, true), RelayFate::Drop(Gone::Ruled));
        assert_eq!(unless_ruled(RelayFate::Offer, false), RelayFate::Offer);
    }
}
