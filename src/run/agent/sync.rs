//! Reading what other agents recorded: their registrations, operators'
//! holds, and people's rollback and promotion requests relayed to the agent
//! holding the release.

use std::sync::{Arc, PoisonError};

use tracing::warn;

use crate::ledger::{Actor, LedgerError, OperatorAction, OperatorRecord, Record, RecordKind, StoredRecord};
use crate::orchestrator::human::{OperatorState, PersonRequest, Relayed};
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

    /// Hand every person's request relayed through the ledger since the last
    /// read to its release's loop, where this agent is not standing by (the
    /// holder's loop rules on it; one that is not holding lets it go).
    async fn take_relayed(&self) -> Result<(), LedgerError> {
        loop {
            let after = *self.relays_read.lock().unwrap_or_else(PoisonError::into_inner);
            let rows = self.runtime.ledger.of_kind_from(RecordKind::PersonRequest, after, SYNC_PAGE).await?;
            let full = rows.len() as i64 == SYNC_PAGE;
            for (stored, rec) in rows {
                *self.relays_read.lock().unwrap_or_else(PoisonError::into_inner) = stored.seq;
                let (Record::PersonRequest(p), Ok(actor)) = (rec, stored.actor.parse::<Actor>()) else { continue };
                let to_loop = self
                    .table()
                    .values()
                    .find(|e| e.view.release_id == stored.release_id && e.view.state != ReleaseState::Standby)
                    .map(|e| e.to_loop.clone());
                let Some(to_loop) = to_loop else { continue };
                let req = PersonRequest {
                    action: p.action,
                    actor,
                    who: Principal { identity: p.identity, groups: p.groups },
                    reason: p.reason,
                    reply: None,
                    relayed: Some(Relayed { id: p.id, at_ms: stored.at_ms }),
                };
                if to_loop.requests.try_send(req).is_ok() {
                    to_loop.wake.notify_one();
                }
            }
            if !full {
                return Ok(());
            }
        }
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
