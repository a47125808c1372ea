//! The run loop as a library service: everything that turns configuration
//! into running releases, shared by `watch`, `advise`, `serve`, `demo` and
//! `agent` (the CLI only parses arguments and prints).
//!
//! [`Runtime`] owns what every release shares — settings, policy, ledger,
//! model, this agent's identity and clock, the stop signal — and runs
//! prepared releases, one or many at once. [`agent::Agent`] keeps many
//! running for a long time, with people in the loop.

pub mod agent;
pub mod compaction;
mod error;
pub mod exit;
pub mod fleet;
pub mod gate;
pub mod history;
pub mod memory;
pub mod metrics;
pub mod prepare;
pub mod recorded;
pub mod resume;
pub mod share;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;

pub use error::Error;

use crate::assessor::{Assessor, ModelError};
use crate::config::Settings;
use crate::ledger::{Ledger, LedgerError};
use crate::orchestrator::{AgentContext, Observer, ReleaseRun, RunOutcome, human::Controls};
use crate::policy::{PolicyFile, PolicyFileError, RunMode};
use crate::release::ReleaseConfig;
use crate::release::release_id;
use crate::signals::TimeZero;
use prepare::PreparedRelease;

/// Why a service cannot start or a release cannot be prepared.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The ledger cannot be opened.
    #[error("cannot open the ledger")]
    Ledger(#[source] LedgerError),
    /// The ledger could not say when a release first started.
    #[error("cannot read when release `{name}` started from the ledger")]
    Recorded {
        /// The release.
        name: String,
        /// Why.
        #[source]
        source: LedgerError,
    },
    /// The model section is unusable.
    #[error("model configuration")]
    Model(#[source] ModelError),
    /// No release by that name.
    #[error("no release named `{name}` in configuration; configured: {known}")]
    UnknownRelease {
        /// Asked for.
        name: String,
        /// Comma-separated configured names.
        known: String,
    },
    /// A release that only runs as a member of its fleet.
    #[error("release `{name}` is in fleet `{fleet}`, which starts it in its wave; pass --release {fleet}")]
    InFleet {
        /// Asked for.
        name: String,
        /// Its fleet.
        fleet: String,
    },
    /// Nothing to run.
    #[error("no releases configured: add [[releases]] to backstop.toml (see docs/configuration.md)")]
    NoReleases,
    /// A release's configuration cannot be turned into a running release.
    #[error("release `{name}`")]
    Prepare {
        /// Release name.
        name: String,
        /// Why.
        #[source]
        source: Box<crate::run::prepare::PrepareError>,
    },
    /// The ledger's recent history does not verify: refused before anything is appended.
    #[error(
        "the ledger at {url} was changed after it was written ({problems}); nothing was appended. \
         Run `backstop audit verify` and restore it, or start a new ledger"
    )]
    Tampered {
        /// Ledger URL (credentials removed).
        url: String,
        /// What the chain check found, in brief.
        problems: String,
    },
    /// The signal backend refused one of a release's queries before its first tick.
    #[error("release `{name}`: a query is wrong")]
    Query {
        /// Release name.
        name: String,
        /// The backend's refusal.
        #[source]
        source: crate::signals::SignalError,
    },
    /// The policy does not fit a release's metrics.
    #[error("release `{name}`: policy")]
    Policy {
        /// Release name.
        name: String,
        /// Why.
        #[source]
        source: PolicyFileError,
    },
}

impl RuntimeError {
    /// Whether the fix is in configuration (exit 2) rather than a backend (exit 3).
    pub fn is_usage(&self) -> bool {
        !matches!(self, RuntimeError::Ledger(_) | RuntimeError::Recorded { .. } | RuntimeError::Tampered { .. })
    }

    /// Whether the ledger was found edited (exit 4, as `audit verify`).
    pub fn is_tampering(&self) -> bool {
        matches!(self, RuntimeError::Tampered { .. })
    }
}

