//! Fleet releases in the agent (`[[fleets]]` under `backstop agent`): a
//! task per fleet admits each wave's members as the agent's own releases
//! (shown, held, approved and gated like any other) and moves on as the
//! ledger records their ends — the same rule `watch` follows
//! ([`crate::orchestrator::fleet::fleet_next`]).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tracing::warn;

use super::{Agent, ReleaseState};
use crate::ledger::LedgerError;
use crate::orchestrator::RunOutcome;
use crate::release::{FleetPlan, ReleaseConfig};
use crate::run::fleet::{Fleet, WaveRunner};

/// How often a running wave's members are looked up in the agent's table.
const WAVE_POLL: Duration = Duration::from_millis(250);

/// Admits a wave's members to the agent and waits for their ends.
struct AgentWaves {
    agent: Arc<Agent>,
    /// The members' configurations, in the fleet's member order.
    cfgs: Vec<ReleaseConfig>,
    /// `fleet <name>`, as each member's `registered_by`.
    by: String,
}

impl WaveRunner for AgentWaves {
    async fn run_wave(&mut self, _fleet: &Fleet<'_>, wave: &[usize]) -> Result<Vec<(usize, RunOutcome)>, LedgerError> {
        for &m in wave {
            let cfg = &self.cfgs[m];
            if self.agent.get(&cfg.name).is_none()
                && let Err(e) = self.agent.admit(cfg.clone(), self.by.clone())
            {
                warn!(release = %cfg.name, error = %crate::error::chain(&e), "A fleet member could not start.");
            }
        }
        // The agent's own table says when a member's task ended (acted, or
        // followed another agent to the end); the fleet then reads the ledger once.
        loop {
            let open = wave.iter().any(|&m| {
                self.agent.get(&self.cfgs[m].name).is_some_and(|v| {
                    !matches!(v.state, ReleaseState::Finished | ReleaseState::Paused | ReleaseState::Failed)
                })
            });
            if !open || *self.agent.runtime.stop.borrow() {
                return Ok(vec![]);
            }
            tokio::time::sleep(WAVE_POLL).await;
        }
    }
}

impl Agent {
    /// Start a task per fleet; its members start only when their wave does.
    pub(super) fn start_fleets(self: &Arc<Self>, plans: Vec<FleetPlan>) -> Result<(), super::RegisterError> {
        for plan in plans {
            let cfgs: Vec<ReleaseConfig> =
                plan.waves.iter().flatten().map(|&i| self.runtime.settings.releases[i].clone()).collect();
            let mut members = Vec::new();
            for cfg in &cfgs {
                members.push(self.runtime.prepare(cfg, self.mode, 0)?);
            }
            let agent = self.clone();
            let task = tokio::spawn(async move {
                let fleet = Fleet { plan: &plan, members };
                let mut waves = AgentWaves { agent: agent.clone(), cfgs, by: format!("fleet {}", plan.name) };
                if let Err(e) = agent.runtime.drive_fleet(&fleet, &mut waves).await {
                    warn!(fleet = %plan.name, error = %crate::error::chain(&e), "The fleet stopped on a ledger error.");
                }
            });
            self.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task);
        }
        Ok(())
    }
}
