//! Signals: typed, timestamped samples for the baseline and the canary, plus
//! logs and events, behind one [`SignalSource`] trait.
//!
//! Sample `i` of a series summarises the interval `[i*step_s, (i+1)*step_s)`;
//! a source only ever returns samples whose interval ended at or before the
//! time it was asked about, so no judge can see the future.

mod aws;
mod cloudwatch;
mod datadog;
mod graphite;
mod influx;
mod kubernetes;
pub mod metric_api;
mod ml;
mod newrelic;
mod prom_ml;
mod prometheus;
mod registry;
mod replay;
mod scenario;
pub mod simulator;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use cloudwatch::CloudWatchConfig;
pub use datadog::DatadogConfig;
pub use graphite::GraphiteConfig;
pub use influx::InfluxConfig;
pub use kubernetes::{PodSignalsConfig, WithPodSignals};
pub use metric_api::ApiSource;
pub use ml::{
    Counts, DistributionSeries, DistributionSpec, DriftKind, LabelSeries, LabelSpec, ModelSignals, Outcomes, Task,
};
pub use newrelic::NewRelicConfig;
pub use prom_ml::{PromDistribution, PromLabels};
pub(crate) use prometheus::Credential;
pub use prometheus::{
    BaselineWindow, PromAuth, PromBaseline, PromMetric, PrometheusConfig, PrometheusSource, UnsetVariable, WindowKind,
};
pub use registry::{BuiltSource, SourceConfig, SourceError, build_source};
pub use replay::ReplaySource;
pub use scenario::{
    SCENARIO_FORMAT, Scenario, ScenarioData, ScenarioError, Truth, load_scenario, load_scenarios, parse_scenario,
};

/// Which version a sample, log line or event belongs to.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Side {
    /// The stable version serving most traffic.
    Baseline,
    /// The new version under judgement.
    Canary,
}

/// Where a live source's windows lie on the wall clock (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeZero {
    /// When the release started: an earlier-window baseline (the hour, the
    /// day before) ends here, whenever the canary is read.
    pub started_s: f64,
    /// Release time 0 of the canary's samples (and of a concurrent
    /// baseline's): the start, or later for a release read again from now
    /// after it went unobserved too long (see `run::resume`).
    pub canary_s: f64,
}

impl TimeZero {
    /// A release read from its start.
    pub fn at(started_s: f64) -> Self {
        Self { started_s, canary_s: started_s }
    }

    /// Where a window starting `back_s` before the release begins: a
    /// concurrent one (0) at the canary's time 0, an earlier one before the start.
    pub fn origin(&self, back_s: u64) -> f64 {
        if back_s == 0 { self.canary_s } else { self.started_s - back_s as f64 }
    }
}

/// What the baseline series is (`baseline_kind` in scenario files). It
/// decides how a breach on both sides reads: with a concurrent baseline it is
/// an incident both versions share; with an earlier window it is the canary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BaselineKind {
    /// The stable version serving at the same time (a canary).
    #[default]
    Concurrent,
    /// The same service in the window just before the release (blue/green, rolling update).
    Preceding,
    /// The same window one period earlier (yesterday, last week).
    Seasonal,
}

/// Which change of a metric would hurt users.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum BadDirection {
    /// Higher is worse (errors, latency, memory).
    Up,
    /// Lower is worse (throughput, success rate).
    Down,
    /// Any change is suspect.
    Both,
}

/// A metric's unit. Free text in scenario files and config (FORMAT.md), so
/// any string is accepted and kept; the known ones are variants because
/// `ratio` changes the statistics (a binomial noise floor that depends on
/// traffic) and the others only how numbers read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Unit {
    /// A fraction of requests, 0..1 (error ratio): shown as percent.
    Ratio,
    /// `ms`.
    Milliseconds,
    /// `s`.
    Seconds,
    /// `percent`, 0..100.
    Percent,
    /// `bytes`.
    Bytes,
    /// `MB`.
    Megabytes,
    /// `rps`.
    RequestsPerSecond,
    /// Anything else, as written.
    Other(String),
}

