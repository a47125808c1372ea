//! A configured release made runnable: its source, facts, and what may act
//! on its target. The one place configuration turns into a running release.

use std::sync::Arc;

use crate::clock::Clock;
use crate::executor::{
    CommandExecutor, Executor, ExecutorConfig, GatewayApiExecutor, Guarded, HaproxyExecutor, KubernetesExecutor,
    ManualPlanner, MlflowExecutor, Planner, SimulatedExecutor, WebhookExecutor,
};
use crate::orchestrator::Actuation;
use crate::policy::{ReleaseFacts, RunMode};
use crate::release::{ReleaseConfig, lease_name};
use crate::signals::{SignalSource, TimeZero, build_source};

/// A configured release cannot be made runnable.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Its signal source cannot be built.
    #[error(transparent)]
    Source(#[from] crate::signals::SourceError),
    /// Its log source cannot be set up.
    #[error("log source")]
    Logs(#[from] crate::logs::LogReadError),
    /// Its executor cannot be set up (a secret unset, no Kubernetes client).
    #[error(transparent)]
    Executor(#[from] crate::executor::ExecutorError),
    /// Its ramp needs more judged time than the source's analysis window has.
    #[error(
        "ramp: its steps need {needed_s} s judged (min_judged_s × steps below 100), but the analysis window is {window_s} s; lengthen the window or shorten the steps"
    )]
    RampLongerThanWindow {
        /// Seconds the steps need.
        needed_s: u64,
        /// Seconds the window has.
        window_s: u64,
    },
}

/// Everything needed to run one release.
pub struct PreparedRelease {
    /// Facts for policy.
    pub facts: ReleaseFacts,
    /// Where signals come from.
    pub source: Arc<dyn SignalSource>,
    /// What acts, in an acting run with an executor configured.
    executor: Option<Arc<dyn Executor>>,
    /// What plans, always.
    planner: Arc<dyn Planner>,
    /// Release seconds between ticks.
    pub tick_s: u64,
    /// Analysis window, seconds.
    pub duration_s: u64,
    /// The stepwise traffic ramp backstop drives, if configured.
    pub ramp: Option<crate::release::RampConfig>,
    /// Fault onset known to the source (for reports only; never shown to a judge).
    pub known_onset_s: Option<u64>,
    /// The metrics the source reports.
    pub metrics: Vec<crate::signals::MetricSpec>,
    /// The lease's name: `resource ` and the resource the executor changes
    /// (an HAProxy backend on its socket, a Kubernetes workload, a webhook
    /// endpoint), or the target where that is unknown (a command, the
    /// simulator, no executor).
    pub lease: String,
    /// Time 0 of the canary's samples (ms since the epoch) when a continued
    /// release reads them from elsewhere than its first start
    /// ([`crate::run::resume`]); `None`: from the start.
    pub canary_from_ms: Option<i64>,
}

/// The one dispatch point from executor configuration to an executor;
/// advising builds planners only (a webhook's never reads its signing secret).
fn executor_for(
    cfg: &ReleaseConfig,
    simulator: Option<&Arc<crate::signals::simulator::Simulator>>,
    mode: RunMode,
    clock: &Arc<dyn Clock>,
) -> Result<Option<Arc<dyn Executor>>, PrepareError> {
    let (target, from) = (cfg.target.clone(), cfg.candidate_revision.clone());
    Ok(match (&cfg.executor, simulator) {
        (Some(ExecutorConfig::Simulator), Some(sim)) => Some(Arc::new(SimulatedExecutor::new(target, sim.clone()))),
        (Some(ExecutorConfig::Haproxy(h)), _) => Some(Arc::new(HaproxyExecutor::new(target, h.clone()))),
        (Some(ExecutorConfig::Kubernetes(k)), _) => Some(Arc::new(KubernetesExecutor::new(target, k.clone())?)),
        (Some(ExecutorConfig::GatewayApi(g)), _) => Some(Arc::new(GatewayApiExecutor::new(target, g.clone())?)),
        (Some(ExecutorConfig::Command(c)), _) => Some(Arc::new(CommandExecutor::new(target, from, c.clone()))),
        // Advising plans only: it never reads the signing secret.
        (Some(ExecutorConfig::Webhook(w)), _) if mode == RunMode::Advise => {
            Some(Arc::new(WebhookExecutor::planner(target, from, w.clone())?))
        }
        (Some(ExecutorConfig::Webhook(w)), _) => {
            Some(Arc::new(WebhookExecutor::new(target, from, w.clone(), clock.clone())?))
        }
        (Some(ExecutorConfig::Mlflow(m)), _) if mode == RunMode::Advise => {
            Some(Arc::new(MlflowExecutor::planner(target, m.clone())?))
        }
        (Some(ExecutorConfig::Mlflow(m)), _) => Some(Arc::new(MlflowExecutor::new(target, m.clone())?)),
        _ => None,
    })
}

