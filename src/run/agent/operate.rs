//! Operators' holds, resumes, aborts and rollback requests: recorded under
//! their identity before they take effect.

use std::sync::PoisonError;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::ledger::{
    Actor, Append, ApprovalOps, LedgerError, OperatorAction, OperatorRecord, PersonRequestRecord, Record,
};
use crate::orchestrator::human::{AnswerReply, OperatorState, PersonAction, PersonRequest, RELAY_WAIT};
use crate::policy::approval::{Closure, Principal, Ruling};
use crate::release::ReleaseConfig;

use super::{Agent, ReleaseState, ReleaseView, RevisionError};

/// An operator request refused.
#[derive(Debug, Error)]
pub enum OperateError {
    /// No such release.
    #[error("no release named `{0}`")]
    NotFound(String),
    /// It has ended.
    #[error("release `{0}` has already ended")]
    Ended(String),
    /// The ledger refused the record; nothing changed.
    #[error("cannot record the request")]
    Ledger(#[source] LedgerError),
    /// The release's loop did not answer.
    #[error("the release's loop did not answer in time")]
    NoAnswer,
    /// An approval request is open: answer it instead.
    #[error("approval request {0} is open on this release: approve or reject it instead")]
    RequestOpen(String),
}

impl Agent {
    pub(super) async fn record(
        &self,
        release: &str,
        by: &Actor,
        action: OperatorAction,
        reason: String,
        cfg: Option<ReleaseConfig>,
    ) -> Result<(), RevisionError> {
        let record = Record::Operator(OperatorRecord { action, reason, release: cfg.map(Box::new) });
        self.write_operator(release, by, record, stopping_closure(action)).await.map_err(RevisionError::Ledger)
    }

    /// An operator's record and, when it stops the release, the closure of
    /// every approval request of the release still open — in one transaction,
    /// so no agent sharing the ledger can execute an answer given afterwards.
    pub(super) async fn write_operator(
        &self,
        release: &str,
        by: &Actor,
        record: Record,
        close_open: Option<Closure>,
    ) -> Result<(), LedgerError> {
        let append = Append {
            release_id: release.to_string(),
            actor: by.clone(),
            at_ms: self.runtime.agent.clock.now_ms(),
            record: Some(record),
            lease: None,
            approvals: ApprovalOps { only_if_open: None, close_open },
            admit: None,
        };
        self.runtime.ledger.submit(append).await.map(|_| ())
    }

    /// Hold, resume or abort `name` as `by`: recorded first, then applied.
    /// A hold or an abort closes the release's open approval request in the
    /// same transaction: stop means stop, whoever answers afterwards.
    pub async fn operate(
        &self,
        name: &str,
        action: OperatorAction,
        by: &Actor,
        reason: &str,
    ) -> Result<ReleaseView, OperateError> {
        let Some(view) = self.get(name) else { return Err(OperateError::NotFound(name.into())) };
        if matches!(view.state, ReleaseState::Finished | ReleaseState::Failed) {
            return Err(OperateError::Ended(name.into()));
        }
        let record = Record::Operator(OperatorRecord { action, reason: reason.to_string(), release: None });
        let closure = stopping_closure(action);
        self.write_operator(&view.release_id, by, record, closure).await.map_err(OperateError::Ledger)?;
        if let (Some(c), Some(open)) = (closure, &view.pending_approval) {
            let how = format!("{} by {by}", c.describe());
            self.closed.lock().unwrap_or_else(PoisonError::into_inner).insert(open.request.id.clone(), how);
        }
        self.apply_operator(name, &view.release_id, action);
        self.get(name).ok_or_else(|| OperateError::NotFound(name.into()))
    }