impl Unit {
    const KNOWN: [(&'static str, Unit); 7] = [
        ("ratio", Unit::Ratio),
        ("ms", Unit::Milliseconds),
        ("s", Unit::Seconds),
        ("percent", Unit::Percent),
        ("bytes", Unit::Bytes),
        ("MB", Unit::Megabytes),
        ("rps", Unit::RequestsPerSecond),
    ];

    /// As written in files.
    pub fn as_str(&self) -> &str {
        match self {
            Unit::Other(s) => s,
            known => Self::KNOWN.iter().find(|(_, u)| u == known).map_or("", |(s, _)| s),
        }
    }

    /// The unit for text a model or a human reads as trusted: a known unit,
    /// or an unknown one only when it is a short plain token (`req/s`,
    /// `score`); anything longer or stranger reads as `units`, so text from a
    /// scenario file cannot speak in the trusted part of a prompt.
    pub fn label(&self) -> &str {
        let plain = |s: &str| {
            (1..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/%_.-".contains(&b))
        };
        match self {
            Unit::Other(s) if !plain(s) => "units",
            u => u.as_str(),
        }
    }

    /// `v` in this unit, for explanations and reports.
    pub fn show(&self, v: f64) -> String {
        match self {
            Unit::Ratio => format!("{:.2}%", v * 100.0),
            u => format!("{v:.2} {}", u.label()),
        }
    }
}

impl From<String> for Unit {
    fn from(s: String) -> Self {
        Self::KNOWN.iter().find(|(k, _)| *k == s).map_or(Unit::Other(s), |(_, u)| u.clone())
    }
}

/// No unit given: an empty `Other`, written back as `""`.
impl Default for Unit {
    fn default() -> Self {
        Unit::Other(String::new())
    }
}

impl From<&str> for Unit {
    fn from(s: &str) -> Self {
        Unit::from(s.to_string())
    }
}

impl From<Unit> for String {
    fn from(u: Unit) -> Self {
        u.as_str().to_string()
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl JsonSchema for Unit {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Unit".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// What a metric is and which way it hurts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricSpec {
    /// Metric name, unique within a release.
    pub name: String,
    pub unit: Unit,
    /// Which change would hurt users.
    pub bad_direction: BadDirection,
}

impl MetricSpec {
    /// Ratio metrics are fractions of requests, so their per-step noise has a
    /// binomial floor that depends on traffic.
    pub fn is_request_ratio(&self) -> bool {
        self.unit == Unit::Ratio
    }
}

/// One metric's samples for both sides, aligned on the release clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSeries {
    /// What the metric is.
    pub spec: MetricSpec,
    /// Baseline samples; `None` is a missing sample (scrape gap).
    pub baseline: Vec<Option<f64>>,
    /// Canary samples; `None` is a missing sample (scrape gap).
    pub canary: Vec<Option<f64>>,
}

/// Requests served per step by each side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Baseline requests per step.
    pub baseline: Vec<u64>,
    /// Canary requests per step.
    pub canary: Vec<u64>,
}

/// The longest log line kept, in bytes; longer ones are cut (on a character
/// boundary). A hostile or runaway logger cannot blow up memory or reports.
pub const MAX_LINE_BYTES: usize = 4096;

/// Log lines kept per release; past it new lines are counted as dropped, not kept.
pub const MAX_LINES: usize = 100_000;

/// `text` up to [`MAX_LINE_BYTES`], cut on a character boundary.
pub fn cut(text: &str) -> &str {
    if text.len() <= MAX_LINE_BYTES {
        return text;
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What a platform event says happened: an open set with named members
/// (what backstop itself writes or acts on) and `Other` for anything a
/// platform reports, kept exactly as it spelled it (a Kubernetes `Pulled`
/// stays `Pulled` in evidence). Named members are read in their one spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, strum::EnumString, strum::IntoStaticStr)]
pub enum EventKind {
    /// The release itself was deployed (never evidence of harm).
    #[strum(serialize = "deploy")]
    Deploy,
    /// The release was rolled back.
    #[strum(serialize = "rollback")]
    Rollback,
    /// A container restarted.
    #[strum(serialize = "restart")]
    Restart,
    /// A container was OOM-killed.
    #[strum(serialize = "oom")]
    Oom,
    /// A container is in CrashLoopBackOff.
    #[strum(serialize = "crashloop")]
    CrashLoop,
    /// A model release's input schema changed (its inputs are not what the running version expects).
    #[strum(serialize = "schema_change")]
    SchemaChange,
    /// Anything else a platform reports, as it spelled it.
    #[strum(default)]
    Other(String),
}

/// Words (any case) platforms use for a release's own lifecycle: the
/// release causes these itself, so they are never evidence of harm.
const LIFECYCLE_WORDS: [&str; 10] =
    ["deploy", "deployed", "deployment", "rollout", "scaled", "scale", "scaling", "created", "started", "pulled"];

impl EventKind {
    /// The kind as written.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Other(s) => s,
            known => known.into(),
        }
    }

    /// Whether a release itself causes such events (its own deployment), so they are never evidence of harm.
    pub fn is_lifecycle(&self) -> bool {
        let word = self.as_str();
        LIFECYCLE_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
    }
}

impl EventKind {
    /// The kind a platform spelled `text` (a named member when it is one).
    pub fn named(text: &str) -> Self {
        text.parse().unwrap_or_else(|_| EventKind::Other(text.to_string()))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(text.parse().unwrap_or(EventKind::Other(text)))
    }
}

/// A log line from one side. Its text is untrusted data, never an instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Seconds since the canary started.
    pub t_s: u64,
    /// Which side logged it.
    pub target: Side,
    /// Level as the service wrote it (`error`, `warn`, ...).
    pub level: String,
    /// The untrusted message text.
    pub message: String,
}

/// A platform event (deploy, restart, OOM kill...). Untrusted data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the canary started.
    pub t_s: u64,
    /// Which side it concerns.
    pub target: Side,
    /// What happened (`deploy`, `restart`, `oom`, ...).
    pub kind: EventKind,
    /// The untrusted message text.
    pub message: String,
}

