//! People in the loop: an operator's hold or abort, requests for approval,
//! and answers, all taken between the ticks of the one loop.
//!
//! Asking never delays. A request is a ledger record before anyone can see
//! it, and the release goes on being judged while it is open: the judge's
//! own rollback closes it as superseded (in the intent's transaction), a
//! canary that recovers withdraws it, and an operator's hold or abort closes
//! it in the same transaction as the operator's record. An answer is ruled
//! on by [`crate::policy::approval::rule`] against the release judged again
//! at that moment, and a ruling that would close the request is written
//! only if the request is still open — so an answer to a closed request runs
//! nothing, on this agent or any other sharing the ledger.

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{Actuation, Judged, LoopState, Observer, ReleaseRun, ReleaseStatus};
use crate::digest::digest;
use crate::ledger::{Actor, Append, ApprovalOps, ApprovalRequested, ApprovalResolved, LedgerError, Record};
use crate::policy::approval::{
    Answer, AnswerInput, Closure, PendingApproval, Principal, PromoteAsk, Refusal, RollbackAsk, Ruling, rule,
    rule_promote, rule_rollback,
};
use crate::policy::{Decision, Proposal};
use crate::signals::SignalSource;

/// What an operator has asked of a running release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorState {
    /// Judge and act within policy.
    Running,
    /// Keep judging, never act, ask nobody.
    Held,
    /// End now without acting.
    Aborted,
}

/// An open request for a human, as the loop keeps it.
#[derive(Debug, Clone)]
pub(super) struct Asking {
    /// Why a human is needed.
    pub reason: String,
    /// What approval would do.
    pub proposed: Proposal,
    /// The request in the ledger, when someone can answer it (an acting
    /// agent); `watch`, `advise` and `eval` only remember that they asked.
    pub request: Option<ApprovalRequested>,
    /// Relayed answers and closures up to this seq have been read.
    pub read_to: i64,
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

pub use crate::ledger::PersonAction;

/// A person asking to roll the release back or promote it now, with a way
/// to tell them the ruling.
pub struct PersonRequest {
    /// Which.
    pub action: PersonAction,
    /// Who, as recorded.
    pub actor: Actor,
    /// Who, as policy checks.
    pub who: Principal,
    /// Why (untrusted text, recorded as typed).
    pub reason: String,
    /// Receives the ruling and, when it executed, the release's status
    /// (`None` for a request relayed through the ledger: its sender reads the ledger).
    pub reply: Option<oneshot::Sender<AnswerReply>>,
    /// Set when another agent relayed it through the ledger.
    pub relayed: Option<Relayed>,
}

/// A person's request another agent took and relayed through the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The id the ruling is recorded under (the relaying agent waits for it).
    pub id: String,
    /// When it was asked, unix ms.
    pub at_ms: i64,
}

/// How long a relayed request is worth ruling on: the relaying agent waits
/// this long for the ruling, then tells the person nothing came of it.
pub const RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

impl PersonRequest {
    fn tell(self, reply: AnswerReply) {
        if let Some(r) = self.reply {
            let _ = r.send(reply);
        }
    }
}

