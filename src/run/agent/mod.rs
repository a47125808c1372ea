//! `backstop agent`: many releases running for a long time, with people in
//! the loop. The agent keeps a table of releases (what the API, the
//! dashboard and `/metrics` show), passes operators' holds and approvers'
//! answers to the running loops, and writes every change a person asks for
//! to the ledger under their identity before it takes effect.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;

use crate::ledger::LedgerError;
use crate::orchestrator::human::{OperatorState, Senders};
use crate::policy::RunMode;
use crate::release::ReleaseConfig;
use crate::run::Runtime;
use crate::run::gate::GateBoard;
use crate::run::metrics::{Kind, Metrics};

mod answers;
mod fleets;
mod observer;
mod operate;
mod register;
mod share;
mod sync;

pub use answers::AnswerError;
pub use observer::{ReleaseState, ReleaseView};
pub use operate::OperateError;
pub use register::{RegisterError, RevisionError};

struct Entry {
    view: ReleaseView,
    /// As configured or registered (with the executor of its declared target).
    cfg: ReleaseConfig,
    operator: watch::Sender<OperatorState>,
    to_loop: Senders,
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
    /// Person requests relayed through the ledger read up to this seq.
    relays_read: Mutex<i64>,
    /// Relayed requests read but not yet ruled on: offered again to this
    /// agent's loop for the release while they are worth ruling on, so one
    /// read while no agent held the release (a takeover) reaches the next holder.
    relays_pending: Mutex<Vec<sync::PendingRelay>>,
    /// Unix ms of the last committed ledger write (ticks carry the lease renewals).
    last_write: Arc<AtomicI64>,
    /// This agent's heartbeat on the roster, from [`Agent::keep_sharing`] to [`Agent::leave_roster`].
    heartbeat: Mutex<Option<crate::run::share::Heartbeat>>,
}

/// Operator records read when looking a release up by name (newest first).
const REGISTRATIONS_READ: i64 = 10_000;

/// How often an agent reads registrations other agents recorded.
const SYNC_EVERY: Duration = Duration::from_secs(2);

impl Agent {
    /// An agent on `service`; `pace` as for `watch` (None: real time);
    /// `mode`: whether it acts (`backstop agent`) or only answers (`serve`).
    pub fn new(mut runtime: Runtime, pace: Option<Duration>, mode: RunMode) -> Arc<Self> {
        if mode == RunMode::Act {
            let capacity = runtime.settings.agent.capacity;
            runtime.agent.seats = Some(crate::orchestrator::seat::Seats::new(capacity));
        }
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
            relays_read: Mutex::new(0),
            relays_pending: Mutex::new(Vec::new()),
            last_write,
            heartbeat: Mutex::new(None),
        })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The runtime the agent runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Start every configured release: an acting agent starts a fleet's
    /// members wave by wave (`[[fleets]]`), the others at once.
    pub fn start_configured(self: &Arc<Self>) -> Result<(), RegisterError> {
        let all = &self.runtime.settings.releases;
        let plans = match self.mode {
            RunMode::Act => self.runtime.settings.fleet_plans().unwrap_or_default(),
            RunMode::Advise => vec![],
        };
        let in_fleet = |i: usize| plans.iter().any(|p| p.waves.iter().flatten().any(|&m| m == i));
        let alone = all.iter().enumerate().filter(|(i, _)| !in_fleet(*i)).map(|(_, r)| r.clone()).collect();
        self.start(alone)?;
        self.start_fleets(plans)
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

    /// Every release, by name.
    pub fn list(&self) -> Vec<ReleaseView> {
        self.table().values().map(|e| e.view.clone()).collect()
    }

    /// One release.
    pub fn get(&self, name: &str) -> Option<ReleaseView> {
        self.table().get(name).map(|e| e.view.clone())
    }

    /// The configuration of release `name`: the one this agent runs, else
    /// the newest registration of that name in the ledger (a release that
    /// ended before this agent started, or on another agent). `None`: no
    /// release of that name is known.
    pub async fn config_of(&self, name: &str) -> Result<Option<ReleaseConfig>, crate::ledger::LedgerError> {
        if let Some(cfg) = self.table().get(name).map(|e| e.cfg.clone()) {
            return Ok(Some(cfg));
        }
        if let Some(cfg) = self.runtime.settings.releases.iter().find(|r| r.name == name) {
            return Ok(Some(cfg.clone()));
        }
        let rows =
            self.runtime.ledger.of_kind(crate::ledger::RecordKind::Operator, None, 0, REGISTRATIONS_READ).await?;
        // Read in ledger order; the latest registration of the name is the release now known by it.
        Ok(rows.into_iter().rev().find_map(|(_, rec)| match rec {
            crate::ledger::Record::Operator(crate::ledger::OperatorRecord { release: Some(cfg), .. })
                if cfg.name == name =>
            {
                Some(*cfg)
            }
            _ => None,
        }))
    }

    /// Set the scrape-time gauges from the table and render `/metrics`.
    pub fn render_metrics(&self) -> String {
        let views = self.list();
        for s in ReleaseState::ALL {
            let n = views.iter().filter(|v| v.state == s).count() as i64;
            self.metrics.releases.get_or_create(&Kind { kind: s.label().into() }).set(n);
        }
        self.metrics.approvals_pending.set(views.iter().filter(|v| v.pending_approval.is_some()).count() as i64);
        let queue = self.runtime.ledger.queue_pressure();
        self.metrics.ledger_queue_waits.set(queue.waits as i64);
        self.metrics.ledger_queue_wait_max_seconds.set(queue.max_wait.as_secs_f64());
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

/// One analysis in the table: the name and the release id (name, target
/// and revision), so a superseded analysis never writes over its successor.
#[derive(Clone)]
struct Key {
    name: String,
    id: String,
}
