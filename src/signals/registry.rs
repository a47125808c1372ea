//! The one place where a configured signal source becomes a running one.

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::simulator::{SimConfig, Simulator};
use super::{ReplaySource, SignalSource, load_scenario};
use crate::field::FieldError;

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
    /// PromQL queries against a Prometheus server.
    Prometheus(super::PrometheusConfig),
    /// PromQL or MetricsQL queries against VictoriaMetrics' Prometheus-compatible
    /// API (single-node `url = "http://vm:8428"`, cluster `…/select/0/prometheus`).
    #[serde(rename = "victoriametrics")]
    VictoriaMetrics(super::PrometheusConfig),
    /// InfluxQL queries against InfluxDB 1.x (`GET /query`).
    #[serde(rename = "influxdb")]
    InfluxDb(super::InfluxConfig),
    /// Datadog metric queries (`GET /api/v1/query`).
    Datadog(super::DatadogConfig),
    /// NRQL queries through New Relic's NerdGraph.
    #[serde(rename = "newrelic")]
    NewRelic(super::NewRelicConfig),
    /// Metric-math or Metrics Insights expressions through Amazon CloudWatch's `GetMetricData`.
    #[serde(rename = "cloudwatch")]
    CloudWatch(super::CloudWatchConfig),
    /// Target expressions through graphite-web's render API.
    Graphite(super::GraphiteConfig),
}

impl SourceConfig {
    /// The analysis window in seconds where the configuration gives it:
    /// every source but a scenario file, whose window is in the file (known
    /// once the release is built).
    pub fn window_s(&self) -> Option<u64> {
        match self {
            SourceConfig::Scenario { .. } => None,
            SourceConfig::Simulator(sim) => Some(sim.duration_s),
            SourceConfig::Prometheus(p) | SourceConfig::VictoriaMetrics(p) => Some(p.duration_s),
            SourceConfig::InfluxDb(i) => Some(i.duration_s),
            SourceConfig::Datadog(d) => Some(d.duration_s),
            SourceConfig::NewRelic(n) => Some(n.duration_s),
            SourceConfig::CloudWatch(c) => Some(c.duration_s),
            SourceConfig::Graphite(g) => Some(g.duration_s),
        }
    }

    /// Check the source's fields against their bounds; `Err(FieldError::of(field, expected))`.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            SourceConfig::Scenario { path } if path.as_os_str().is_empty() => {
                Err(FieldError::of("path".into(), "the path of a scenario file".into()))
            }
            SourceConfig::Scenario { .. } => Ok(()),
            SourceConfig::Simulator(sim) => sim.validate(),
            SourceConfig::Prometheus(p) | SourceConfig::VictoriaMetrics(p) => p.validate(),
            SourceConfig::InfluxDb(i) => i.validate(),
            SourceConfig::Datadog(d) => d.validate(),
            SourceConfig::NewRelic(n) => n.validate(),
            SourceConfig::CloudWatch(c) => c.validate(),
            SourceConfig::Graphite(g) => g.validate(),
        }
    }

    /// The settings of a source read through the Prometheus query API.
    pub fn prometheus_api(&self) -> Option<&super::PrometheusConfig> {
        match self {
            SourceConfig::Prometheus(p) | SourceConfig::VictoriaMetrics(p) => Some(p),
            SourceConfig::Scenario { .. }
            | SourceConfig::Simulator(_)
            | SourceConfig::InfluxDb(_)
            | SourceConfig::Datadog(_)
            | SourceConfig::NewRelic(_)
            | SourceConfig::CloudWatch(_)
            | SourceConfig::Graphite(_) => None,
        }
    }

    /// Whether it reads a live backend, so a past window (`advise --from`) can be judged.
    pub fn reads_the_past(&self) -> bool {
        match self {
            SourceConfig::Prometheus(_)
            | SourceConfig::VictoriaMetrics(_)
            | SourceConfig::InfluxDb(_)
            | SourceConfig::Datadog(_)
            | SourceConfig::NewRelic(_)
            | SourceConfig::CloudWatch(_)
            | SourceConfig::Graphite(_) => true,
            SourceConfig::Scenario { .. } | SourceConfig::Simulator(_) => false,
        }
    }
}

