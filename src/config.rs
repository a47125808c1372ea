//! `backstop.toml` plus `BACKSTOP_*` environment overrides (double underscore
//! between levels: `BACKSTOP_LEDGER__URL`), validated at start.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::signals::SourceConfig;

/// Configuration is invalid. Names the source, the field and what was expected.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file or an environment override could not be read or has a wrong field.
    #[error("configuration ({origin}): {message}")]
    Load {
        /// File path or `environment`.
        origin: String,
        /// The loader's message, naming the key.
        message: String,
    },
    /// A field is out of bounds or inconsistent.
    #[error("configuration ({origin}): field `{field}`: expected {expected}")]
    Field {
        /// File path or `environment`.
        origin: String,
        /// Dotted field path.
        field: String,
        /// What a valid value looks like.
        expected: String,
    },
}

/// Where the audit ledger lives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSettings {
    /// `sqlite://PATH?mode=rwc` or `postgres://...`; default: `ledger.db` in the
    /// user's data directory (`~/.local/share/backstop/`), else `./backstop.db`.
    pub url: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `text` or `json` lines on stderr.
    pub format: LogFormat,
    /// Default level filter (`RUST_LOG` overrides).
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "warn".into() }
    }
}

/// This process as one of several agents sharing a ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// Unique id among agents sharing the ledger (default: host, pid and a random suffix).
    pub instance_id: Option<String>,
    /// Seconds a target's lease lasts without renewal; after a holder dies,
    /// another agent takes over within this time. Ticks renew it, so keep it
    /// longer than the time between ticks.
    pub lease_s: f64,
    /// Targets releases registered at runtime (`POST /v1/releases`) may use,
    /// with the executor that acts on each: a registration names a target,
    /// never an executor, so an API caller cannot choose what runs.
    pub targets: Vec<AgentTarget>,
    /// API tokens file (TOML `[[tokens]]`, see README); without one the agent
    /// listens on loopback only and every local caller is `local`.
    pub tokens_file: Option<PathBuf>,
}

/// A target declared for runtime registrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTarget {
    /// Target name, as releases give it.
    pub target: String,
    /// What acts on it; without one, decisions are recommendations.
    #[serde(default)]
    pub executor: Option<crate::executor::ExecutorConfig>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self { instance_id: None, lease_s: 15.0, targets: vec![], tokens_file: None }
    }
}

/// One release to watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    /// Release name, unique in this file.
    pub name: String,
    /// Service (selects per-service policy).
    pub service: String,
    /// The one target actions may touch.
    pub target: String,
    /// Environment label.
    #[serde(default = "production")]
    pub environment: String,
    /// Revision under judgement.
    pub candidate_revision: String,
    /// Revision to roll back to.
    pub last_known_good: Option<String>,
    /// Contains an irreversible change (never rolled back automatically).
    #[serde(default)]
    pub irreversible: bool,
    /// Where its signals come from.
    pub source: SourceConfig,
    /// What acts on the target; without one, decisions are recommendations a human carries out.
    #[serde(default)]
    pub executor: Option<crate::executor::ExecutorConfig>,
    /// Pod status (restarts, OOM kills, CrashLoopBackOff) of both sides, as events.
    #[serde(default)]
    pub pods: Option<crate::signals::PodSignalsConfig>,
    /// Log lines of both sides (Kubernetes pod logs or Loki), judged as log templates.
    #[serde(default)]
    pub logs: Option<crate::logs::LogSourceConfig>,
    /// Seconds of release time between analysis ticks (default: the source's sample step).
    #[serde(default)]
    pub tick_s: Option<u64>,
}

fn production() -> String {
    "production".into()
}

