//! The one place where a configured signal source becomes a running one.

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::simulator::{SimConfig, Simulator};
use super::{ReplaySource, ScenarioError, SignalSource, load_scenario};

/// A signal source as written in configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Replay a recorded scenario file (`backstop.scenario/v1`).
    Scenario {
        /// Path of the scenario file.
        path: PathBuf,
    },
    /// The built-in canary simulator.
    Simulator(SimConfig),
}

/// What [`build_source`] produced: the source, and the simulator handle when
/// there is one (the simulated executor drives it).
pub struct BuiltSource {
    /// The read-only source the judge observes.
    pub source: Arc<dyn SignalSource>,
    /// Present for the simulator: what its executor acts on.
    pub simulator: Option<Arc<Simulator>>,
}

/// Build a signal source from its configuration.
pub fn build_source(cfg: &SourceConfig) -> Result<BuiltSource, ScenarioError> {
    match cfg {
        SourceConfig::Scenario { path } => {
            let scenario = load_scenario(path)?;
            Ok(BuiltSource { source: Arc::new(ReplaySource::new(Arc::new(scenario.data))), simulator: None })
        }
        SourceConfig::Simulator(sim) => {
            let s = Arc::new(Simulator::new(sim.clone()));
            Ok(BuiltSource { source: s.clone(), simulator: Some(s) })
        }
    }
}