/// Each service's newest calibration in the ledger (`backstop calibrate`),
/// logged so a run's output says which tolerances are learned.
pub async fn calibrations_in_force(
    ledger: &Ledger,
) -> Result<std::collections::BTreeMap<String, crate::calibrate::Calibration>, crate::ledger::LedgerError> {
    let mut newest = std::collections::BTreeMap::new();
    for (stored, record) in ledger.of_kind(crate::ledger::RecordKind::Calibration, None, 0, 100_000).await? {
        if let crate::ledger::Record::Calibration(c) = record {
            tracing::info!(service = %c.service, releases = c.releases.len(), seq = stored.seq, "Calibrated tolerances in force.");
            newest.insert(c.service.clone(), *c);
        }
    }
    Ok(newest)
}

/// `[calibration] auto`: each configured service with a Prometheus source
/// re-calibrated from its past releases. A failure (Prometheus down, a
/// window gone past retention) keeps the calibration in force and is logged:
/// calibration can refine a judgement, never stop a release.
async fn recalibrate_configured(ledger: &Ledger, settings: &Settings, policy: &mut PolicyFile, agent: &AgentContext) {
    let mut done = std::collections::BTreeSet::new();
    for r in &settings.releases {
        let Some(p) = r.source.prometheus_api() else { continue };
        if !done.insert(r.service.clone()) {
            continue;
        }
        let actor = agent.actor();
        let now_ms = agent.clock.now_ms();
        let in_force = policy.calibrations.get(&r.service).cloned();
        match history::recalibrate(ledger, &r.service, p, policy, &actor, now_ms, in_force.as_ref()).await {
            Ok(Some(c)) => {
                tracing::info!(service = %r.service, releases = c.releases.len(), "Re-calibrated from past releases.");
                policy.calibrations.insert(r.service.clone(), c);
            }
            Ok(None) => tracing::info!(service = %r.service, "Too few past releases to calibrate yet."),
            Err(e) => {
                tracing::warn!(service = %r.service, error = %crate::error::chain(&e), "Re-calibration failed; the calibration in force stays.")
            }
        }
    }
}

/// Where this process keeps its own checkpoint of a ledger (outside the
/// database): beside a SQLite file, else in the user's data directory.
fn checkpoint_file(ledger_url: &str) -> std::path::PathBuf {
    if let Some(rest) = ledger_url.strip_prefix("sqlite://") {
        let file = rest.split('?').next().unwrap_or(rest);
        return std::path::PathBuf::from(format!("{file}.checkpoint"));
    }
    let key = &crate::digest::digest(ledger_url.as_bytes())[..16];
    let dir = crate::config::default_ledger_path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    dir.join("checkpoints").join(format!("{key}.checkpoint"))
}

/// This process's anchor of a ledger, kept outside the database: the
/// verified head at start, then, when the service ends, the newest record it
/// appended — so the next start checks everything written since.
pub struct Anchor {
    file: std::path::PathBuf,
    first: String,
    ledger: Arc<Ledger>,
}

impl Anchor {
    fn write(&self, at: &crate::ledger::Checkpoint) {
        let written = self.file.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            // A ledger this process started: its first record is the one it wrote.
            let first = match self.first.as_str() {
                "" => self.ledger.first_appended().unwrap_or_default(),
                known => known.to_string(),
            };
            std::fs::write(&self.file, format!("{at}\n{first}\n"))
        });
        if let Err(e) = written {
            tracing::warn!(file = %self.file.display(), error = %crate::error::chain(&e), "Cannot keep the ledger checkpoint; the next start checks the tail only.");
        }
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        if let Some(newest) = self.ledger.newest_appended() {
            self.write(&newest);
        }
    }
}

