//! Policy files (`policies/*.toml`): numbers within bounds, never invariants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::field::FieldError;
use crate::judge::{GuardSpec, JudgeConfig};
use crate::signals::{BadDirection, MetricSpec};

/// The shipped default policy, embedded at build time.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");

/// A policy file is invalid. Names the file, the field and what was expected.
#[derive(Debug, Error)]
pub enum PolicyFileError {
    /// The file could not be read.
    #[error("{path}: cannot read policy file: {reason}")]
    Read {
        /// File path.
        path: PathBuf,
        /// OS error text.
        reason: String,
    },
    /// A field is missing, unknown, of the wrong type, or out of bounds.
    #[error("{path}: field `{field}`: expected {expected}")]
    Field {
        /// File path.
        path: PathBuf,
        /// Dotted field path.
        field: String,
        /// What a valid value looks like.
        expected: String,
    },
    /// A field is missing or unknown, or a value of the wrong type.
    #[error("{path}: {source}")]
    Shape {
        /// File path.
        path: PathBuf,
        /// Where, and what the parser expected.
        #[source]
        source: crate::field::ShapeError,
    },
}

/// How much a service lets the agent do on its own.
#[derive(strum::Display, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Autonomy {
    /// Recommend only; a human acts.
    Advise,
    /// Act after a human approves.
    Approve,
    /// Act within policy without asking.
    #[default]
    Auto,
}

/// What to do when an irreversible release fails. Either way it is never rolled back automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IrreversibleAction {
    /// Ask a human to approve the rollback (escalate).
    #[default]
    RequireApproval,
    /// Hold the release and tell a human.
    Hold,
}

/// At most `max_rollbacks` automated rollbacks per target per `window_minutes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Automated rollbacks allowed in the window (1..=100).
    pub max_rollbacks: u32,
    /// Window length in minutes (1..=10080).
    pub window_minutes: u32,
}

/// How long a failing signal source is waited for (Argo Rollouts'
/// `consecutiveErrorLimit`): a backend that fails this many ticks in a row
/// ends the release held, with the cause (`watch` exits 3), instead of
/// holding for the rest of the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcePolicy {
    /// Ticks in a row without an observation before the release ends (1..=1000).
    #[serde(default = "default_failure_limit")]
    pub consecutive_failure_limit: u32,
    /// A continued release (a restart, a takeover) unobserved longer than
    /// this, seconds (1..=604800), has its canary read again from now —
    /// the release time it reached lies that far back from now — instead of
    /// judging samples as old as its first start (an earlier-window baseline
    /// stays before the release).
    #[serde(default = "default_resume_within_s")]
    pub resume_within_s: u64,
}

/// `[blast_radius]`: at most `max_targets` targets of one service in canary
/// at once — or `max_percent` of the service's declared targets, or the
/// smaller of the two — across every release and agent on the ledger; a
/// release that would be one more is refused at its start. Unset: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlastRadius {
    /// Targets (1..=10000).
    #[serde(default)]
    pub max_targets: Option<u32>,
    /// Percent of the service's declared targets (1..=100), rounded down
    /// but never below one: 25 % of 10 targets is 2, of 3 targets is 1.
    #[serde(default)]
    pub max_percent: Option<u32>,
}

impl BlastRadius {
    /// How many targets of a service with `service_targets` declared targets
    /// may have a canary at once; `None`: no limit. A service whose targets
    /// are not known (0) under a percentage gets one canary at a time.
    pub fn limit(&self, service_targets: u32) -> Option<u32> {
        let pct = self.max_percent.map(|p| (u64::from(service_targets) * u64::from(p) / 100).max(1));
        let pct = pct.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        match (self.max_targets, pct) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    /// The limit's settings, for a person: `max_targets = 3, max_percent = 25 of 10 targets`.
    pub fn says(&self, service_targets: u32) -> String {
        let n = self.max_targets.map(|n| format!("max_targets = {n}"));
        let p = self.max_percent.map(|p| format!("max_percent = {p} of {service_targets} declared target(s)"));
        [n, p].into_iter().flatten().collect::<Vec<_>>().join(", ")
    }
}

fn default_failure_limit() -> u32 {
    6
}

fn default_resume_within_s() -> u64 {
    900
}

impl Default for SourcePolicy {
    fn default() -> Self {
        Self { consecutive_failure_limit: default_failure_limit(), resume_within_s: default_resume_within_s() }
    }
}

/// A period in which nothing is promoted without a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// Name shown in decisions.
    pub name: String,
    /// Start, RFC 3339 (e.g. `2026-11-27T00:00:00Z`).
    #[schemars(with = "String")]
    pub start: jiff::Timestamp,
    /// End, RFC 3339.
    #[schemars(with = "String")]
    pub end: jiff::Timestamp,
    /// Services it applies to; `*` for all.
    #[serde(default = "all_services")]
    pub services: Vec<String>,
}