    /// Set the release's operator state (a hold, resume or abort recorded
    /// here or, read from the ledger, by another agent).
    pub(super) fn apply_operator(&self, name: &str, release_id: &str, action: OperatorAction) {
        let state = match action {
            OperatorAction::Hold => OperatorState::Held,
            OperatorAction::Abort => OperatorState::Aborted,
            OperatorAction::Resume | OperatorAction::Register => OperatorState::Running,
        };
        let mut table = self.table();
        let Some(e) = table.get_mut(name).filter(|e| e.view.release_id == release_id) else { return };
        if *e.operator.borrow() == state {
            return;
        }
        let _ = e.operator.send(state);
        if state != OperatorState::Running {
            e.view.pending_approval = None;
        }
        if !matches!(e.view.state, ReleaseState::Finished | ReleaseState::Failed | ReleaseState::Paused) {
            e.view.state = match state {
                OperatorState::Held => ReleaseState::Held,
                OperatorState::Running | OperatorState::Aborted => ReleaseState::Running,
            };
        }
        self.gates.operator(name, state);
    }

    /// A person's request to roll `name` back now: ruled on by policy in the
    /// release's loop (approvers only; every invariant and the rate limit
    /// hold), recorded under `by`, and run when policy allows. Waits for the
    /// ruling and, when it ran, the release's status.
    pub async fn request(
        &self,
        name: &str,
        action: PersonAction,
        (actor, who): (Actor, Principal),
        reason: String,
    ) -> Result<AnswerReply, OperateError> {
        let (to_loop, standby, release) = {
            let table = self.table();
            let Some(e) = table.get(name) else { return Err(OperateError::NotFound(name.into())) };
            if matches!(e.view.state, ReleaseState::Finished | ReleaseState::Failed) {
                return Err(OperateError::Ended(name.into()));
            }
            if let Some(open) = &e.view.pending_approval {
                return Err(OperateError::RequestOpen(open.request.id.clone()));
            }
            (e.to_loop.clone(), e.view.state == ReleaseState::Standby, e.view.release_id.clone())
        };
        if standby {
            return self.relay_request((name, &release), action, (actor, who), reason).await;
        }
        let (reply, rx) = oneshot::channel();
        let req = PersonRequest { action, actor, who, reason, reply: Some(reply), relayed: None };
        to_loop.requests.send(req).await.map_err(|_| OperateError::Ended(name.into()))?;
        to_loop.wake.notify_one();
        tokio::time::timeout(Duration::from_secs(600), rx)
            .await
            .map_err(|_| OperateError::NoAnswer)?
            .map_err(|_| OperateError::Ended(name.into()))
    }

    /// A person's request to a release another agent holds: recorded in the
    /// ledger, taken by the holder's agent at its next sync, ruled on and
    /// run there; this agent reads the ruling (and the release's end) back.
    async fn relay_request(
        &self,
        (name, release): (&str, &str),
        action: PersonAction,
        (actor, who): (Actor, Principal),
        reason: String,
    ) -> Result<AnswerReply, OperateError> {
        let ledger = &self.runtime.ledger;
        let id = format!("{action}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let (identity, groups) = (who.identity, who.groups);
        let record = Record::PersonRequest(PersonRequestRecord { id: id.clone(), action, identity, groups, reason });
        let at = self.runtime.agent.clock.now_ms();
        let mine = ledger.append(release, &actor, at, record).await.map_err(OperateError::Ledger)?.seq;
        let (deadline, writer) = (tokio::time::Instant::now() + RELAY_WAIT, actor.to_string());
        let mut ruled = None;
        while tokio::time::Instant::now() < deadline {
            if ruled.is_none() {
                ruled = self.ruling_recorded(release, &id, mine, &writer).await.map_err(OperateError::Ledger)?;
            }
            let end = ledger.finished(release).await.map_err(OperateError::Ledger)?.filter(|f| f.status.is_final());
            match (&ruled, end) {
                (Some(Ruling::Execute { .. }), None) => {}
                (Some(ruling), end) => {
                    return Ok(AnswerReply { ruling: ruling.clone(), status: end.map(|f| f.status) });
                }
                (None, Some(_)) => return Err(OperateError::Ended(name.into())),
                (None, None) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(OperateError::NoAnswer)
    }
}

/// The closure an operator's action gives the release's open requests.
fn stopping_closure(action: OperatorAction) -> Option<Closure> {
    match action {
        OperatorAction::Hold => Some(Closure::OperatorHold),
        OperatorAction::Abort => Some(Closure::OperatorAbort),
        OperatorAction::Resume | OperatorAction::Register => None,
    }
}