/// All of `backstop.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Audit ledger.
    pub ledger: LedgerSettings,
    /// Policy file; the embedded `policies/default.toml` when absent.
    pub policy: Option<PathBuf>,
    /// Logging.
    pub telemetry: TelemetrySettings,
    /// Releases to watch.
    pub releases: Vec<ReleaseConfig>,
    /// The model assessor; without it the judge decides alone.
    pub model: Option<crate::model::ModelConfig>,
    /// Agent identity and leases.
    pub agent: AgentSettings,
    /// The Slack app (`backstop agent` only).
    pub slack: Option<crate::slack::SlackSettings>,
}

impl Settings {
    /// Load `path` (required when given; else `./backstop.toml` if present),
    /// then apply `BACKSTOP_*` overrides, then validate.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, settings_from_env())
    }

    /// [`Settings::load`] with the `BACKSTOP_*` overrides given, not read
    /// from the process (the parser's property tests feed it arbitrary ones).
    pub fn load_with_env(path: Option<&Path>, env: config::Map<String, String>) -> Result<Self, ConfigError> {
        let env: config::Map<String, String> = env.into_iter().filter(|(k, _)| is_override(k)).collect();
        let default_path = PathBuf::from("backstop.toml");
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (default_path, false),
        };
        let origin = if required || file.exists() { file.display().to_string() } else { "environment".into() };
        let built = config::Config::builder()
            .add_source(config::File::from(file.as_path()).format(config::FileFormat::Toml).required(required))
            .add_source(
                config::Environment::with_prefix("BACKSTOP").prefix_separator("_").separator("__").source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::Load { origin: origin.clone(), message: e.to_string() })?;
        let settings: Settings = built
            .try_deserialize()
            .map_err(|e| ConfigError::Load { origin: origin.clone(), message: e.to_string() })?;
        settings.validate().map_err(|(field, expected)| ConfigError::Field { origin, field, expected })?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        let mut resources: std::collections::HashMap<String, (&str, &str)> = std::collections::HashMap::new();
        for (i, r) in self.releases.iter().enumerate() {
            if let Some(res) = r.executor.as_ref().and_then(|e| e.resource()) {
                match resources.get(&res) {
                    Some((name, target)) if *target != r.target => {
                        return Err((
                            format!("releases[{i}].executor"),
                            format!(
                                "an executor for a resource no other target acts on: {res} is also release `{name}`'s, under target `{target}`"
                            ),
                        ));
                    }
                    _ => {
                        resources.insert(res, (r.name.as_str(), r.target.as_str()));
                    }
                }
            }
            if r.name.trim().is_empty() || !names.insert(r.name.as_str()) {
                return Err((format!("releases[{i}].name"), "a non-empty name unique in the file".into()));
            }
            if r.target.trim().is_empty() {
                return Err((format!("releases[{i}].target"), "a non-empty target".into()));
            }
            if matches!(r.executor, Some(crate::executor::ExecutorConfig::Simulator))
                && !matches!(r.source, SourceConfig::Simulator(_))
            {
                return Err((format!("releases[{i}].executor"), "`simulator` only with a `simulator` source".into()));
            }
            if let SourceConfig::Prometheus(p) = &r.source {
                p.validate().map_err(|(field, expected)| (format!("releases[{i}].source.{field}"), expected))?;
            }
            if let Some(l) = &r.logs {
                l.validate(r.pods.is_some())
                    .map_err(|(field, expected)| (format!("releases[{i}].logs.{field}"), expected))?;
            }
            if r.tick_s == Some(0) {
                return Err((format!("releases[{i}].tick_s"), "seconds > 0".into()));
            }
            if let Some(e) = &r.executor {
                e.validate().map_err(|(field, expected)| (format!("releases[{i}].executor.{field}"), expected))?;
            }
            // An MLflow alias moves between versions of one registered model: numbers, checked
            // at load rather than when a rollback is due.
            if matches!(r.executor, Some(crate::executor::ExecutorConfig::Mlflow(_))) {
                for (field, v) in [
                    ("candidate_revision", Some(&r.candidate_revision)),
                    ("last_known_good", r.last_known_good.as_ref()),
                ] {
                    if v.is_some_and(|v| !crate::executor::is_mlflow_version(v)) {
                        return Err((format!("releases[{i}].{field}"), "a version number of the registered model (the `mlflow` executor moves an alias between versions)".into()));
                    }
                }
            }
        }
        if !(self.agent.lease_s.is_finite() && (0.2..=3600.0).contains(&self.agent.lease_s)) {
            return Err(("agent.lease_s".into(), "seconds between 0.2 and 3600".into()));
        }
        if self.agent.instance_id.as_ref().is_some_and(|i| i.trim().is_empty() || i.contains(char::is_whitespace)) {
            return Err(("agent.instance_id".into(), "a non-empty id without spaces".into()));
        }
        if let Some(m) = &self.model {
            m.validate()?;
        }
        if let Some(s) = &self.slack {
            s.validate().map_err(|(field, expected)| (format!("slack.{field}"), expected))?;
        }
        if let Some(url) = &self.ledger.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(("ledger.url".into(), format!("a sqlite: or postgres:// URL, found `{url}`")));
        }
        Ok(())
    }

    /// The model assessor, when configured (reads the API key variable).
    pub fn assessor(&self) -> Result<Option<std::sync::Arc<crate::model::Assessor>>, crate::model::ModelError> {
        self.model.clone().map(|m| crate::model::Assessor::new(m).map(std::sync::Arc::new)).transpose()
    }

    /// Ledger URL: configured, else the default location.
    pub fn ledger_url(&self) -> String {
        self.ledger.url.clone().unwrap_or_else(|| crate::ledger::sqlite_url(&default_ledger_path()))
    }

    /// This process as an agent: its instance id, lease length and the system clock.
    pub fn agent_context(&self) -> crate::orchestrator::AgentContext {
        crate::orchestrator::AgentContext {
            instance: self
                .agent
                .instance_id
                .clone()
                .unwrap_or_else(crate::orchestrator::AgentContext::default_instance),
            lease_ms: (self.agent.lease_s * 1000.0) as i64,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        }
    }

    /// Targets declared in configuration.
    pub fn declared_targets(&self) -> Vec<String> {
        self.releases.iter().map(|r| r.target.clone()).collect()
    }
}

