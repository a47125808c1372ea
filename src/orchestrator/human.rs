//! People in the loop: an operator's hold or abort, and approval requests
//! answered by a human while the release keeps being judged.
//!
//! An approval request is a ledger record before anyone can see it; an answer
//! is ruled on by [`crate::policy::approval::rule`] against the release judged
//! again at that moment, so an approval never runs blindly on a canary that
//! recovered or a proposal policy no longer makes. One request, one action:
//! the first answer that executes ends the wait, and later answers find it closed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{Actuation, Judged, LoopState, Observer, ReleaseRun, ReleaseStatus};
use crate::Error;
use crate::ledger::{Actor, ApprovalRequested, ApprovalResolved, Record, RecordKind, digest};
use crate::policy::approval::{
    Answer, AnswerInput, PendingApproval, Principal, RollbackAsk, Ruling, rule, rule_rollback,
};
use crate::policy::{Decision, Proposal};
use crate::signals::SignalSource;

/// What an operator has asked of a running release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorState {
    /// Judge and act within policy.
    Running,
    /// Keep judging, never act.
    Held,
    /// End now without acting.
    Aborted,
}

/// How often a waiting release looks in the ledger for answers relayed by other agents.
const RELAY_POLL: Duration = Duration::from_millis(500);

/// State of one wait for a human.
pub(super) struct Waiting {
    /// When to judge again.
    next_judgement: tokio::time::Instant,
    /// Relayed answers up to this seq have been read.
    relayed_after: i64,
    /// The local answer channel still has senders.
    local_open: bool,
}

/// A human's answer to a request, with a way to tell them what came of it.
pub struct HumanAnswer {
    /// The request answered.
    pub approval_id: String,
    /// The authenticated identity (`Actor::Human`), recorded as the writer.
    pub actor: Actor,
    /// Who policy checks (`alice@example.com`, `slack:U…` with verified Slack groups).
    pub who: Principal,
    /// Approve or reject.
    pub answer: Answer,
    /// Their reason (untrusted text, recorded as typed).
    pub reason: String,
    /// Receives the ruling and, when it executed, the release's new status
    /// (`None` for an answer relayed through the ledger: its giver reads the ledger).
    pub reply: Option<oneshot::Sender<AnswerReply>>,
}

impl HumanAnswer {
    fn tell(self, reply: AnswerReply) {
        if let Some(r) = self.reply {
            let _ = r.send(reply);
        }
    }
}

/// What a human is told after answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerReply {
    /// Policy's ruling.
    pub ruling: Ruling,
    /// The release's status after an executed approval (rolled back, failed, ...).
    pub status: Option<ReleaseStatus>,
}

/// A person asking to roll the release back now (see
/// [`crate::policy::approval::rule_rollback`]), with a way to tell them the ruling.
pub struct RollbackRequest {
    /// Who, as recorded.
    pub actor: Actor,
    /// Who, as policy checks.
    pub who: Principal,
    /// Why (untrusted text, recorded as typed).
    pub reason: String,
    /// Receives the ruling and, when it executed, the release's status.
    pub reply: oneshot::Sender<AnswerReply>,
}

/// The people-facing side of one running release.
pub struct Controls {
    /// Hold / resume / abort.
    pub operator: watch::Receiver<OperatorState>,
    /// Answers to this release's requests.
    pub answers: Mutex<mpsc::Receiver<HumanAnswer>>,
    /// People's rollback requests; taken between ticks.
    pub rollbacks: Mutex<mpsc::Receiver<RollbackRequest>>,
    /// Rung when a rollback request is sent, so the wait between ticks ends early.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

impl Controls {
    /// Controls and the senders that drive them.
    pub fn new(operator: watch::Receiver<OperatorState>) -> (Self, Senders) {
        let (answers_tx, answers) = mpsc::channel(16);
        let (rollbacks_tx, rollbacks) = mpsc::channel(4);
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let senders = Senders { answers: answers_tx, rollbacks: rollbacks_tx, wake: wake.clone() };
        (Self { operator, answers: Mutex::new(answers), rollbacks: Mutex::new(rollbacks), wake }, senders)
    }
}

/// What the agent holds to reach a running release.
#[derive(Clone)]
pub struct Senders {
    /// Answers to approval requests.
    pub answers: mpsc::Sender<HumanAnswer>,
    /// Rollback requests.
    pub rollbacks: mpsc::Sender<RollbackRequest>,
    /// Ends the wait between ticks.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

/// How a wait for a human ended.
pub(super) enum Waited {
    /// The release ends with this status.
    Finish(Box<ReleaseStatus>),
    /// The request no longer applies; keep judging (policy asks again if it must).
    Resume,
}

impl ReleaseRun<'_> {
    pub(super) fn operator_state(&self) -> OperatorState {
        self.controls.map_or(OperatorState::Running, |c| *c.operator.borrow())
    }