/// Everything a source could see up to `now_s`: the input of one analysis tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Service the release belongs to.
    pub service: String,
    /// Seconds between samples.
    pub step_s: u32,
    /// Length of the analysis window in seconds.
    pub duration_s: u64,
    /// Release clock time of this observation, seconds since canary start.
    pub now_s: u64,
    /// Requests per step, when the source knows them.
    pub traffic: Option<Traffic>,
    /// What the baseline series is.
    pub baseline_kind: BaselineKind,
    /// Metric series, each holding only samples ended at or before `now_s`.
    pub metrics: Vec<MetricSeries>,
    /// Log lines at or before `now_s`.
    pub logs: Vec<LogLine>,
    /// Events at or before `now_s`.
    pub events: Vec<Event>,
    /// Model-release signals (histograms, delayed labels), when the release serves a model.
    #[serde(default, skip_serializing_if = "ModelSignals::is_empty")]
    pub ml: ModelSignals,
}

impl Observation {
    /// Number of whole steps that have ended by `now_s`.
    pub fn completed_steps(&self) -> usize {
        (self.now_s / u64::from(self.step_s.max(1))) as usize
    }

    /// True once the whole analysis window has been observed.
    pub fn window_complete(&self) -> bool {
        self.now_s >= self.duration_s
    }
}

/// A signal backend failed. The judge treats this as missing data: a
/// failing backend never causes a rollback by itself.
#[derive(Debug, Error)]
pub enum SignalError {
    /// The backend could not be reached or answered with an error; the tick holds.
    #[error("signal source `{source_name}` is unavailable: {reason}")]
    Unavailable {
        /// Name of the source.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The backend refused a configured query as such (a PromQL syntax
    /// error, an unknown function): fixed in configuration, not by waiting.
    #[error("signal source `{source_name}` refuses the query of `{metric}`: {reason} (query: {query})")]
    BadQuery {
        /// Name of the source.
        source_name: String,
        /// The metric (or series) the query belongs to.
        metric: String,
        /// The query as sent, for one side.
        query: String,
        /// The backend's own error text.
        reason: String,
    },
    /// The source cannot be set up from its configuration (a credential
    /// variable unset, a setting out of bounds): fixed in configuration, not by waiting.
    #[error("signal source `{source_name}` cannot start")]
    Setup {
        /// Name of the source.
        source_name: String,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A read-only source of signals for one release.
#[async_trait]
pub trait SignalSource: Send + Sync {
    /// A short name for logs and the ledger (`scenario:checkout-017`, `simulator`).
    fn name(&self) -> String;

    /// Everything observable at release time `now_s`; never a sample whose
    /// interval ends after `now_s`.
    async fn observe(&self, now_s: u64) -> Result<Observation, SignalError>;

    /// Reach the source without judging anything (`config check`): what was read.
    async fn probe(&self) -> Result<String, SignalError> {
        Ok(format!("{}: nothing to reach", self.name()))
    }

    /// Run every configured query once, before the first tick, so a query
    /// the backend refuses ends the run at once ([`SignalError::BadQuery`])
    /// instead of costing the whole window. A backend that cannot be reached
    /// is not an error here: the ticks hold and count it.
    async fn check_queries(&self) -> Result<(), SignalError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{EventKind, TimeZero};

    #[test]
    fn an_earlier_window_stays_before_the_start_however_late_the_canary_is_read() {
        let read_again = TimeZero { started_s: 1_000.0, canary_s: 8_200.0 };
        assert_eq!(read_again.origin(0), 8_200.0, "the canary and a concurrent baseline: its time 0");
        assert_eq!(read_again.origin(3_600), 1_000.0 - 3_600.0, "the hour before the release");
        assert_eq!(TimeZero::at(1_000.0).origin(0), 1_000.0);
    }

    #[test]
    fn event_kinds_are_written_as_the_platform_spelled_them() {
        for word in ["deploy", "Pulled", "Deploy", "scaled", "BackOff", "schema_change", "crashloop"] {
            let kind = EventKind::named(word);
            assert_eq!(kind.as_str(), word);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), kind);
        }
        assert_eq!(EventKind::named("deploy"), EventKind::Deploy);
        assert_eq!(EventKind::named("Deploy"), EventKind::Other("Deploy".into()));
    }

    #[test]
    fn a_releases_own_lifecycle_is_never_harm_in_any_case() {
        for word in ["deploy", "Pulled", "Created", "ROLLOUT", "scaling"] {
            assert!(EventKind::named(word).is_lifecycle(), "{word}");
        }
        for word in ["restart", "oom", "BackOff", "rollback", "deploys"] {
            assert!(!EventKind::named(word).is_lifecycle(), "{word}");
        }
    }
}