/// Name of the variable that points at the configuration file itself; it is
/// not a setting, so it is kept out of the overrides.
pub const CONFIG_PATH_VAR: &str = "BACKSTOP_CONFIG";

/// The test hook that pauses an action at a named step (see `orchestrator::act`); not a setting.
pub const PAUSE_VAR: &str = "BACKSTOP_TEST_PAUSE_AT";

/// Top-level sections a `BACKSTOP_*` variable may override.
const SECTIONS: &[&str] = &["LEDGER", "POLICY", "TELEMETRY", "RELEASES", "MODEL", "AGENT"];

fn is_override(key: &str) -> bool {
    key.strip_prefix("BACKSTOP_")
        .map(|rest| rest.split("__").next().unwrap_or(rest))
        .is_some_and(|section| SECTIONS.contains(&section))
}

fn settings_from_env() -> config::Map<String, String> {
    std::env::vars().filter(|(k, _)| is_override(k)).collect()
}

/// `BACKSTOP_*` variables that name no setting (an unrelated `BACKSTOP_TOKEN`,
/// say): ignored, and worth a warning rather than a failure.
pub fn ignored_env_names() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("BACKSTOP_") && k != CONFIG_PATH_VAR && k != PAUSE_VAR && !is_override(k))
        .collect()
}

/// `ledger.db` under the user's data directory, else `./backstop.db`.
pub fn default_ledger_path() -> PathBuf {
    dirs::data_dir().map(|d| d.join("backstop").join("ledger.db")).unwrap_or_else(|| PathBuf::from("backstop.db"))
}

/// JSON Schema of `backstop.toml`.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Settings)
}
