//! `backstop agent`: many releases running for a long time, with people in
//! the loop. The agent keeps a table of releases (what the API, the
//! dashboard and `/metrics` show), passes operators' holds and approvers'
//! answers to the running loops, and writes every change a person asks for
//! to the ledger under their identity before it takes effect.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::gate::{GateBoard, GateObserver};
use super::metrics::{ActionLabels, Kind, Metrics};
use super::{Runtime, RuntimeError};
use crate::executor::ActionPlan;
use crate::judge::JudgeResult;
use crate::ledger::{
    ActionResult, Actor, Append, ApprovalAnswer, ApprovalOps, ApprovalRequested, LedgerError, OperatorAction,
    OperatorRecord, Record, RecordKind,
};
use crate::orchestrator::human::{AnswerReply, Controls, HumanAnswer, OperatorState, RollbackRequest, Senders};
use crate::orchestrator::{Observer, ReleaseStatus, RunOutcome, TickReport};
use crate::policy::approval::{Answer, Closure, Principal, Ruling};
use crate::policy::{Decision, RunMode};
use crate::release::release_id;
use crate::release::{Registration, ReleaseConfig};

/// Where a release stands in the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReleaseState {
    /// Registered; first tick not yet judged.
    Starting,
    /// Being judged; acts within policy.
    Running,
    /// An operator held it: judged, never acted on.
    Held,
    /// Waiting for a human to answer an approval request.
    AwaitingApproval,
    /// Ended (see `status`).
    Finished,
    /// The agent stopped; the release continues when an agent starts again.
    Paused,
    /// Could not run (its configuration or a backend failed; see `error`).
    Failed,
}

impl ReleaseState {
    /// Every state, for gauges that must show zeros too.
    pub const ALL: [ReleaseState; 7] = [
        ReleaseState::Starting,
        ReleaseState::Running,
        ReleaseState::Held,
        ReleaseState::AwaitingApproval,
        ReleaseState::Finished,
        ReleaseState::Paused,
        ReleaseState::Failed,
    ];

    /// Stored name.
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// A release as the API and dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    /// Configured or registered name.
    pub name: String,
    /// Ledger release id.
    pub release_id: String,
    /// Runtime.
    pub service: String,
    /// Target.
    pub target: String,
    /// Revision under judgement.
    pub candidate_revision: String,
    /// Where it stands.
    pub state: ReleaseState,
    /// Release time of the last tick, seconds.
    pub now_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// Policy's decision at the last tick.
    pub decision: Option<Decision>,
    /// The judge's result at the last tick (findings per metric).
    pub judge: Option<JudgeResult>,
    /// The series as last observed, for the dashboard's charts (not in the API's JSON).
    #[serde(skip)]
    pub observation: Option<Arc<crate::signals::Observation>>,
    /// The model's last consultation (verdict, cited evidence, or why none), when it was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consultation: Option<Arc<crate::assessor::Consultation>>,
    /// Metrics failing now.
    pub failing: Vec<String>,
    /// The open approval request, if any.
    pub pending_approval: Option<ApprovalRequested>,
    /// Ledger seq of the last tick.
    pub ledger_seq: i64,
    /// How it ended.
    pub status: Option<ReleaseStatus>,
    /// Why it could not run.
    pub error: Option<String>,
    /// Who registered it (`config` for configured releases).
    pub registered_by: String,
}

struct Entry {
    view: ReleaseView,
    /// As configured or registered (with the executor of its declared target).
    cfg: ReleaseConfig,
    operator: watch::Sender<OperatorState>,
    to_loop: Senders,
}