/// The people-facing side of one running release.
pub struct Controls {
    /// Hold / resume / abort.
    pub operator: watch::Receiver<OperatorState>,
    /// Answers to this release's requests.
    pub answers: Mutex<mpsc::Receiver<HumanAnswer>>,
    /// People's rollback and promotion requests; taken between ticks.
    pub requests: Mutex<mpsc::Receiver<PersonRequest>>,
    /// Rung when a person's request is sent, so the wait between ticks ends early.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

impl Controls {
    /// Controls and the senders that drive them.
    pub fn new(operator: watch::Receiver<OperatorState>) -> (Self, Senders) {
        let (answers_tx, answers) = mpsc::channel(16);
        let (requests_tx, requests) = mpsc::channel(4);
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let senders = Senders { answers: answers_tx, requests: requests_tx, wake: wake.clone() };
        (Self { operator, answers: Mutex::new(answers), requests: Mutex::new(requests), wake }, senders)
    }
}

/// What the agent holds to reach a running release.
#[derive(Clone)]
pub struct Senders {
    /// Answers to approval requests.
    pub answers: mpsc::Sender<HumanAnswer>,
    /// People's rollback and promotion requests.
    pub requests: mpsc::Sender<PersonRequest>,
    /// Ends the wait between ticks.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The executor's exact steps for `proposed` (a promotion of `candidate`) at
/// `now_s`; none when it cannot plan (the same failure then denies the
/// action if it is approved).
fn steps(actuation: &Actuation, proposed: &Proposal, candidate: &str, now_s: u64) -> Vec<String> {
    let planner = actuation.planner();
    let plan = match proposed {
        Proposal::Rollback { plan } => planner.plan_rollback(plan, now_s),
        Proposal::Promote => planner.plan_promote(candidate, now_s),
    };
    plan.map(|p| p.steps).unwrap_or_default()
}

/// The closure the judge's own action gives an open request.
pub(super) fn judge_closure(decision: &Decision) -> Closure {
    match decision {
        Decision::Promote => Closure::JudgePromoted,
        _ => Closure::JudgeRolledBack,
    }
}

impl ReleaseRun<'_> {
    pub(super) fn operator_state(&self) -> OperatorState {
        self.controls.map_or(OperatorState::Running, |c| *c.operator.borrow())
    }

    /// Someone can answer a request here: an acting run with controls (the agent's API or Slack).
    pub(super) fn answerable(&self, actuation: &Actuation) -> bool {
        self.controls.is_some() && matches!(actuation, Actuation::Live(_))
    }

    /// Refuse every person's request waiting: this agent does not act on
    /// the release (it stands by, or advises); the caller is told to ask the
    /// holder. A relayed request is left to the agent holding the release.
    pub(super) async fn refuse_requests(&self) {
        let Some(c) = self.controls else { return };
        while let Ok(req) = c.requests.lock().await.try_recv() {
            req.tell(AnswerReply { ruling: Ruling::refused(Refusal::NotHolder), status: None });
        }
    }