impl PreparedRelease {
    /// Build a release from its configuration; `mode` decides whether an
    /// executor is built at all (never in `Advise`). A live source reads its
    /// windows at `time0` (from now, a past window's start, or a continued
    /// release's recorded start).
    pub fn prepare(
        cfg: &ReleaseConfig,
        declared_targets: Arc<[String]>,
        release_id: String,
        mode: RunMode,
        clock: Arc<dyn Clock>,
        time0: TimeZero,
    ) -> Result<Self, PrepareError> {
        let built = build_source(&cfg.source, time0, &clock)?;
        if let Some(ramp) = cfg.ramp.as_ref().filter(|r| r.judged_s() > built.duration_s) {
            return Err(PrepareError::RampLongerThanWindow { needed_s: ramp.judged_s(), window_s: built.duration_s });
        }
        let configured = executor_for(cfg, built.simulator.as_ref(), mode, &clock)?;
        let planner: Arc<dyn Planner> = match &configured {
            // Plans go through the same guard; as a `dyn Planner` nothing can execute them.
            Some(e) => Arc::new(Guarded::new(e.clone())),
            None => Arc::new(ManualPlanner::new(cfg.target.clone())),
        };
        let executor = match mode {
            RunMode::Act => configured,
            RunMode::Advise => None,
        };
        Ok(Self {
            facts: ReleaseFacts {
                release_id,
                service: cfg.service.clone(),
                target: cfg.target.clone(),
                service_targets: 0,
                declared_targets,
                candidate_revision: cfg.candidate_revision.clone(),
                last_known_good: cfg.last_known_good.clone(),
                quarantine: None,
                last_known_good_from: None,
                irreversible: cfg.irreversible,
                environment: cfg.environment.clone(),
            },
            source: with_pods_and_logs(cfg, built.source, time0)?,
            executor,
            planner,
            tick_s: cfg.tick_s.unwrap_or(u64::from(built.step_s)),
            duration_s: built.duration_s,
            ramp: cfg.ramp.clone(),
            known_onset_s: built.known_onset_s,
            metrics: built.metrics,
            lease: lease_name(cfg),
            canary_from_ms: None,
        })
    }

    /// The exact plan of `proposed` at release time `now_s`, as this
    /// release's executor (or, without one, the manual planner) would carry
    /// it out: what an approver approves. `None` when it cannot be planned.
    pub fn plan_for(&self, proposed: &crate::policy::Proposal, now_s: u64) -> Option<crate::executor::ActionPlan> {
        match proposed {
            crate::policy::Proposal::Rollback { plan } => self.planner.plan_rollback(plan, now_s).ok(),
            crate::policy::Proposal::Promote => self.planner.plan_promote(&self.facts.candidate_revision, now_s).ok(),
        }
    }

    /// What the orchestrator may use: the executor when there is one, else plans only.
    pub fn actuation(&self) -> Actuation {
        match &self.executor {
            Some(e) => Actuation::Live(Guarded::new(e.clone())),
            None => Actuation::Advisory(self.planner.clone()),
        }
    }

    /// Reach the executor's system read-only; `None` without an executor.
    pub async fn probe_executor(&self) -> Option<Result<String, crate::executor::ExecutorError>> {
        match &self.executor {
            Some(e) => Some(Guarded::new(e.clone()).probe().await),
            None => None,
        }
    }

    /// Whether this run can act on its target.
    pub fn can_act(&self) -> bool {
        self.executor.is_some()
    }
}

/// `source` with the release's pod events and log lines added, as configured.
fn with_pods_and_logs(
    cfg: &ReleaseConfig,
    source: Arc<dyn SignalSource>,
    time0: TimeZero,
) -> Result<Arc<dyn SignalSource>, PrepareError> {
    // Pods' events and lines are read from the canary's time 0.
    let source: Arc<dyn SignalSource> = match &cfg.pods {
        Some(p) => Arc::new(crate::signals::WithPodSignals::new(source, p.clone(), time0.canary_s)),
        None => source,
    };
    Ok(match &cfg.logs {
        Some(l) => {
            // The baseline's lines come from the same earlier window as its metrics,
            // before the release's start however much later the canary is read.
            let offset = cfg.source.prometheus_api().map_or(0, |p| p.baseline_offset_s().unwrap_or(0));
            let later_s = if offset > 0 { (time0.canary_s - time0.started_s).max(0.0) as u64 } else { 0 };
            Arc::new(l.wrap(source, cfg.pods.as_ref(), time0.canary_s, offset + later_s)?)
        }
        None => source,
    })
}