/// What [`build_source`] produced: the source, and the simulator handle when
/// there is one (the simulated executor drives it).
pub struct BuiltSource {
    /// The read-only source the judge observes.
    pub source: Arc<dyn SignalSource>,
    /// Present for the simulator: what its executor acts on.
    pub simulator: Option<Arc<Simulator>>,
    /// The metrics it reports, for checks before the first tick (guard directions).
    pub metrics: Vec<super::MetricSpec>,
    /// Seconds between samples.
    pub step_s: u32,
    /// Analysis window, seconds.
    pub duration_s: u64,
    /// When the fault begins, if the source knows (simulator config, a scenario's truth):
    /// shown in reports for humans, never given to a judge.
    pub known_onset_s: Option<u64>,
}

/// A signal source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The scenario file is unreadable or breaks the format.
    #[error(transparent)]
    Scenario(#[from] super::ScenarioError),
    /// The backend's client could not be set up (a credential variable unset, say).
    #[error(transparent)]
    Signal(#[from] super::SignalError),
}

/// Build a signal source from its configuration, its windows at `time0`
/// (the wall clock of whoever runs it: live sources read the window from
/// there on); `clock` dates what needs the time of a request (CloudWatch's
/// signatures).
pub fn build_source(
    cfg: &SourceConfig,
    time0: super::TimeZero,
    clock: &Arc<dyn crate::clock::Clock>,
) -> Result<BuiltSource, SourceError> {
    match cfg {
        SourceConfig::Scenario { path } => {
            let scenario = load_scenario(path)?;
            let (step_s, duration_s) = (scenario.data.step_s, scenario.data.duration_s);
            let known_onset_s = scenario.truth.as_ref().filter(|t| t.bad).and_then(|t| t.onset_s);
            Ok(BuiltSource {
                metrics: scenario.data.metrics.iter().map(|m| m.spec.clone()).collect(),
                source: Arc::new(ReplaySource::new(Arc::new(scenario.data))),
                simulator: None,
                step_s,
                duration_s,
                known_onset_s,
            })
        }
        SourceConfig::Simulator(sim) => {
            let s = Arc::new(Simulator::new(sim.clone()));
            Ok(BuiltSource {
                metrics: super::simulator::metric_specs_of(sim),
                source: s.clone(),
                simulator: Some(s),
                step_s: sim.step_s,
                duration_s: sim.duration_s,
                known_onset_s: sim.fault.as_ref().map(|f| f.onset_s),
            })
        }
        SourceConfig::Prometheus(p) => prometheus_api(p, super::prometheus::PromApi::Prometheus, time0),
        SourceConfig::VictoriaMetrics(p) => prometheus_api(p, super::prometheus::PromApi::VictoriaMetrics, time0),
        SourceConfig::InfluxDb(i) => Ok(metric_api(i.source(time0)?, i.shared())),
        SourceConfig::Datadog(d) => Ok(metric_api(d.source(time0)?, d.shared())),
        SourceConfig::NewRelic(n) => Ok(metric_api(n.source(time0)?, n.shared())),
        SourceConfig::CloudWatch(c) => Ok(metric_api(c.source(time0, clock.clone())?, c.shared())),
        SourceConfig::Graphite(g) => Ok(metric_api(g.source(time0)?, g.shared())),
    }
}

/// A source read through one of the metric APIs of [`super::metric_api`].
fn metric_api(source: Box<dyn SignalSource>, shared: super::metric_api::Shared) -> BuiltSource {
    BuiltSource {
        metrics: specs(&shared.metrics),
        source: Arc::from(source),
        simulator: None,
        step_s: shared.step_s,
        duration_s: shared.duration_s,
        known_onset_s: None,
    }
}

/// A source read through the Prometheus query API of `api`.
fn prometheus_api(
    p: &super::PrometheusConfig,
    api: super::prometheus::PromApi,
    time0: super::TimeZero,
) -> Result<BuiltSource, SourceError> {
    Ok(BuiltSource {
        metrics: specs(&p.metrics),
        source: Arc::new(super::PrometheusSource::starting_at(p.clone(), time0)?.speaking(api)),
        simulator: None,
        step_s: p.step_s,
        duration_s: p.duration_s,
        known_onset_s: None,
    })
}

/// What configured query metrics report.
fn specs(metrics: &[super::PromMetric]) -> Vec<super::MetricSpec> {
    let spec = |m: &super::PromMetric| super::MetricSpec {
        name: m.name.clone(),
        unit: m.unit.clone(),
        bad_direction: m.bad_direction,
    };
    metrics.iter().map(spec).collect()
}