fn all_services() -> Vec<String> {
    vec!["*".into()]
}

/// Per-service settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServicePolicy {
    /// Overrides the default autonomy.
    pub autonomy: Option<Autonomy>,
    /// Guards for this service, by metric name; each replaces the
    /// `[judge.metrics.NAME]` guard of the same metric.
    #[serde(default)]
    pub metrics: BTreeMap<String, GuardSpec>,
    /// Who may approve for this service; replaces `approvals.approvers` when not empty.
    #[serde(default)]
    pub approvers: Vec<String>,
}

/// A whole policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Policy format version; must be 1.
    pub version: u32,
    /// Default autonomy for services not listed in `services`.
    #[serde(default)]
    pub autonomy: Autonomy,
    /// Let the model roll back a release the judge did not fail, when its
    /// cited evidence is verified canary-only (off by default).
    #[serde(default)]
    pub allow_model_rollback: bool,
    /// Promote only with the model's concurrence; no model ⇒ hold.
    #[serde(default)]
    pub require_model_for_promotion: bool,
    /// Rollback rate limit per target.
    pub rate_limit: RateLimit,
    /// Handling of releases marked irreversible.
    #[serde(default)]
    pub irreversible: IrreversibleAction,
    /// How long a failing signal source is waited for.
    #[serde(default)]
    pub source: SourcePolicy,
    /// Releases of a revision rolled back before: held for a person (default) or refused.
    #[serde(default)]
    pub quarantine: super::memory::QuarantinePolicy,
    /// How many targets of one service may have a canary at once, across all releases.
    #[serde(default)]
    pub blast_radius: BlastRadius,
    /// A fleet release whose wave failed: roll back the promoted waves (default) or hold them.
    #[serde(default)]
    pub waves: super::waves::WavesPolicy,
    /// Freeze windows.
    #[serde(default)]
    pub freeze: Vec<FreezeWindow>,
    /// Per-service settings, by service name.
    #[serde(default)]
    pub services: BTreeMap<String, ServicePolicy>,
    /// Judge tunables.
    #[serde(default)]
    pub judge: JudgeConfig,
    /// Who may approve what a human must decide, and for how long a request stays open.
    #[serde(default)]
    pub approvals: super::approval::ApprovalPolicy,
    /// Tolerances learned from past releases: bounds, and whether runs use them.
    #[serde(default)]
    pub calibration: crate::calibrate::CalibrationSettings,
    /// Calibrations in force, by service (from the ledger, when `calibration.apply`).
    #[serde(skip)]
    #[schemars(skip)]
    pub calibrations: BTreeMap<String, crate::calibrate::Calibration>,
    /// Where this policy was read from, for errors found after loading.
    #[serde(skip)]
    #[schemars(skip)]
    pub origin: PathBuf,
}