/// Before anything is appended: the chain since this process's last
/// checkpoint (or its tail) verifies, else the ledger is refused. Then the
/// verified head becomes the checkpoint the next start is held to.
async fn guard_chain(ledger: &Arc<Ledger>, ledger_url: &str) -> Result<Anchor, RuntimeError> {
    let file = checkpoint_file(ledger_url);
    let first = ledger.get(1).await.map_err(RuntimeError::Ledger)?.map(|r| r.hash).unwrap_or_default();
    // The checkpoint names the ledger's first record too: a ledger deleted and
    // started anew is a new ledger, not a truncated one.
    let kept = std::fs::read_to_string(&file).unwrap_or_default();
    let mut lines = kept.lines();
    let anchor: Option<crate::ledger::Checkpoint> = lines.next().and_then(|l| l.trim().parse().ok());
    let anchor = anchor.filter(|_| lines.next().is_some_and(|f| f.trim() == first));
    let report = ledger.verify_recent(anchor).await.map_err(RuntimeError::Ledger)?;
    if !report.problems.is_empty() {
        let problems = report.problems.iter().take(3).map(ToString::to_string).collect::<Vec<_>>().join("; ");
        return Err(RuntimeError::Tampered { url: ledger.url().to_string(), problems });
    }
    let head = ledger.checkpoint().await.map_err(RuntimeError::Ledger)?;
    let first = ledger.get(1).await.map_err(RuntimeError::Ledger)?.map(|r| r.hash).unwrap_or_default();
    let anchor = Anchor { file, first, ledger: ledger.clone() };
    anchor.write(&head);
    Ok(anchor)
}

/// What every release of one process shares.
#[derive(Clone)]
pub struct Runtime {
    /// Configuration as loaded.
    pub settings: Arc<Settings>,
    /// The policy.
    pub policy: Arc<PolicyFile>,
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// The model, when configured.
    pub model: Option<Arc<Assessor>>,
    /// This process as an agent (instance id, lease, clock).
    pub agent: AgentContext,
    /// Flips to `true` on SIGINT/SIGTERM.
    pub stop: watch::Receiver<bool>,
    /// Targets actions may touch, computed once and shared by every release.
    declared: Arc<[String]>,
    /// [`Runtime::service_targets`] of every configured release's service,
    /// computed once: per release it is a pass over every release, so
    /// preparing thousands of them was quadratic.
    targets_by_service: Arc<BTreeMap<String, u32>>,
    /// Written when the last handle on this service drops.
    _anchor: Arc<Anchor>,
}

/// How many distinct targets `settings` declare for `service`: its
/// `[[releases]]` and the agent targets open to it.
fn count_targets(settings: &Settings, service: &str) -> u32 {
    let configured = settings.releases.iter().filter(|r| r.service == service).map(|r| r.target.as_str());
    let open = |t: &&crate::release::AgentTarget| t.services.is_empty() || t.services.iter().any(|x| x == service);
    let agent = settings.agent.targets.iter().filter(open).map(|t| t.target.as_str());
    let all: BTreeSet<&str> = configured.chain(agent).collect();
    u32::try_from(all.len()).unwrap_or(u32::MAX)
}

/// A release prepared under a name.
pub struct Prepared {
    /// Configured name.
    pub name: String,
    /// The runnable release.
    pub release: PreparedRelease,
}