    /// A person's rollback request, if one waits: ruled on by policy
    /// (recorded under the person, with the rules that fired) and, when it
    /// executes, run like any rollback. `Some`: the release ends so.
    pub(super) async fn asked_rollback(
        &self,
        actuation: &Actuation,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, Error> {
        let Some(c) = self.controls else { return Ok(None) };
        let Some(req) = c.rollbacks.lock().await.try_recv().ok() else { return Ok(None) };
        let holder = matches!(st.role, Some(crate::ledger::LeaseRole::Holder { .. }));
        if !holder || !matches!(actuation, Actuation::Live(_)) {
            let reason =
                "this agent does not hold the target's lease (it follows or advises): ask the agent that acts".into();
            let _ = req.reply.send(AnswerReply { ruling: Ruling::Refused { reason }, status: None });
            return Ok(None);
        }
        let now_ms = self.agent.clock.now_ms();
        let window_ms = i64::from(self.policy.rate_limit.window_minutes) * 60_000;
        let rollbacks = self.ledger.automated_rollbacks(&self.facts.target, now_ms - window_ms).await?;
        let history = crate::policy::History { automated_rollbacks_ms: rollbacks };
        let ask = RollbackAsk { who: &req.who, release: &self.facts, history: &history, reason: &req.reason, now_ms };
        let outcome = rule_rollback(self.policy, &ask);
        let rec = ApprovalResolved {
            id: format!("rollback-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            answer: Some(Answer::Approve),
            reason: req.reason.clone(),
            ruling: outcome.ruling.clone(),
            trace: outcome.trace,
        };
        self.ledger.append(&self.facts.release_id, &req.actor, now_ms, Record::ApprovalResolved(rec)).await?;
        info!(who = %req.who.identity, ruling = ?outcome.ruling, "Rollback requested by a person.");
        let status = match &outcome.ruling {
            Ruling::Execute { decision } => {
                Some(self.act(decision, actuation, st, observer).await?.unwrap_or(ReleaseStatus::Held {
                    reason: "another agent took the target's lease before the rollback; it follows".into(),
                }))
            }
            _ => None,
        };
        let _ = req.reply.send(AnswerReply { ruling: outcome.ruling, status: status.clone() });
        Ok(status)
    }

    /// Open a request for `proposed`, record it, and wait for an answer,
    /// judging again every tick meanwhile. Only the lease holder of an acting run gets here.
    pub(super) async fn await_human(
        &self,
        controls: &Controls,
        (reason, proposed): (&str, &Proposal),
        asked_at: &Judged,
        ctx: (&dyn SignalSource, &Actuation),
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Waited, Error> {
        let request = self.open_request(reason, proposed, asked_at).await?;
        observer.on_approval(Some(&request));
        info!(id = %request.request.id, "Approval requested; waiting for a human.");
        let mut answers = controls.answers.lock().await;
        let mut waiting = Waiting {
            next_judgement: tokio::time::Instant::now() + self.pace.max(Duration::from_millis(200)),
            relayed_after: asked_at.seq,
            local_open: true,
        };
        let waited = loop {
            let next = self.wait_once(&request.request, &mut answers, &mut waiting, ctx, st, observer).await?;
            if let Some(done) = next {
                break done;
            }
        };
        // Answers that arrived while the last one ran: the request is closed, nothing more runs.
        while let Ok(late) = answers.try_recv() {
            let reason = format!(
                "request {} was closed before this answer (answered, expired or withdrawn)",
                request.request.id
            );
            late.tell(AnswerReply { ruling: Ruling::Stale { reason }, status: None });
        }
        observer.on_approval(None);
        Ok(waited)
    }

    /// One wake while waiting: an answer (given here or relayed through the
    /// ledger by another agent), the next judgement, expiry, or the stop signal.
    async fn wait_once(
        &self,
        request: &PendingApproval,
        answers: &mut mpsc::Receiver<HumanAnswer>,
        w: &mut Waiting,
        ctx: (&dyn SignalSource, &Actuation),
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<Waited>, Error> {
        let left = request.expires_at_ms - self.agent.clock.now_ms();
        if left <= 0 {
            return self.expire(request).await.map(Some);
        }
        let mut stop = self.stop.clone();
        let stopping = async {
            match stop.as_mut() {
                Some(s) => {
                    let _ = s.wait_for(|v| *v).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let poll = RELAY_POLL.min(Duration::from_millis(left as u64));
        tokio::select! {
            a = answers.recv(), if w.local_open => match a {
                Some(a) => self.answered(request, a, ctx, st, observer).await,
                None => {
                    w.local_open = false;
                    Ok(None)
                }
            },
            _ = tokio::time::sleep(poll) => {
                for a in self.relayed(request, &mut w.relayed_after).await? {
                    if let Some(done) = self.answered(request, a, ctx, st, observer).await? {
                        return Ok(Some(done));
                    }
                }
                if tokio::time::Instant::now() < w.next_judgement {
                    return Ok(None);
                }
                w.next_judgement = tokio::time::Instant::now() + self.pace.max(Duration::from_millis(200));
                self.rejudge_while_waiting(request, ctx.0, st, observer).await
            }
            _ = stopping => Ok(Some(Waited::Finish(Box::new(ReleaseStatus::Interrupted)))),
        }
    }

    /// Answers another agent recorded for this request since `after` (their seq moves it on).
    async fn relayed(&self, request: &PendingApproval, after: &mut i64) -> Result<Vec<HumanAnswer>, Error> {
        let rows = self.ledger.of_kind(RecordKind::ApprovalAnswer, Some(&self.facts.release_id), *after, 100).await?;
        let mut out = Vec::new();
        for (stored, rec) in rows {
            *after = (*after).max(stored.seq);
            let (Record::ApprovalAnswer(a), Ok(actor)) = (rec, stored.actor.parse::<Actor>()) else { continue };
            if a.id == request.id {
                out.push(HumanAnswer {
                    approval_id: a.id,
                    actor,
                    who: Principal { identity: a.identity, groups: a.groups },
                    answer: a.answer,
                    reason: a.reason,
                    reply: None,
                });
            }
        }
        Ok(out)
    }

    async fn open_request(&self, reason: &str, proposed: &Proposal, at: &Judged) -> Result<ApprovalRequested, Error> {
        let now = self.agent.clock.now_ms();
        let expiry_ms = i64::from(self.policy.approvals.expiry_minutes) * 60_000;
        let evidence = serde_json::to_string(&at.judged).map_err(crate::ledger::LedgerError::from)?;
        let request = ApprovalRequested {
            request: PendingApproval {
                id: format!("apr-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
                service: self.facts.service.clone(),
                proposed: proposed.clone(),
                irreversible: self.facts.irreversible,
                expires_at_ms: now + expiry_ms,
            },
            reason: reason.to_string(),
            evidence_digest: digest(evidence.as_bytes()),
            evidence_seq: at.seq,
        };
        self.record(Record::ApprovalRequested(request.clone())).await?;
        Ok(request)
    }

    async fn expire(&self, request: &PendingApproval) -> Result<Waited, Error> {
        warn!(id = %request.id, "Approval request expired unanswered; holding the release.");
        let reason = format!("approval request {} expired unanswered", request.id);
        self.close(request, None, Ruling::Refused { reason: reason.clone() }).await?;
        Ok(Waited::Finish(Box::new(ReleaseStatus::Held { reason })))
    }

    /// A request superseded by a later judgement ends without an answer.
    async fn close(&self, request: &PendingApproval, answer: Option<Answer>, ruling: Ruling) -> Result<(), Error> {
        let rec = ApprovalResolved { id: request.id.clone(), answer, reason: String::new(), ruling, trace: vec![] };
        self.record(Record::ApprovalResolved(rec)).await.map(|_| ())
    }

    /// A tick while waiting: a request policy no longer makes is closed.
    async fn rejudge_while_waiting(
        &self,
        request: &PendingApproval,
        source: &dyn SignalSource,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<Waited>, Error> {
        let decision = self.judge_now(source, st, observer).await?;
        if still_asks(&decision, &request.proposed) {
            return Ok(None);
        }
        let reason = format!("judged again, policy now says {}: request withdrawn", decision.label());
        info!(id = %request.id, %reason, "Approval request withdrawn.");
        self.close(request, None, Ruling::Stale { reason }).await?;
        Ok(Some(Waited::Resume))
    }

    /// Judge again now (a recorded tick, shown to the observer) and return policy's decision.
    async fn judge_now(
        &self,
        source: &dyn SignalSource,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Decision, Error> {
        st.now_s = (st.now_s + self.tick_s.max(1)).min(self.duration_s);
        st.tick += 1;
        let t = self.observed_tick(source, crate::policy::RunMode::Act, st, observer).await?;
        Ok(t.outcome.decision)
    }

    /// Rule on one answer. `None`: the request stays open.
    async fn answered(
        &self,
        request: &PendingApproval,
        a: HumanAnswer,
        (source, actuation): (&dyn SignalSource, &Actuation),
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<Waited>, Error> {
        if a.approval_id != request.id {
            let reason = format!("no open request {} on this release (open: {})", a.approval_id, request.id);
            a.tell(AnswerReply { ruling: Ruling::Refused { reason }, status: None });
            return Ok(None);
        }
        let current = match a.answer {
            Answer::Approve => self.judge_now(source, st, observer).await?,
            Answer::Reject => Decision::Continue,
        };
        let input = AnswerInput {
            request,
            who: &a.who,
            answer: a.answer,
            current: &current,
            now_ms: self.agent.clock.now_ms(),
        };
        let outcome = rule(self.policy, &input);
        let rec = ApprovalResolved {
            id: request.id.clone(),
            answer: Some(a.answer),
            reason: a.reason.clone(),
            ruling: outcome.ruling.clone(),
            trace: outcome.trace,
        };
        let at = self.agent.clock.now_ms();
        self.ledger.append(&self.facts.release_id, &a.actor, at, Record::ApprovalResolved(rec)).await?;
        info!(id = %request.id, who = %a.who.identity, ruling = ?outcome.ruling, "Approval answered.");
        let (waited, status) = match &outcome.ruling {
            Ruling::Refused { .. } => (None, None),
            Ruling::Rejected => {
                let reason = format!("{} rejected {}: {}", a.who.identity, request.id, a.reason);
                (Some(Waited::Finish(Box::new(ReleaseStatus::Held { reason }))), None)
            }
            Ruling::Stale { .. } => (Some(Waited::Resume), None),
            Ruling::Execute { decision } => {
                let status = self.act(decision, actuation, st, observer).await?;
                let status = status.unwrap_or(ReleaseStatus::Held {
                    reason: "another agent took the target's lease before the approved action; it follows".into(),
                });
                (Some(Waited::Finish(Box::new(status.clone()))), Some(status))
            }
        };
        a.tell(AnswerReply { ruling: outcome.ruling, status });
        Ok(waited)
    }
}

/// The request still stands: policy asks a human for the same action, or
/// cannot judge for now (a hold or a denial — a signal backend failing, say —
/// does not withdraw a request for harm already seen; an answer then is
/// refused and the request stays open).
fn still_asks(decision: &Decision, proposed: &Proposal) -> bool {
    match decision {
        Decision::RequireApproval { proposed: p, .. } => p.same_action(proposed),
        Decision::Hold { .. } | Decision::Deny { .. } => true,
        Decision::Continue | Decision::Promote | Decision::Rollback { .. } => false,
    }
}