impl PolicyFile {
    /// Parse and validate policy text; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyFileError> {
        let field_err =
            |field: String, expected: String| PolicyFileError::Field { path: path.to_path_buf(), field, expected };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| field_err("(document)".into(), format!("valid TOML: {}", e.message())))?;
        let mut file: PolicyFile = serde_path_to_error::deserialize(de).map_err(|e| PolicyFileError::Shape {
            path: path.to_path_buf(),
            source: crate::field::ShapeError::at(e.path(), e.inner().message()),
        })?;
        file.validate().map_err(|e| field_err(e.field, e.expected))?;
        file.origin = path.to_path_buf();
        Ok(file)
    }

    /// Read, parse and validate a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyFileError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
        Self::parse(path, &text)
    }

    /// The embedded default policy.
    pub fn embedded_default() -> Result<Self, PolicyFileError> {
        Self::parse(Path::new("policies/default.toml (embedded)"), DEFAULT_POLICY)
    }

    fn validate(&self) -> Result<(), FieldError> {
        if self.version != 1 {
            return Err(FieldError::of("version".into(), format!("1, found {}", self.version)));
        }
        if !(1..=100).contains(&self.rate_limit.max_rollbacks) {
            return Err(FieldError::of("rate_limit.max_rollbacks".into(), "an integer from 1 to 100".into()));
        }
        if !(1..=10080).contains(&self.rate_limit.window_minutes) {
            return Err(FieldError::of(
                "rate_limit.window_minutes".into(),
                "minutes from 1 to 10080 (one week)".into(),
            ));
        }
        if self.blast_radius.max_targets.is_some_and(|n| !(1..=10_000).contains(&n)) {
            return Err(FieldError::of("blast_radius.max_targets".into(), "targets from 1 to 10000".into()));
        }
        if self.blast_radius.max_percent.is_some_and(|n| !(1..=100).contains(&n)) {
            return Err(FieldError::of("blast_radius.max_percent".into(), "a percentage from 1 to 100".into()));
        }
        if !(1..=1000).contains(&self.source.consecutive_failure_limit) {
            return Err(FieldError::of("source.consecutive_failure_limit".into(), "ticks from 1 to 1000".into()));
        }
        if !(1..=604_800).contains(&self.source.resume_within_s) {
            return Err(FieldError::of("source.resume_within_s".into(), "seconds from 1 to 604800 (one week)".into()));
        }
        for (i, f) in self.freeze.iter().enumerate() {
            if f.end <= f.start {
                return Err(FieldError::of(format!("freeze[{i}].end"), format!("a time after start ({})", f.start)));
            }
            if f.services.is_empty() {
                return Err(FieldError::of(format!("freeze[{i}].services"), "at least one service or \"*\"".into()));
            }
        }
        self.approvals.validate()?;
        for (service, s) in &self.services {
            for (i, who) in s.approvers.iter().enumerate() {
                self.approvals.check_entry(&format!("services.{service}.approvers[{i}]"), who)?;
            }
            for (metric, g) in &s.metrics {
                g.validate().map_err(|e| e.under(&format!("services.{service}.metrics.{metric}")))?;
            }
        }
        self.calibration.validate().map_err(|e| e.under("calibration"))?;
        self.judge.validate().map_err(|e| e.under("judge"))
    }

    /// The judge's configuration for `service`: the `[judge]` table with the
    /// service's guards in place of the general ones, and its calibrated
    /// tolerances when a calibration is in force.
    pub fn judge_for(&self, service: &str) -> std::borrow::Cow<'_, JudgeConfig> {
        let guards = self.services.get(service).filter(|s| !s.metrics.is_empty());
        let calibration = self.calibrations.get(service);
        if guards.is_none() && calibration.is_none() {
            return std::borrow::Cow::Borrowed(&self.judge);
        }
        let mut cfg = self.judge.clone();
        for (metric, g) in guards.into_iter().flat_map(|s| &s.metrics) {
            cfg.metrics.entry(metric.clone()).or_default().set_guard(g);
        }
        if let Some(c) = calibration {
            c.apply(&mut cfg, &self.calibration);
        }
        std::borrow::Cow::Owned(cfg)
    }

    /// Check the policy against the metrics a release reports: refuse a
    /// guard on a metric's good side (a `max` on a metric that hurts when it
    /// falls: it would fire on an improvement and never on harm), and a policy
    /// that ignores every one of them (it would vouch for nothing).
    pub fn check_guards(&self, service: &str, metrics: &[MetricSpec]) -> Result<(), PolicyFileError> {
        let path = &self.origin;
        let ignored = |m: &MetricSpec| self.judge.metrics.get(&m.name).is_some_and(|o| o.ignore);
        if let Some(last) = metrics.last()
            && metrics.iter().all(ignored)
        {
            return Err(PolicyFileError::Field {
                path: path.to_path_buf(),
                field: format!("judge.metrics.{}.ignore", last.name),
                expected: format!(
                    "at least one of the release's metrics judged ({} are all ignored): a policy that ignores \
                     every metric can vouch for nothing",
                    metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let service_guard = |metric: &str| self.services.get(service).and_then(|s| s.metrics.get(metric));
        for m in metrics {
            let (prefix, spec) = match service_guard(&m.name) {
                Some(g) => (format!("services.{service}.metrics.{}", m.name), g.clone()),
                None => match self.judge.metrics.get(&m.name) {
                    Some(o) => (format!("judge.metrics.{}", m.name), o.guard_spec()),
                    None => continue,
                },
            };
            let Some(guard) = spec.guard() else { continue };
            let wrong = match (m.bad_direction, guard.limit.direction()) {
                (BadDirection::Both, _) => false,
                (d, g) => d != g,
            };
            if wrong {
                let (field, want) = match guard.limit.direction() {
                    BadDirection::Up => ("max", "min"),
                    _ => ("min", "max"),
                };
                return Err(PolicyFileError::Field {
                    path: path.to_path_buf(),
                    field: format!("{prefix}.{field}"),
                    expected: format!(
                        "`{want}`: `{}` is harmful when it goes {} (bad_direction), so a `{field}` guard would \
                         fire on an improvement and never on harm",
                        m.name,
                        if m.bad_direction == BadDirection::Up { "up" } else { "down" }
                    ),
                });
            }
        }
        Ok(())
    }

    /// Autonomy for `service`.
    pub fn autonomy_for(&self, service: &str) -> Autonomy {
        self.services.get(service).and_then(|s| s.autonomy).unwrap_or(self.autonomy)
    }

    /// The freeze window covering `service` at `now_ms`, if any.
    pub fn active_freeze(&self, service: &str, now_ms: i64) -> Option<&FreezeWindow> {
        let now = jiff::Timestamp::from_millisecond(now_ms).ok()?;
        self.freeze
            .iter()
            .find(|f| f.start <= now && now < f.end && f.services.iter().any(|s| s == "*" || s == service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        PolicyFile::parse(Path::new("p.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn settings_that_would_pass_anything_are_refused_with_the_field_named() {
        let head = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n[judge]\n";
        for (line, field) in [
            ("min_coverage = 0.0", "judge.min_coverage"),
            ("min_canary_requests = 0", "judge.min_canary_requests"),
            ("windows_s = [60, 9999999]", "judge.windows_s"),
            ("warmup_s = 99999999", "judge.warmup_s"),
        ] {
            let e = err(&format!("{head}{line}\n"));
            assert!(e.contains(field) && e.contains("p.toml"), "{line}: {e}");
        }
    }

    #[test]
    fn default_policy_is_valid() {
        let p = PolicyFile::embedded_default().unwrap();
        assert_eq!(p.version, 1);
        assert!(p.rate_limit.max_rollbacks >= 1);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err("version = 1\nrate_limit = { max_rollbacks = 2, window_minutes = 60 }\nautonmy = \"auto\"\n");
        assert!(e.starts_with("p.toml: at `autonmy`: unknown field `autonmy`, expected one of"), "{e}");
    }

    #[test]
    fn a_missing_field_is_named_with_the_table_it_belongs_in() {
        let e = err("version = 1\n");
        assert_eq!(e, "p.toml: at the top level: missing field `rate_limit`");
        let e = err("version = 1\n[rate_limit]\nmax_rollbacks = 2\n");
        assert_eq!(e, "p.toml: at `rate_limit`: missing field `window_minutes`");
        let e = err("version = \"one\"\nrate_limit = { max_rollbacks = 2, window_minutes = 60 }\n");
        assert!(e.starts_with("p.toml: at `version`: invalid type: string \"one\", expected"), "{e}");
    }

    #[test]
    fn out_of_bounds_is_named() {
        let e = err("version = 1\nrate_limit = { max_rollbacks = 0, window_minutes = 60 }\n");
        assert!(e.contains("`rate_limit.max_rollbacks`") && e.contains("1 to 100"), "{e}");
        let e = err("version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n[judge]\nalpha = 0.9\n");
        assert!(e.contains("`judge.alpha`"), "{e}");
        let e = err(
            "version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n[blast_radius]\nmax_targets = 0\n",
        );
        assert!(e.contains("`blast_radius.max_targets`") && e.contains("1 to 10000"), "{e}");
        let e = err(
            "version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n[quarantine]\naction = \"ignore\"\n",
        );
        assert!(e.contains("`quarantine.action`") && e.contains("ignore"), "{e}");
    }

    #[test]
    fn a_blast_radius_percentage_rounds_down_never_below_one_and_the_smaller_limit_wins() {
        let pct = |p| BlastRadius { max_targets: None, max_percent: Some(p) };
        assert_eq!(pct(25).limit(10), Some(2));
        assert_eq!(pct(25).limit(3), Some(1));
        assert_eq!(pct(50).limit(0), Some(1), "targets not known: one canary at a time");
        assert_eq!(pct(100).limit(7), Some(7));
        assert_eq!(BlastRadius { max_targets: Some(3), max_percent: Some(50) }.limit(10), Some(3));
        assert_eq!(BlastRadius { max_targets: Some(3), max_percent: Some(10) }.limit(10), Some(1));
        assert_eq!(BlastRadius::default().limit(10), None);
        let text =
            "version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n[blast_radius]\nmax_percent = 101\n";
        let e = err(text);
        assert!(e.contains("`blast_radius.max_percent`") && e.contains("1 to 100"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = err("version = 1\nautonomy = \"yolo\"\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n");
        assert!(e.contains("`autonomy`") && e.contains("yolo"), "{e}");
    }

    #[test]
    fn freeze_window_applies_by_service_and_time() {
        let p = PolicyFile::parse(
            Path::new("p.toml"),
            "version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n[[freeze]]\nname = \"bf\"\nstart = \"2026-11-27T00:00:00Z\"\nend = \"2026-11-28T00:00:00Z\"\nservices = [\"checkout\"]\n",
        )
        .unwrap();
        let inside = jiff::Timestamp::from_second(1_764_244_800 + 3600).unwrap().as_millisecond();
        assert!(p.active_freeze("checkout", inside).is_some() || p.freeze[0].start.as_millisecond() > inside);
        let mid = (p.freeze[0].start.as_millisecond() + p.freeze[0].end.as_millisecond()) / 2;
        assert_eq!(p.active_freeze("checkout", mid).map(|f| f.name.as_str()), Some("bf"));
        assert!(p.active_freeze("search", mid).is_none());
        assert!(p.active_freeze("checkout", p.freeze[0].end.as_millisecond()).is_none());
    }
}