impl Runtime {
    /// Open the ledger and the model for `settings` and `policy`.
    pub async fn open(
        settings: Settings,
        policy: PolicyFile,
        ledger_url: &str,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, RuntimeError> {
        let ledger = Arc::new(Ledger::open(ledger_url).await.map_err(RuntimeError::Ledger)?);
        let anchor = Arc::new(guard_chain(&ledger, ledger_url).await?);
        let mut policy = policy;
        let agent = AgentContext::new(&settings.agent, Arc::new(crate::clock::SystemClock));
        if policy.calibration.apply {
            policy.calibrations = calibrations_in_force(&ledger).await.map_err(RuntimeError::Ledger)?;
        }
        if policy.calibration.auto {
            recalibrate_configured(&ledger, &settings, &mut policy, &agent).await;
        }
        let model = settings.assessor().map_err(RuntimeError::Model)?;
        let mut declared = settings.declared_targets();
        declared.extend(settings.agent.targets.iter().map(|d| d.target.clone()));
        let services: BTreeSet<&str> = settings.releases.iter().map(|r| r.service.as_str()).collect();
        let targets_by_service = services.into_iter().map(|s| (s.to_string(), count_targets(&settings, s))).collect();
        Ok(Self {
            declared: declared.into(),
            targets_by_service: Arc::new(targets_by_service),
            settings: Arc::new(settings),
            policy: Arc::new(policy),
            ledger,
            model,
            agent,
            stop,
            _anchor: anchor,
        })
    }

    /// The configured releases named (all when `names` is empty).
    pub fn select(&self, names: &[String]) -> Result<Vec<ReleaseConfig>, RuntimeError> {
        let all = &self.settings.releases;
        if all.is_empty() {
            return Err(RuntimeError::NoReleases);
        }
        if names.is_empty() {
            return Ok(all.clone());
        }
        let known = || all.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ");
        names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|r| &r.name == n)
                    .cloned()
                    .ok_or_else(|| RuntimeError::UnknownRelease { name: n.clone(), known: known() })
            })
            .collect()
    }

    /// Turn one release's configuration into a runnable release. An acting
    /// release keeps one id across restarts and replicas; an advisory run is
    /// its own analysis (`started_ms` tells runs apart) and never shares it.
    pub fn prepare(&self, cfg: &ReleaseConfig, mode: RunMode, started_ms: i64) -> Result<Prepared, RuntimeError> {
        let now_s = self.agent.clock.now_ms() as f64 / 1000.0;
        self.prepare_at(cfg, mode, started_ms, TimeZero::at(now_s))
    }

    /// [`Runtime::prepare`] for a run that may continue one the ledger holds
    /// (after a restart, or taken over from another agent): an acting
    /// release's live sources read its window from its recorded start, so
    /// every tick reads the samples of its own release time — unless it went
    /// unobserved longer than policy's `source.resume_within_s`, then its
    /// canary is read again from now ([`resume`]). One never started reads
    /// from now; so does an advisory run, its own analysis.
    pub async fn prepare_to_run(
        &self,
        cfg: &ReleaseConfig,
        mode: RunMode,
        started_ms: i64,
    ) -> Result<Prepared, RuntimeError> {
        let recorded = match mode {
            RunMode::Act => self
                .ledger
                .resume_point(&release_id(cfg))
                .await
                .map_err(|source| RuntimeError::Recorded { name: cfg.name.clone(), source })?,
            RunMode::Advise => None,
        };
        let Some(point) = recorded else { return self.prepare(cfg, mode, started_ms) };
        let canary = resume::canary_from(&point, self.agent.clock.now_ms(), self.policy.source.resume_within_s);
        if let resume::CanaryFrom::Again { unobserved_s, .. } = canary {
            tracing::warn!(
                release = %cfg.name, unobserved_s, reached_s = point.reached_s,
                "Continued after the release went unobserved longer than policy's source.resume_within_s: its canary is read again from now."
            );
        }
        let time0 =
            TimeZero { started_s: point.started_ms as f64 / 1000.0, canary_s: canary.from_ms() as f64 / 1000.0 };
        let mut p = self.prepare_at(cfg, mode, started_ms, time0)?;
        p.release.canary_from_ms = (canary.from_ms() != point.started_ms).then_some(canary.from_ms());
        Ok(p)
    }

    /// [`Runtime::prepare`] for windows at `time0`: a past window (`advise
    /// --from`), a continued release, or an ended one whose data are read
    /// again for its report.
    pub fn prepare_at(
        &self,
        cfg: &ReleaseConfig,
        mode: RunMode,
        started_ms: i64,
        time0: TimeZero,
    ) -> Result<Prepared, RuntimeError> {
        let id = match mode {
            RunMode::Act => release_id(cfg),
            RunMode::Advise => format!("{}/advise/{started_ms}", release_id(cfg)),
        };
        let name = cfg.name.clone();
        let clock = self.agent.clock.clone();
        let files = cfg.files_from(self.settings.base_dir.as_deref());
        let mut release = PreparedRelease::prepare(&files, self.declared_targets(), id, mode, clock, time0)
            .map_err(|e| RuntimeError::Prepare { name: name.clone(), source: Box::new(e) })?;
        release.facts.service_targets = self.service_targets(&cfg.service);
        self.policy
            .check_guards(&cfg.service, &release.metrics)
            .map_err(|source| RuntimeError::Policy { name: name.clone(), source })?;
        Ok(Prepared { name, release })
    }

    /// Ask the release's source every configured query once, before its
    /// first tick: a query the backend refuses ends the run now, naming the
    /// metric and the query, instead of after a window of warnings.
    pub async fn preflight(&self, p: &Prepared) -> Result<(), RuntimeError> {
        p.release.source.check_queries().await.map_err(|source| RuntimeError::Query { name: p.name.clone(), source })
    }

    /// How many distinct targets the configuration declares for `service`:
    /// its `[[releases]]` and the agent targets open to it (what a blast
    /// radius's percentage is of).
    pub fn service_targets(&self, service: &str) -> u32 {
        match self.targets_by_service.get(service) {
            Some(&n) => n,
            None => count_targets(&self.settings, service),
        }
    }

    /// Targets actions may touch: every configured release's and the agent's declared ones.
    pub fn declared_targets(&self) -> Arc<[String]> {
        self.declared.clone()
    }

    /// Run one prepared release to its end. `pace`: real time between ticks
    /// (`None`: one tick per `tick_s`).
    pub async fn run(
        &self,
        p: &PreparedRelease,
        pace: Option<Duration>,
        observer: &mut dyn Observer,
        controls: Option<&Controls>,
    ) -> Result<RunOutcome, LedgerError> {
        let run = ReleaseRun {
            facts: p.facts.clone(),
            lease: p.lease.clone(),
            tick_s: p.tick_s,
            duration_s: p.duration_s,
            ramp: p.ramp.clone(),
            pace: pace.unwrap_or(Duration::from_secs(p.tick_s)),
            policy: &self.policy,
            ledger: &self.ledger,
            stop: Some(self.stop.clone()),
            model: self.model.clone(),
            agent: self.agent.clone(),
            controls,
            canary_from_ms: p.canary_from_ms,
        };
        run.run(p.source.as_ref(), &p.actuation(), observer).await
    }

    /// Run several prepared releases concurrently on this task; results in order.
    pub async fn run_all(
        &self,
        prepared: &[Prepared],
        pace: Option<Duration>,
        observer: &mut dyn FnMut(&str, u64) -> Box<dyn Observer>,
    ) -> Vec<Result<RunOutcome, LedgerError>> {
        let runs = prepared.iter().map(|p| {
            let mut obs = observer(&p.name, p.release.duration_s);
            async move { self.run(&p.release, pace, obs.as_mut(), None).await }
        });
        join_in_order(runs).await
    }
}

/// Run futures concurrently on this task and collect their results in order.
async fn join_in_order<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// A stop signal that flips on SIGINT, SIGTERM or SIGHUP. A hang-up (a
/// closed terminal, `systemctl kill -s HUP`) takes the same graceful path as
/// SIGTERM: releases pause between ticks and an action in flight finishes;
/// backstop has no reload, so the default of dying at once would only lose that.
pub fn stop_on_signals() -> watch::Receiver<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let on = |kind: SignalKind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = on(SignalKind::terminate()) => {}
            _ = on(SignalKind::hangup()) => {}
        }
        let _ = tx.send(true);
    });
    rx
}