    /// A person's rollback or promotion request, if one waits: ruled on by
    /// policy (recorded under the person, with the rules that fired) and,
    /// when it executes, run like any action. `Some`: the release ends so.
    pub(super) async fn asked_by_person(
        &self,
        actuation: &Actuation,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let Some(c) = self.controls else { return Ok(None) };
        let holder = matches!(st.role, Some(crate::ledger::LeaseRole::Holder { .. }));
        if !holder || !matches!(actuation, Actuation::Live(_)) {
            self.refuse_requests().await;
            return Ok(None);
        }
        let Some(req) = c.requests.lock().await.try_recv().ok() else { return Ok(None) };
        if let Some(r) = &req.relayed
            && !self.relay_still_open(r).await?
        {
            return Ok(None);
        }
        let now_ms = self.agent.clock.now_ms();
        let outcome = self.rule_person(&req, st, now_ms).await?;
        let word = req.action.to_string();
        let id = match &req.relayed {
            Some(r) => r.id.clone(),
            None => format!("{word}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        let rec = ApprovalResolved {
            id,
            answer: Some(Answer::Approve),
            reason: req.reason.clone(),
            ruling: outcome.ruling.clone(),
            trace: outcome.trace,
        };
        self.ledger.append(&self.facts.release_id, &req.actor, now_ms, Record::ApprovalResolved(rec)).await?;
        let ruling = crate::policy::approval::ruling_label(&outcome.ruling);
        info!(who = %req.who.identity, action = %word, ruling, relayed = req.relayed.is_some(), "A person asked to act on the release.");
        let status = match &outcome.ruling {
            Ruling::Execute { decision } => {
                Some(self.act(decision, actuation, st, observer, None).await?.unwrap_or(ReleaseStatus::Held {
                    reason: format!("another agent took the target's lease before the {word}; it follows"),
                }))
            }
            _ => None,
        };
        req.tell(AnswerReply { ruling: outcome.ruling, status: status.clone() });
        Ok(status)
    }

    /// Policy's ruling on a person's request, against the release as it stands.
    async fn rule_person(
        &self,
        req: &PersonRequest,
        st: &LoopState,
        now_ms: i64,
    ) -> Result<crate::policy::approval::ApprovalOutcome, LedgerError> {
        Ok(match req.action {
            PersonAction::Rollback => {
                let window_ms = i64::from(self.policy.rate_limit.window_minutes) * 60_000;
                let rollbacks = self.ledger.automated_rollbacks(&self.facts.target, now_ms - window_ms).await?;
                let history = crate::policy::History { automated_rollbacks: rollbacks };
                let (who, reason) = (&req.who, req.reason.as_str());
                rule_rollback(
                    self.policy,
                    &RollbackAsk { who, release: &self.facts_now(st), history: &history, reason, now_ms },
                )
            }
            PersonAction::Promote => {
                let facts = self.facts_now(st);
                let ask = PromoteAsk { who: &req.who, release: &facts, judge: st.last_verdict, reason: &req.reason };
                rule_promote(self.policy, &ask)
            }
        })
    }

    /// A relayed request is ruled on once, and only while its sender still
    /// waits: not when it is older than [`RELAY_WAIT`] or already ruled on
    /// (by this agent's earlier self, or the holder before it).
    async fn relay_still_open(&self, r: &Relayed) -> Result<bool, LedgerError> {
        if self.agent.clock.now_ms() - r.at_ms > RELAY_WAIT.as_millis() as i64 {
            return Ok(false);
        }
        Ok(!self.ledger.ruled_on(&self.facts.release_id, &r.id).await?)
    }

    /// Policy asks a human for `proposed`: remember it, and where someone
    /// can answer, open a request in the ledger (withdrawing one open for
    /// another action). The release goes on being judged either way.
    pub(super) async fn ask(
        &self,
        (reason, proposed): (String, Proposal),
        at: &Judged,
        actuation: &Actuation,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<(), LedgerError> {
        if st.asking.as_ref().is_some_and(|a| a.request.is_some()) {
            let why = format!("policy now proposes another action ({})", proposal_label(&proposed));
            self.withdraw(st, why, observer).await?;
        }
        let holder = matches!(st.role, Some(crate::ledger::LeaseRole::Holder { .. }));
        let request = match self.answerable(actuation) && holder {
            true => Some(
                self.open_request(
                    &reason,
                    &proposed,
                    at,
                    steps(actuation, &proposed, &self.facts.candidate_revision, st.now_s),
                )
                .await?,
            ),
            false => None,
        };
        if let Some(r) = &request {
            observer.on_approval(Some(r));
            info!(id = %r.request.id, "Approval requested; judging goes on meanwhile.");
        }
        st.asking = Some(Asking { reason, proposed, request, read_to: at.seq });
        Ok(())
    }

    /// Policy no longer asks (the canary recovered, or it proposes something
    /// else): the open request is closed as stale, and judging goes on.
    pub(super) async fn withdraw(
        &self,
        st: &mut LoopState,
        why: String,
        observer: &mut dyn Observer,
    ) -> Result<(), LedgerError> {
        let Some(asking) = st.asking.take() else { return Ok(()) };
        let Some(r) = asking.request else { return Ok(()) };
        info!(id = %r.request.id, %why, "Approval request withdrawn.");
        let rec = ApprovalResolved {
            id: r.request.id.clone(),
            answer: None,
            reason: String::new(),
            ruling: Ruling::Stale { reason: why },
            trace: vec![],
        };
        let append = Append {
            approvals: ApprovalOps { only_if_open: Some(r.request.id.clone()), close_open: None },
            admit: None,
            ..self.append(Some(Record::ApprovalResolved(rec)), None)
        };
        self.ledger.submit(append).await?;
        observer.on_approval(None);
        Ok(())
    }

    async fn open_request(
        &self,
        reason: &str,
        proposed: &Proposal,
        at: &Judged,
        steps: Vec<String>,
    ) -> Result<ApprovalRequested, LedgerError> {
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
            steps,
        };
        self.record(Record::ApprovalRequested(request.clone())).await?;
        Ok(request)
    }

    /// Between ticks with a request open: expiry, answers given here, and
    /// what other agents wrote (answers relayed to this one, closures by an
    /// operator elsewhere). `Some`: the release ends with this status.
    pub(super) async fn tend_request(
        &self,
        ctx: (&dyn SignalSource, &Actuation),
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let Some(request) = st.asking.as_ref().and_then(|a| a.request.clone()) else { return Ok(None) };
        if self.agent.clock.now_ms() >= request.request.expires_at_ms {
            return self.expire(st, &request, observer).await;
        }
        let after = st.asking.as_ref().map_or(0, |a| a.read_to);
        let rows = self.ledger.approval_records_after(&self.facts.release_id, after).await?;
        for (stored, rec) in rows {
            if let Some(a) = st.asking.as_mut() {
                a.read_to = a.read_to.max(stored.seq);
            }
            match rec {
                Record::ApprovalResolved(r) if r.id == request.request.id && r.closes() => {
                    info!(id = %r.id, "Approval request closed by another writer.");
                    st.asking = None;
                    observer.on_approval(None);
                    return Ok(None);
                }
                Record::ApprovalAnswer(a) if a.id == request.request.id => {
                    let Ok(actor) = stored.actor.parse::<Actor>() else { continue };
                    let who = Principal { identity: a.identity, groups: a.groups };
                    let answer =
                        HumanAnswer { approval_id: a.id, actor, who, answer: a.answer, reason: a.reason, reply: None };
                    if let Some(done) = self.answered(answer, ctx, st, observer).await? {
                        return Ok(Some(done));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    async fn expire(
        &self,
        st: &mut LoopState,
        request: &ApprovalRequested,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let id = &request.request.id;
        warn!(%id, "Approval request expired unanswered; holding the release.");
        let append = Append {
            approvals: ApprovalOps { only_if_open: Some(id.clone()), close_open: None },
            admit: None,
            ..self.append(Some(Record::ApprovalResolved(ApprovalResolved::closure(id, Closure::Expired))), None)
        };
        let done = self.ledger.submit(append).await?;
        st.asking = None;
        observer.on_approval(None);
        if done.refused {
            // Closed meanwhile by someone else (an answer relayed, an operator): judge on.
            return Ok(None);
        }
        Ok(Some(ReleaseStatus::Held { reason: format!("approval request {id} expired unanswered") }))
    }

    /// Answers still queued when the release ends find their request closed.
    pub(super) async fn refuse_late_answers(&self) {
        let Some(c) = self.controls else { return };
        let mut answers = c.answers.lock().await;
        while let Ok(late) = answers.try_recv() {
            let reason = format!("request {} was closed before this answer (the release ended)", late.approval_id);
            late.tell(AnswerReply { ruling: Ruling::Stale { reason }, status: None });
        }
    }

    /// Judge again now (a recorded tick, shown to the observer) and return policy's decision.
    async fn judge_now(
        &self,
        (source, actuation): (&dyn SignalSource, &Actuation),
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Decision, LedgerError> {
        st.now_s = (st.now_s + self.tick_s.max(1)).min(self.duration_s);
        st.tick += 1;
        let t = self.observed_tick(source, actuation, st, observer).await?;
        Ok(t.outcome.decision)
    }

    /// Rule on one answer. `Some`: the release ends with this status.
    pub(super) async fn answered(
        &self,
        a: HumanAnswer,
        (source, actuation): (&dyn SignalSource, &Actuation),
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let request = match self.answerable_request(st, &a) {
            Ok(r) => r,
            Err(ruling) => {
                a.tell(AnswerReply { ruling, status: None });
                return Ok(None);
            }
        };
        let current = match a.answer {
            Answer::Approve => self.judge_now((source, actuation), st, observer).await?,
            Answer::Reject => Decision::Continue,
        };
        let now_ms = self.agent.clock.now_ms();
        let input = AnswerInput { request: &request, who: &a.who, answer: a.answer, current: &current, now_ms };
        let outcome = rule(self.policy, &input);
        if !self.record_ruling(&request, &a, &outcome).await? {
            info!(id = %request.id, "Answer to a request closed meanwhile; nothing runs.");
            st.asking = None;
            observer.on_approval(None);
            let reason = format!("request {} was closed before this answer", request.id);
            a.tell(AnswerReply { ruling: Ruling::Stale { reason }, status: None });
            return Ok(None);
        }
        if outcome.ruling.closes() {
            st.asking = None;
            observer.on_approval(None);
        }
        let status = match &outcome.ruling {
            Ruling::Refused { .. } | Ruling::Stale { .. } | Ruling::Closed { .. } => None,
            Ruling::Rejected => Some(ReleaseStatus::Held {
                reason: format!("{} rejected {}: {}", a.who.identity, request.id, a.reason),
            }),
            Ruling::Execute { decision } => {
                Some(self.act(decision, actuation, st, observer, None).await?.unwrap_or(ReleaseStatus::Held {
                    reason: "another agent took the target's lease before the approved action; it follows".into(),
                }))
            }
        };
        a.tell(AnswerReply { ruling: outcome.ruling, status: status.clone() });
        Ok(status)
    }

    /// The open request `a` answers, or the ruling that tells them why there is none to answer.
    fn answerable_request(&self, st: &LoopState, a: &HumanAnswer) -> Result<PendingApproval, Ruling> {
        let Some(request) = st.asking.as_ref().and_then(|x| x.request.clone()) else {
            let reason = format!("request {} is closed (answered, expired, withdrawn or stopped)", a.approval_id);
            return Err(Ruling::Stale { reason });
        };
        let request = request.request;
        if a.approval_id != request.id {
            return Err(Ruling::refused(Refusal::NotThisRequest { asked: a.approval_id.clone(), open: request.id }));
        }
        if self.operator_state() != OperatorState::Running {
            return Err(Ruling::Closed { closure: Closure::OperatorHold });
        }
        Ok(request)
    }

    /// Record the ruling under the person. A ruling that closes the request
    /// is written only while it is open (an operator's hold or abort, or
    /// another agent, may have closed it): `false` when it was.
    async fn record_ruling(
        &self,
        request: &PendingApproval,
        a: &HumanAnswer,
        outcome: &crate::policy::approval::ApprovalOutcome,
    ) -> Result<bool, LedgerError> {
        let rec = ApprovalResolved {
            id: request.id.clone(),
            answer: Some(a.answer),
            reason: a.reason.clone(),
            ruling: outcome.ruling.clone(),
            trace: outcome.trace.clone(),
        };
        let closes = outcome.ruling.closes().then(|| request.id.clone());
        let append = Append {
            actor: a.actor.clone(),
            approvals: ApprovalOps { only_if_open: closes, close_open: None },
            admit: None,
            ..self.append(Some(Record::ApprovalResolved(rec)), None)
        };
        let written = !self.ledger.submit(append).await?.refused;
        if written {
            let label = crate::policy::approval::ruling_label(&outcome.ruling);
            info!(id = %request.id, who = %a.who.identity, ruling = label, "Approval answered.");
        }
        Ok(written)
    }
}

fn proposal_label(p: &Proposal) -> &'static str {
    match p {
        Proposal::Promote => "promote",
        Proposal::Rollback { .. } => "rollback",
    }
}
