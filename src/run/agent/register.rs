//! Releases entering the agent: configured, registered over the API, or a
//! new revision a rollout engine asked the gate about.

use std::sync::{Arc, PoisonError};

use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::ledger::{Actor, LedgerError, OperatorAction, OperatorRecord, Record};
use crate::orchestrator::human::{Controls, OperatorState};
use crate::orchestrator::{ReleaseStatus, RunOutcome};
use crate::policy::RunMode;
use crate::release::release_id;
use crate::release::{Registration, ReleaseConfig};
use crate::run::RuntimeError;

use super::{Agent, Entry, Key, ReleaseState, ReleaseView, observer::AgentObserver};

/// Whether `name` belongs to a release still in play. A finished or failed
/// one gives its name up: a pipeline's next revision registers under it (the
/// ended release stays in the ledger, and its report with it).
fn taken(table: &std::collections::BTreeMap<String, Entry>, name: &str) -> bool {
    table.get(name).is_some_and(|e| !matches!(e.view.state, ReleaseState::Finished | ReleaseState::Failed))
}

/// Registration refused.
#[derive(Debug, Error)]
pub enum RegisterError {
    /// A release of that name is still running (or waiting, or held).
    #[error("a release named `{0}` is already registered and has not ended")]
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

impl Agent {
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
        if taken(&self.table(), &cfg.name) {
            return Err(RegisterError::Duplicate(cfg.name));
        }
        // Prepared, and its queries tried once, so a bad body or a query the
        // backend refuses is refused before anything is recorded.
        let prepared = self.runtime.prepare(&cfg, RunMode::Act, 0)?;
        self.runtime.preflight(&prepared).await?;
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
    pub(super) fn admit(self: &Arc<Self>, cfg: ReleaseConfig, by: String) -> Result<ReleaseView, RegisterError> {
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
            holder: None,
        };
        {
            let mut table = self.table();
            if taken(&table, &cfg.name) {
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

    pub(super) async fn drive(self: Arc<Self>, cfg: ReleaseConfig, controls: Controls) {
        let name = cfg.name.clone();
        let key = Key { name: name.clone(), id: release_id(&cfg) };
        let started = self.runtime.agent.clock.now_ms();
        let prepared = match self.runtime.prepare_to_run(&cfg, self.mode, started).await {
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
    pub(super) fn update(&self, key: &Key, f: impl FnOnce(&mut ReleaseView)) {
        if let Some(e) = self.table().get_mut(&key.name).filter(|e| e.view.release_id == key.id) {
            f(&mut e.view);
        }
    }

    pub(super) fn failed(&self, key: &Key, error: String) {
        warn!(release = key.name, %error, "Release could not run.");
        if let Some(v) = self.get(&key.name).filter(|v| v.release_id == key.id) {
            self.gates.ended(&key.name, &v.candidate_revision, None);
        }
        self.update(key, |v| {
            v.state = ReleaseState::Failed;
            v.error = Some(error);
        });
    }

    pub(super) fn finished(&self, key: &Key, o: RunOutcome) {
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
