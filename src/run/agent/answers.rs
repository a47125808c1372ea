//! Approvers' answers, relayed through the ledger to whichever agent runs the release.

use std::sync::PoisonError;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::ledger::{Actor, ApprovalAnswer, LedgerError, Record, RecordKind};
use crate::orchestrator::ReleaseStatus;
use crate::orchestrator::human::{AnswerReply, HumanAnswer};
use crate::policy::approval::{Answer, Principal, Ruling};
use crate::run::metrics::Kind;

use super::Agent;

/// An answer that reached no open request.
#[derive(Debug, Error)]
pub enum AnswerError {
    /// No such request.
    #[error("no open approval request `{0}`")]
    NotFound(String),
    /// Already answered, expired or withdrawn.
    #[error("approval request `{id}` is closed: {how}")]
    Closed {
        /// Request id.
        id: String,
        /// What closed it.
        how: String,
    },
    /// The release did not answer in time.
    #[error("the release did not rule on the answer in time")]
    NoAnswer,
    /// The ledger failed; the answer may not have been recorded.
    #[error("cannot relay the answer through the ledger")]
    Ledger(#[source] LedgerError),
}

impl Agent {
    /// Pass a human's answer to the release whose request `approval_id` is,
    /// and wait for the ruling (and the action, when it executes).
    pub async fn answer(
        &self,
        approval_id: &str,
        (actor, who): (Actor, Principal),
        answer: Answer,
        reason: String,
    ) -> Result<AnswerReply, AnswerError> {
        let identity = who.identity.clone();
        let sender = {
            let table = self.table();
            let open =
                table.values().find(|e| e.view.pending_approval.as_ref().is_some_and(|a| a.request.id == approval_id));
            open.map(|e| e.to_loop.answers.clone())
        };
        let Some(sender) = sender else {
            let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner).get(approval_id).cloned();
            let reply = match closed {
                Some(how) => Err(AnswerError::Closed { id: approval_id.into(), how }),
                None => self.relay(approval_id, (actor, who), answer, reason).await,
            }?;
            self.count_answer(approval_id, &identity, &reply);
            return Ok(reply);
        };
        let (reply, rx) = oneshot::channel();
        let msg = HumanAnswer { approval_id: approval_id.into(), actor, who, answer, reason, reply: Some(reply) };
        sender
            .send(msg)
            .await
            .map_err(|_| AnswerError::Closed { id: approval_id.into(), how: "the release ended".into() })?;
        // The loop rules, and may run the action (never interrupted) before answering.
        let r = tokio::time::timeout(Duration::from_secs(600), rx)
            .await
            .map_err(|_| AnswerError::NoAnswer)?
            .map_err(|_| AnswerError::Closed { id: approval_id.into(), how: "the release ended".into() })?;
        self.count_answer(approval_id, &identity, &r);
        Ok(r)
    }

    pub(super) fn count_answer(&self, approval_id: &str, identity: &str, r: &AnswerReply) {
        let kind = crate::policy::approval::ruling_label(&r.ruling);
        self.metrics.approval_answers.get_or_create(&Kind { kind: kind.into() }).inc();
        if !matches!(r.ruling, Ruling::Refused { .. }) {
            let how = format!("{kind} by {identity}");
            self.closed.lock().unwrap_or_else(PoisonError::into_inner).insert(approval_id.into(), how);
        }
    }

    /// An answer to a request another agent holds (it holds the target's
    /// lease): recorded in the ledger, ruled on by that agent, whose ruling
    /// (and the action's outcome) this one reads back.
    pub(super) async fn relay(
        &self,
        approval_id: &str,
        (actor, who): (Actor, Principal),
        answer: Answer,
        reason: String,
    ) -> Result<AnswerReply, AnswerError> {
        let ledger = &self.runtime.ledger;
        let requested =
            ledger.of_kind(RecordKind::ApprovalRequested, None, 0, 10_000).await.map_err(AnswerError::Ledger)?;
        let found = requested
            .into_iter()
            .rev()
            .find(|(_, r)| matches!(r, Record::ApprovalRequested(a) if a.request.id == approval_id));
        let Some((row, _)) = found else { return Err(AnswerError::NotFound(approval_id.into())) };
        let release = row.release_id.clone();
        if let Some(how) = self.closed_in_ledger(&release, approval_id, row.seq).await? {
            return Err(AnswerError::Closed { id: approval_id.into(), how });
        }
        let record = Record::ApprovalAnswer(ApprovalAnswer {
            id: approval_id.into(),
            answer,
            identity: who.identity,
            reason,
            groups: who.groups,
        });
        let at = self.runtime.agent.clock.now_ms();
        let mine = ledger.append(&release, &actor, at, record).await.map_err(AnswerError::Ledger)?.seq;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        let writer = actor.to_string();
        while tokio::time::Instant::now() < deadline {
            let recorded = self.ruling_recorded(&release, approval_id, mine, &writer).await;
            if let Some(ruling) = recorded.map_err(AnswerError::Ledger)? {
                let status = match &ruling {
                    Ruling::Execute { .. } => self.final_status(&release, deadline).await?,
                    _ => None,
                };
                return Ok(AnswerReply { ruling, status });
            }
            // Closed by someone else meanwhile (an operator's hold or abort, an expiry): nothing ran.
            if let Some(how) = self.closed_in_ledger(&release, approval_id, row.seq).await? {
                return Err(AnswerError::Closed { id: approval_id.into(), how });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(AnswerError::NoAnswer)
    }

    /// The ruling recorded under `id` for `release` after `after` by `writer`
    /// (the person, whose actor the ruling agent writes it under), if there is one yet.
    pub(super) async fn ruling_recorded(
        &self,
        release: &str,
        id: &str,
        after: i64,
        writer: &str,
    ) -> Result<Option<Ruling>, LedgerError> {
        let rows = self.runtime.ledger.of_kind(RecordKind::ApprovalResolved, Some(release), after, 100).await?;
        Ok(rows.into_iter().find_map(|(s, r)| match r {
            Record::ApprovalResolved(a) if a.id == id && s.actor == writer => Some(a.ruling),
            _ => None,
        }))
    }

    /// What closed a request, when the ledger shows it closed (answered,
    /// expired or withdrawn; a refused answer leaves it open).
    pub(super) async fn closed_in_ledger(
        &self,
        release: &str,
        id: &str,
        after: i64,
    ) -> Result<Option<String>, AnswerError> {
        let ledger = &self.runtime.ledger;
        let rows = ledger
            .of_kind(RecordKind::ApprovalResolved, Some(release), after, 1000)
            .await
            .map_err(AnswerError::Ledger)?;
        Ok(rows.into_iter().find_map(|(s, r)| match r {
            Record::ApprovalResolved(a) if a.id == id && a.closes() => {
                Some(format!("{} by {}", crate::policy::approval::ruling_label(&a.ruling), s.actor))
            }
            _ => None,
        }))
    }

    /// The release's end status, once recorded (an executed approval ends it).
    pub(super) async fn final_status(
        &self,
        release: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<ReleaseStatus>, AnswerError> {
        while tokio::time::Instant::now() < deadline {
            if let Some(f) = self.runtime.ledger.finished(release).await.map_err(AnswerError::Ledger)? {
                return Ok(Some(f.status));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(None)
    }
}
