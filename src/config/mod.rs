//! `backstop.toml` plus `BACKSTOP_*` environment overrides (double underscore
//! between levels: `BACKSTOP_LEDGER__URL`), validated at start.

mod slack;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use slack::{SlackMode, SlackSettings};

use crate::field::FieldError;
use crate::release::{AgentTarget, ReleaseConfig};

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
    /// Days after a release ends before agents compact its tick records into
    /// one summary record (its start, end, actions, people's records and
    /// last tick stay whole; `audit verify` still checks the chain). Unset:
    /// every record is kept. `backstop audit compact` does the same by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_after_days: Option<f64>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `text` or `json` lines on stderr.
    pub format: LogFormat,
    /// Level filter (`RUST_LOG` overrides). Unset: `info` for the services
    /// (`agent`, `serve`: decisions, actions and approval requests are
    /// logged), `warn` for commands that print their own results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
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
        Self { format: LogFormat::Text, level: None }
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
    /// Releases this agent holds (judges and acts on) at once, when several
    /// agents share a ledger; the rest it keeps in standby and takes over
    /// when their holder stops. Default: no limit (agents still spread the
    /// releases evenly among themselves).
    pub capacity: Option<u32>,
    /// Targets releases registered at runtime (`POST /v1/releases`) may use,
    /// with the executor that acts on each: a registration names a target,
    /// never an executor, so an API caller cannot choose what runs.
    pub targets: Vec<AgentTarget>,
    /// API tokens file (TOML `[[tokens]]`, see docs/agent-and-api.md); without one the agent
    /// listens on loopback only and every local caller is `local`.
    pub tokens_file: Option<PathBuf>,
    /// What `local` may do without a tokens file. Read only by default: any
    /// local program (or a browser, were the guard ever bypassed) is `local`,
    /// so acting as it is a choice made here.
    pub local_scopes: Vec<Scope>,
    /// Origins a browser may send state-changing requests from, beyond the
    /// agent's own address (`https://backstop.example.com` behind a proxy).
    pub allowed_origins: Vec<String>,
    /// Variable holding the key (at least 32 characters) that signs dashboard
    /// form tokens and the expiring links Slack messages carry. Give every
    /// replica the same one; without it each agent draws its own at start,
    /// and its links stop opening when it restarts.
    pub signing_key_env: Option<String>,
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read releases, gates, metrics and the dashboard.
    Read,
    /// Register releases (a pipeline).
    Register,
    /// Hold, resume or abort releases.
    Operate,
    /// Answer approval requests (policy still decides who counts as an approver).
    Approve,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            instance_id: None,
            lease_s: 15.0,
            capacity: None,
            targets: vec![],
            tokens_file: None,
            local_scopes: vec![Scope::Read],
            allowed_origins: vec![],
            signing_key_env: None,
        }
    }
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
    /// Releases that cross several targets in waves (members are `releases`).
    pub fleets: Vec<crate::release::FleetConfig>,
    /// The model assessor; without it the judge decides alone.
    pub model: Option<crate::assessor::ModelConfig>,
    /// Agent identity and leases.
    pub agent: AgentSettings,
    /// The Slack app (`backstop agent` only).
    pub slack: Option<SlackSettings>,
    /// The folder of the file these settings were read from: relative paths
    /// in it (`policy`, `agent.tokens_file`, a scenario, a kubeconfig)
    /// resolve against it, not the working directory. Not a setting.
    #[serde(skip)]
    #[schemars(skip)]
    pub base_dir: Option<PathBuf>,
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
        if file.exists() {
            check_text(&file).map_err(|e| e.into_config(&origin))?;
        }
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
        settings.validate().map_err(|e| ConfigError::Field { origin, field: e.field, expected: e.expected })?;
        let base_dir = file.exists().then(|| file.parent().map(Path::to_path_buf)).flatten();
        Ok(Settings { base_dir, ..settings })
    }

    /// `path` from this file: a relative one joined to the file's folder
    /// ([`Settings::base_dir`]), an absolute one as it is.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The configured policy file, resolved ([`Settings::resolve`]).
    pub fn policy_file(&self) -> Option<PathBuf> {
        self.policy.as_deref().map(|p| self.resolve(p))
    }

    /// The configured tokens file, resolved ([`Settings::resolve`]).
    pub fn tokens_file(&self) -> Option<PathBuf> {
        self.agent.tokens_file.as_deref().map(|p| self.resolve(p))
    }

    fn validate(&self) -> Result<(), FieldError> {
        self.validate_releases()?;
        self.fleet_plans()?;
        for (i, t) in self.agent.targets.iter().enumerate() {
            t.validate().map_err(|e| e.under(&format!("agent.targets[{i}]")))?;
        }
        if !(self.agent.lease_s.is_finite() && (0.2..=3600.0).contains(&self.agent.lease_s)) {
            return Err(FieldError::of("agent.lease_s".into(), "seconds between 0.2 and 3600".into()));
        }
        if self.agent.capacity == Some(0) {
            return Err(FieldError::of(
                "agent.capacity".into(),
                "at least 1 release (leave it out for no limit)".into(),
            ));
        }
        if self.agent.instance_id.as_ref().is_some_and(|i| i.trim().is_empty() || i.contains(char::is_whitespace)) {
            return Err(FieldError::of("agent.instance_id".into(), "a non-empty id without spaces".into()));
        }
        for (i, o) in self.agent.allowed_origins.iter().enumerate() {
            let ok = (o.starts_with("http://") || o.starts_with("https://")) && !o.contains(char::is_whitespace);
            if !ok || o.trim_end_matches('/').matches('/').count() != 2 {
                return Err(FieldError::of(
                    format!("agent.allowed_origins[{i}]"),
                    "an origin such as https://backstop.example.com (scheme, host, port; no path)".into(),
                ));
            }
        }
        if let Some(m) = &self.model {
            m.validate()?;
        }
        if let Some(s) = &self.slack {
            s.validate().map_err(|e| e.under("slack"))?;
        }
        if let Some(d) = self.ledger.compact_after_days
            && !(d.is_finite() && d > 0.0)
        {
            return Err(FieldError::of(
                "ledger.compact_after_days".into(),
                "a number of days above 0 (leave it out to keep every record)".into(),
            ));
        }
        if let Some(url) = &self.ledger.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(FieldError::of("ledger.url".into(), format!("a sqlite: or postgres:// URL, found `{url}`")));
        }
        Ok(())
    }

    fn validate_releases(&self) -> Result<(), FieldError> {
        let mut names = std::collections::HashSet::new();
        let mut resources: std::collections::HashMap<String, (&str, &str)> = std::collections::HashMap::new();
        for (i, r) in self.releases.iter().enumerate() {
            if let Some(res) = r.executor.as_ref().and_then(|e| e.resource()) {
                match resources.get(&res) {
                    Some((name, target)) if *target != r.target => {
                        return Err(FieldError::of(
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
            r.validate().map_err(|e| e.under(&format!("releases[{i}]")))?;
            if !names.insert(r.name.as_str()) {
                return Err(FieldError::of(format!("releases[{i}].name"), "a name unique in the file".into()));
            }
        }
        Ok(())
    }

    /// Every `[[fleets]]` entry resolved against `[[releases]]`: names
    /// unique, and no release in two fleets.
    pub fn fleet_plans(&self) -> Result<Vec<crate::release::FleetPlan>, FieldError> {
        let mut plans: Vec<crate::release::FleetPlan> = Vec::new();
        for (i, f) in self.fleets.iter().enumerate() {
            let plan = f.plan(&self.releases).map_err(|e| e.under(&format!("fleets[{i}]")))?;
            if plans.iter().any(|p| p.name == plan.name) {
                return Err(FieldError::of(format!("fleets[{i}].name"), "a fleet name unique in the file".into()));
            }
            let members = |p: &crate::release::FleetPlan| p.waves.concat();
            if let Some(other) = plans.iter().find(|p| members(p).iter().any(|m| members(&plan).contains(m))) {
                return Err(FieldError::of(
                    format!("fleets[{i}].waves"),
                    format!("targets no other fleet names; fleet `{}` shares one", other.name),
                ));
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    /// The model assessor, when configured (reads the API key variable).
    pub fn assessor(&self) -> Result<Option<std::sync::Arc<crate::assessor::Assessor>>, crate::assessor::ModelError> {
        self.model.clone().map(|m| crate::assessor::Assessor::new(m).map(std::sync::Arc::new)).transpose()
    }

    /// Ledger URL: configured, else the default location.
    pub fn ledger_url(&self) -> String {
        self.ledger.url.clone().unwrap_or_else(|| crate::ledger::sqlite_url(&default_ledger_path()))
    }

    /// Targets declared in configuration.
    pub fn declared_targets(&self) -> Vec<String> {
        self.releases.iter().map(|r| r.target.clone()).collect()
    }
}

/// Why a configuration file's text is refused before it is read as settings.
enum TextError {
    /// Not UTF-8 (read lossily, `x\u{FFFD}` would become a release name).
    Encoding { line: usize, byte: usize },
    /// Not TOML (the loader says where).
    Toml(String),
    /// NaN or an infinity: no setting means either, and both pass range checks.
    NotFinite(String),
    /// The file cannot be read.
    Read(String),
}

impl TextError {
    fn into_config(self, origin: &str) -> ConfigError {
        let origin = origin.to_string();
        match self {
            TextError::Encoding { line, byte } => ConfigError::Load {
                origin,
                message: format!("the file is not UTF-8: invalid byte at line {line}, byte {byte} of the file"),
            },
            TextError::Toml(message) | TextError::Read(message) => ConfigError::Load { origin, message },
            TextError::NotFinite(field) => {
                ConfigError::Field { origin, field, expected: "a finite number (not nan or inf)".into() }
            }
        }
    }
}

/// The file's text: UTF-8, TOML, and no NaN or infinity anywhere.
fn check_text(file: &Path) -> Result<(), TextError> {
    let bytes = std::fs::read(file).map_err(|e| TextError::Read(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let byte = e.valid_up_to();
        TextError::Encoding { line: bytes[..byte].iter().filter(|b| **b == b'\n').count() + 1, byte }
    })?;
    let value: toml::Value = toml::from_str(text).map_err(|e| TextError::Toml(e.to_string()))?;
    match non_finite(&value, String::new()) {
        Some(field) => Err(TextError::NotFinite(field)),
        None => Ok(()),
    }
}

/// The dotted path of the first NaN or infinite number in `v`.
fn non_finite(v: &toml::Value, at: String) -> Option<String> {
    let join = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    match v {
        toml::Value::Float(f) if !f.is_finite() => Some(at),
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| non_finite(v, join(k))),
        toml::Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| non_finite(v, format!("{at}[{i}]"))),
        _ => None,
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
        .filter(|k| k.starts_with("BACKSTOP_") && !CLIENT_VARS.contains(&k.as_str()) && !is_override(k))
        .collect()
}

/// `BACKSTOP_*` variables that are not settings: the config file's path, the
/// agent clients' URL and token (`releases`, `approve`), a test hook.
const CLIENT_VARS: [&str; 4] = [CONFIG_PATH_VAR, PAUSE_VAR, "BACKSTOP_AGENT_URL", "BACKSTOP_AGENT_TOKEN"];

/// `ledger.db` under the user's data directory, else `./backstop.db`.
pub fn default_ledger_path() -> PathBuf {
    crate::ledger::default_path()
}

/// JSON Schema of `backstop.toml`.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &[u8]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backstop.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load_with_env(Some(&path), config::Map::new())
    }

    /// The audit's I2: `strength = nan` ran and rolled back; a name with an
    /// invalid byte loaded as `x\u{FFFD}`.
    #[test]
    fn nan_infinity_and_invalid_utf8_are_refused_with_their_place() {
        let release = "[[releases]]\nname = \"x\"\nservice = \"s\"\ntarget = \"t\"\ncandidate_revision = \"v2\"\n";
        let nan = format!(
            "{release}source = {{ kind = \"simulator\", fault = {{ kind = \"error_spike\", onset_s = 60, strength = nan }} }}\n"
        );
        let e = load(nan.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("releases[0].source.fault.strength") && e.contains("finite"), "{e}");
        let e = load(b"[agent]\ncapacity = 0\n").unwrap_err().to_string();
        assert!(e.contains("agent.capacity") && e.contains("at least 1"), "{e}");
        let e = load(b"[ledger]\ncompact_after_days = -1\n").unwrap_err().to_string();
        assert!(e.contains("ledger.compact_after_days") && e.contains("above 0"), "{e}");
        let e = load(b"[agent]\nlease_s = inf\n").unwrap_err().to_string();
        assert!(e.contains("agent.lease_s"), "{e}");
        let mut bad = b"[[releases]]\nname = \"x".to_vec();
        bad.extend_from_slice(&[0xff, 0xfe]);
        bad.extend_from_slice(b"\"\n");
        let e = load(&bad).unwrap_err().to_string();
        assert!(e.contains("not UTF-8") && e.contains("line 2"), "{e}");
        let huge = format!(
            "{release}source = {{ kind = \"simulator\", fault = {{ kind = \"error_spike\", onset_s = 60, strength = 1e308 }} }}\n"
        );
        let e = load(huge.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("fault.strength"), "{e}");
    }
}