/// Registration refused.
#[derive(Debug, Error)]
pub enum RegisterError {
    /// A release of that name is already known.
    #[error("a release named `{0}` is already registered")]
    Duplicate(String),
    /// The target is not declared in the agent's configuration.
    #[error("field `target`: expected a target declared in configuration ({declared}); `{target}` is not")]
    UndeclaredTarget {
        /// Asked for.
        target: String,
        /// Declared ones.
        declared: String,
    },
    /// A field of the body is wrong.
    #[error(transparent)]
    Field(crate::field::FieldError),
    /// The release cannot be prepared.
    #[error(transparent)]
    Prepare(#[from] RuntimeError),
    /// The ledger refused the registration record.
    #[error("cannot record the registration")]
    Ledger(#[source] LedgerError),
    /// The agent is shutting down.
    #[error("the agent is stopping and takes no new releases")]
    Stopping,
}

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

/// A gate's request to judge another revision, refused.
#[derive(Debug, Error)]
pub enum RevisionError {
    /// No such release.
    #[error("no release named `{0}`")]
    NotFound(String),
    /// The revision is not a plausible revision name.
    #[error("query `revision`: expected 1 to 128 printable characters without spaces")]
    BadRevision,
    /// The new analysis could not start.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// The ledger refused the record; nothing changed.
    #[error("cannot record the new analysis")]
    Ledger(#[source] LedgerError),
}

/// Runs releases with people in the loop.
pub struct Agent {
    runtime: Runtime,
    pace: Option<Duration>,
    /// `Act` under `backstop agent`; `Advise` under `backstop serve` (the gate only).
    mode: RunMode,
    table: Mutex<BTreeMap<String, Entry>>,
    /// Closed requests: id → what closed it, so a late second answer is told.
    closed: Mutex<BTreeMap<String, String>>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The gate answers, kept current by every release.
    pub gates: GateBoard,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Registrations in the ledger up to this seq have been read.
    synced: Mutex<i64>,
    /// Unix ms of the last committed ledger write (ticks carry the lease renewals).
    last_write: Arc<AtomicI64>,
}

/// How often an agent reads registrations other agents recorded.
const SYNC_EVERY: Duration = Duration::from_secs(2);

impl Agent {
    /// An agent on `service`; `pace` as for `watch` (None: real time);
    /// `mode`: whether it acts (`backstop agent`) or only answers (`serve`).
    pub fn new(runtime: Runtime, pace: Option<Duration>, mode: RunMode) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        let last_write = Arc::new(AtomicI64::new(runtime.agent.clock.now_ms()));
        let (m, lw, clock) = (metrics.clone(), last_write.clone(), runtime.agent.clock.clone());
        runtime.ledger.observe_appends(Box::new(move |d| {
            m.ledger_append_seconds.observe(d.as_secs_f64());
            lw.store(clock.now_ms(), Ordering::Relaxed);
        }));
        Arc::new(Self {
            runtime,
            pace,
            mode,
            table: Mutex::new(BTreeMap::new()),
            closed: Mutex::new(BTreeMap::new()),
            metrics,
            gates: GateBoard::default(),
            tasks: Mutex::new(Vec::new()),
            synced: Mutex::new(0),
            last_write,
        })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The runtime the agent runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Start every configured release.
    pub fn start_configured(self: &Arc<Self>) -> Result<(), RegisterError> {
        self.start(self.runtime.settings.releases.clone())
    }

    /// Start these configured releases (each prepared first, so a bad one
    /// stops the start with its error before anything runs).
    pub fn start(self: &Arc<Self>, all: Vec<ReleaseConfig>) -> Result<(), RegisterError> {
        for cfg in &all {
            self.runtime.prepare(cfg, self.mode, 0)?;
        }
        for cfg in all {
            self.admit(cfg, "config".into())?;
        }
        Ok(())
    }

    /// Run, too, every release registered in the ledger (by this agent before a
    /// restart, or by another agent sharing the ledger) that has not finished.
    pub async fn sync(self: &Arc<Self>) -> Result<usize, LedgerError> {
        let after = *self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        let rows = self.runtime.ledger.of_kind(RecordKind::Operator, None, after, 10_000).await?;
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

    /// Register a release at runtime, as `by`: on a declared target, with
    /// one of that target's signal templates and its executor. A
    /// registration names no URL, path, credential or program (see
    /// [`Registration`]), so a caller can neither choose what runs nor make
    /// the agent read a file or send a secret anywhere.
    pub async fn register(self: &Arc<Self>, reg: Registration, by: &Actor) -> Result<ReleaseView, RegisterError> {
        if *self.runtime.stop.borrow() {
            return Err(RegisterError::Stopping);
        }
        let declared = &self.runtime.settings.agent.targets;
        let Some(t) = declared.iter().find(|t| t.target == reg.target) else {
            let names: Vec<&str> = declared.iter().map(|t| t.target.as_str()).collect();
            let target =
                crate::field::strip_unsafe(&reg.target, false).chars().take(crate::field::TARGET_MAX).collect();
            return Err(RegisterError::UndeclaredTarget { target, declared: names.join(", ") });
        };
        let cfg = reg.resolve(t).map_err(RegisterError::Field)?;
        if self.table().contains_key(&cfg.name) {
            return Err(RegisterError::Duplicate(cfg.name));
        }
        // Prepared once here so a bad body is refused before anything is recorded.
        self.runtime.prepare(&cfg, RunMode::Act, 0)?;
        let record = Record::Operator(OperatorRecord {
            action: OperatorAction::Register,
            reason: format!("registered {} ({} on {})", cfg.name, cfg.candidate_revision, cfg.target),
            release: Some(Box::new(cfg.clone())),
        });
        let at = self.runtime.agent.clock.now_ms();
        self.runtime.ledger.append(&release_id(&cfg), by, at, record).await.map_err(RegisterError::Ledger)?;
        self.admit(cfg, by.to_string())
    }

    /// Put a release in the table and start its loop.
    fn admit(self: &Arc<Self>, cfg: ReleaseConfig, by: String) -> Result<ReleaseView, RegisterError> {
        let (op_tx, op_rx) = watch::channel(OperatorState::Running);
        let (controls, to_loop) = Controls::new(op_rx);
        let view = ReleaseView {
            name: cfg.name.clone(),
            release_id: release_id(&cfg),
            service: cfg.service.clone(),
            target: cfg.target.clone(),
            candidate_revision: cfg.candidate_revision.clone(),
            state: ReleaseState::Starting,
            now_s: 0,
            duration_s: 0,
            decision: None,
            judge: None,
            observation: None,
            consultation: None,
            failing: vec![],
            pending_approval: None,
            ledger_seq: 0,
            status: None,
            error: None,
            registered_by: by,
        };
        {
            let mut table = self.table();
            if table.contains_key(&cfg.name) {
                return Err(RegisterError::Duplicate(cfg.name));
            }
            let entry = Entry { view: view.clone(), cfg: cfg.clone(), operator: op_tx, to_loop };
            table.insert(cfg.name.clone(), entry);
        }
        self.gates.register(&cfg.name, &cfg.candidate_revision, 0);
        let agent = self.clone();
        let task = tokio::spawn(async move { agent.drive(cfg, controls).await });
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task);
        Ok(view)
    }

    async fn drive(self: Arc<Self>, cfg: ReleaseConfig, controls: Controls) {
        let name = cfg.name.clone();
        let key = Key { name: name.clone(), id: release_id(&cfg) };
        let started = self.runtime.agent.clock.now_ms();
        let prepared = match self.runtime.prepare(&cfg, self.mode, started) {
            Ok(p) => p,
            Err(e) => return self.failed(&key, crate::error::chain(&e)),
        };
        self.update(&key, |v| v.duration_s = prepared.release.duration_s);
        let gate = self.gates.observer(&name, &cfg.candidate_revision);
        let mut observer = AgentObserver { agent: self.clone(), key: key.clone(), gate };
        match self.runtime.run(&prepared.release, self.pace, &mut observer, Some(&controls)).await {
            Ok(outcome) => self.finished(&key, outcome),
            Err(e) => self.failed(&key, crate::error::chain(&e)),
        }
    }

    /// Change the table's entry for `key`, unless a newer analysis (another
    /// revision) has taken the name since.
    fn update(&self, key: &Key, f: impl FnOnce(&mut ReleaseView)) {
        if let Some(e) = self.table().get_mut(&key.name).filter(|e| e.view.release_id == key.id) {
            f(&mut e.view);
        }
    }

    fn failed(&self, key: &Key, error: String) {
        warn!(release = key.name, %error, "Release could not run.");
        if let Some(v) = self.get(&key.name).filter(|v| v.release_id == key.id) {
            self.gates.ended(&key.name, &v.candidate_revision, None);
        }
        self.update(key, |v| {
            v.state = ReleaseState::Failed;
            v.error = Some(error);
        });
    }

    fn finished(&self, key: &Key, o: RunOutcome) {
        info!(release = key.name, status = o.status.label(), "Release ended.");
        if let Some(v) = self.get(&key.name).filter(|v| v.release_id == key.id) {
            self.gates.ended(&key.name, &v.candidate_revision, Some(&o.status));
        }
        self.update(key, |v| {
            v.state =
                if o.status == ReleaseStatus::Interrupted { ReleaseState::Paused } else { ReleaseState::Finished };
            v.status = Some(o.status);
            v.pending_approval = None;
        });
    }

    /// Every release, by name.
    pub fn list(&self) -> Vec<ReleaseView> {
        self.table().values().map(|e| e.view.clone()).collect()
    }

    /// One release.
    pub fn get(&self, name: &str) -> Option<ReleaseView> {
        self.table().get(name).map(|e| e.view.clone())
    }

    /// A rollout engine asked the gate about `revision` of `name`, which is
    /// not the revision judged: judge it from the start, as `by`. The
    /// analysis of the earlier revision is aborted if it still runs (the
    /// engine has moved on; acting on it would touch what is no longer
    /// there), and the new one is the same release with only the candidate
    /// changed — its last known good is the earlier candidate if that was
    /// promoted. Recorded (abort, registration) before anything changes.
    pub async fn new_revision(self: &Arc<Self>, name: &str, revision: &str, by: &Actor) -> Result<(), RevisionError> {
        if revision.is_empty() || revision.len() > 128 || revision.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(RevisionError::BadRevision);
        }
        let Some((old, cfg)) = self.table().get(name).map(|e| (e.view.clone(), e.cfg.clone())) else {
            return Err(RevisionError::NotFound(name.into()));
        };
        if old.candidate_revision == revision {
            return Ok(());
        }
        let next = next_revision(&cfg, &old, revision);
        let ended = matches!(old.state, ReleaseState::Finished | ReleaseState::Failed);
        // Advisory analyses (`serve`) change nothing, so there is nothing to record.
        if self.mode == RunMode::Act {
            if !ended {
                let reason = format!("superseded: the rollout engine moved to revision {revision}");
                self.record(&old.release_id, by, OperatorAction::Abort, reason, None).await?;
            }
            let reason = format!("new analysis of {name}: revision {revision} (was {})", old.candidate_revision);
            self.record(&release_id(&next), by, OperatorAction::Register, reason, Some(next.clone())).await?;
        }
        let replaced = {
            let mut table = self.table();
            let still = table.get(name).is_some_and(|e| e.view.release_id == old.release_id);
            if still { table.remove(name) } else { None }
        };
        let Some(replaced) = replaced else { return Ok(()) }; // another request got there first
        let _ = replaced.operator.send(OperatorState::Aborted);
        info!(release = name, from = %old.candidate_revision, to = revision, "New revision: new analysis.");
        self.admit(next, by.to_string())?;
        Ok(())
    }

    async fn record(
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
    async fn write_operator(
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
    fn apply_operator(&self, name: &str, release_id: &str, action: OperatorAction) {
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
    pub async fn request_rollback(
        &self,
        name: &str,
        (actor, who): (Actor, Principal),
        reason: String,
    ) -> Result<AnswerReply, OperateError> {
        let to_loop = {
            let table = self.table();
            let Some(e) = table.get(name) else { return Err(OperateError::NotFound(name.into())) };
            if matches!(e.view.state, ReleaseState::Finished | ReleaseState::Failed) {
                return Err(OperateError::Ended(name.into()));
            }
            if let Some(open) = &e.view.pending_approval {
                return Err(OperateError::RequestOpen(open.request.id.clone()));
            }
            e.to_loop.clone()
        };
        let (reply, rx) = oneshot::channel();
        let req = RollbackRequest { actor, who, reason, reply };
        to_loop.rollbacks.send(req).await.map_err(|_| OperateError::Ended(name.into()))?;
        to_loop.wake.notify_one();
        tokio::time::timeout(Duration::from_secs(600), rx)
            .await
            .map_err(|_| OperateError::NoAnswer)?
            .map_err(|_| OperateError::Ended(name.into()))
    }

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

    fn count_answer(&self, approval_id: &str, identity: &str, r: &AnswerReply) {
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
    async fn relay(
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
            let rows = ledger
                .of_kind(RecordKind::ApprovalResolved, Some(&release), mine, 100)
                .await
                .map_err(AnswerError::Ledger)?;
            let ours = rows.into_iter().find_map(|(s, r)| match r {
                Record::ApprovalResolved(a) if a.id == approval_id && s.actor == writer => Some(a.ruling),
                _ => None,
            });
            if let Some(ruling) = ours {
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

    /// What closed a request, when the ledger shows it closed (answered,
    /// expired or withdrawn; a refused answer leaves it open).
    async fn closed_in_ledger(&self, release: &str, id: &str, after: i64) -> Result<Option<String>, AnswerError> {
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
    async fn final_status(
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

    /// Set the scrape-time gauges from the table and render `/metrics`.
    pub fn render_metrics(&self) -> String {
        let views = self.list();
        for s in ReleaseState::ALL {
            let n = views.iter().filter(|v| v.state == s).count() as i64;
            self.metrics.releases.get_or_create(&Kind { kind: s.label().into() }).set(n);
        }
        self.metrics.approvals_pending.set(views.iter().filter(|v| v.pending_approval.is_some()).count() as i64);
        self.metrics.render()
    }

    /// Ready: the ledger answers a read and, while releases run, writes
    /// (each tick renews the target's lease) have committed within a lease.
    pub async fn ready(&self) -> Result<(), NotReady> {
        self.runtime.ledger.list(None, 1).await.map_err(NotReady::Ledger)?;
        let active = self
            .list()
            .iter()
            .any(|v| matches!(v.state, ReleaseState::Running | ReleaseState::AwaitingApproval | ReleaseState::Held));
        let since = self.runtime.agent.clock.now_ms() - self.last_write.load(Ordering::Relaxed);
        if active && since > self.runtime.agent.lease_ms {
            return Err(NotReady::NotRenewing { since_ms: since });
        }
        Ok(())
    }

    /// Wait for every release loop to end (after the stop signal: each stops
    /// between ticks, an action in flight runs to its end).
    pub async fn wait(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            let _ = t.await;
        }
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

/// The release judging `revision` after `old` (of `cfg`): same target,
/// source and executor; a promoted candidate becomes the last known good.
fn next_revision(cfg: &ReleaseConfig, old: &ReleaseView, revision: &str) -> ReleaseConfig {
    let mut next = cfg.clone();
    if old.status == Some(ReleaseStatus::Promoted) {
        next.last_known_good = Some(old.candidate_revision.clone());
    }
    next.candidate_revision = revision.to_string();
    next
}

/// Why the agent is not ready.
#[derive(Debug, Error)]
pub enum NotReady {
    /// The ledger does not answer.
    #[error("the ledger does not answer")]
    Ledger(#[source] LedgerError),
    /// Releases run but nothing has been written for longer than a lease: leases are lapsing.
    #[error("leases are not renewing: no ledger write for {since_ms} ms while releases run")]
    NotRenewing {
        /// Milliseconds since the last committed write.
        since_ms: i64,
    },
}

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

/// One analysis in the table: the name and the release id (name, target
/// and revision), so a superseded analysis never writes over its successor.
#[derive(Clone)]
struct Key {
    name: String,
    id: String,
}

/// Keeps the agent's table, the gate and the metrics current.
struct AgentObserver {
    agent: Arc<Agent>,
    key: Key,
    gate: GateObserver,
}

impl Observer for AgentObserver {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        self.gate.on_tick(t);
        self.agent.metrics.tick(t.outcome.decision.label(), t.took, t.budget);
        if let Some(c) = t.consultation {
            self.agent.metrics.model_calls.inc_by(u64::from(c.usage.calls));
            self.agent.metrics.model_tokens.inc_by(c.usage.total_tokens);
            if c.rejection.is_some() || c.error.is_some() {
                self.agent.metrics.model_rejections.inc();
            }
        }
        self.agent.update(&self.key, |v| {
            v.now_s = t.now_s;
            v.duration_s = t.duration_s;
            v.decision = Some(t.outcome.decision.clone());
            v.failing = t.judge.failing().map(|f| f.metric.clone()).collect();
            v.judge = Some(t.judge.clone());
            if let Some(o) = t.observation {
                v.observation = Some(o.clone());
            }
            if let Some(c) = t.consultation {
                v.consultation = Some(Arc::new(c.clone()));
            }
            v.ledger_seq = t.seq;
            if matches!(v.state, ReleaseState::Starting) {
                v.state = ReleaseState::Running;
            }
        });
    }

    fn on_outcome(&mut self, plan: &ActionPlan, result: &ActionResult) {
        let labels = ActionLabels { action: plan.kind.label().into(), result: result.label().into() };
        self.agent.metrics.actions.get_or_create(&labels).inc();
    }

    fn on_approval(&mut self, request: Option<&ApprovalRequested>) {
        if let Some(r) = request {
            info!(release = %self.key.name, id = %r.request.id, "Approval request open.");
        } else if let Some(open) = self.agent.get(&self.key.name).and_then(|v| v.pending_approval) {
            let how = "closed (answered, expired or withdrawn; see the ledger)".to_string();
            self.agent.closed.lock().unwrap_or_else(PoisonError::into_inner).entry(open.request.id).or_insert(how);
        }
        let held = self.agent.table().get(&self.key.name).is_some_and(|e| *e.operator.borrow() == OperatorState::Held);
        self.agent.update(&self.key, |v| {
            v.pending_approval = request.cloned();
            v.state = match (request.is_some(), held) {
                (true, _) => ReleaseState::AwaitingApproval,
                (false, true) => ReleaseState::Held,
                (false, false) => ReleaseState::Running,
            };
        });
    }
}
