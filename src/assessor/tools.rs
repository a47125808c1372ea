//! The model's tools: read-only views of this tick's observation (what the
//! release's registry-built source returned), the judge's findings and the
//! release facts. The toolbox holds no executor, no ledger and no source
//! handle, so nothing a tool call does can change anything or query twice.

use super::evidence::{
    EvidenceItem, Fact, Telemetry, catalogue_finding, finding_names, is_error_level, metric_label, scrub_names,
    side_name,
};
use super::verdict::strict_schema;
use crate::judge::jumps::JointJump;
use crate::judge::{Finding, JudgeResult};
use crate::policy::ReleaseFacts;
use crate::signals::{Observation, Side};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// Which version(s) a tool looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sides {
    /// The stable version.
    Baseline,
    /// The new version.
    Canary,
    /// Both.
    Both,
}

impl Sides {
    fn includes(self, s: Side) -> bool {
        matches!((self, s), (Sides::Both, _) | (Sides::Baseline, Side::Baseline) | (Sides::Canary, Side::Canary))
    }
}

/// `query_metric`: one metric's samples over a time range.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryMetric {
    /// Metric name as listed in the evidence.
    pub metric: String,
    /// Which side.
    pub side: Sides,
    /// Start, seconds since the canary started.
    pub from_s: u64,
    /// End, seconds since the canary started (at most now).
    pub to_s: u64,
}

/// Which log lines `fetch_logs` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Levels {
    /// Error levels only (`error`, `fatal`, …).
    Error,
    /// Every level.
    Any,
}

/// `fetch_logs`: log lines by level and pattern.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchLogs {
    /// `error` (error levels only) or `any`.
    pub level: Levels,
    /// Case-insensitive substring; empty for all.
    pub pattern: String,
    /// Which side.
    pub side: Sides,
    /// Most lines to return (newest first kept), 1 to 50.
    pub limit: u32,
}

/// `list_events`: platform events (restarts, OOM kills, deploys).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEvents {
    /// Which side.
    pub side: Sides,
}

/// `compare_versions`: the judge's statistics for one metric.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareVersions {
    /// Metric name.
    pub metric: String,
}

/// `deployment_history`: no arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// The model's tools, by the names the model calls them: one registry, so
/// the list sent to the model and the dispatch cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum Tool {
    /// One metric's samples.
    QueryMetric,
    /// Log lines by level and pattern.
    FetchLogs,
    /// Platform events.
    ListEvents,
    /// The candidate and last-known-good revisions.
    DeploymentHistory,
    /// The judge's statistics for one metric.
    CompareVersions,
}

impl Tool {
    /// The name the model calls it by.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// What it does, for the model.
    pub fn description(self) -> &'static str {
        match self {
            Tool::QueryMetric => "Samples of one metric for baseline, canary or both over [from_s, to_s].",
            Tool::FetchLogs => "Log lines by level (error|any) and case-insensitive pattern, per side.",
            Tool::ListEvents => "Platform events (restarts, OOM kills, crash loops, deploys) per side.",
            Tool::DeploymentHistory => "The candidate and last-known-good revisions of this target.",
            Tool::CompareVersions => "The judge's statistics comparing canary and baseline for one metric.",
        }
    }

    /// Its arguments' JSON Schema (strict mode).
    pub fn parameters(self) -> Value {
        match self {
            Tool::QueryMetric => strict_schema::<QueryMetric>(),
            Tool::FetchLogs => strict_schema::<FetchLogs>(),
            Tool::ListEvents => strict_schema::<ListEvents>(),
            Tool::DeploymentHistory => strict_schema::<NoArgs>(),
            Tool::CompareVersions => strict_schema::<CompareVersions>(),
        }
    }
}

/// Name, description and parameter schema of each tool.
pub fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    use strum::IntoEnumIterator;
    Tool::iter().map(|t| (t.name(), t.description(), t.parameters())).collect()
}

/// What one call returned.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// JSON text sent back to the model.
    pub content: String,
    /// Evidence items the model may now cite.
    pub items: Vec<EvidenceItem>,
    /// The call was refused (unknown tool, bad arguments, source failure).
    pub error: bool,
}

fn error(message: String) -> ToolOutput {
    ToolOutput { content: json!({ "error": message }).to_string(), items: vec![], error: true }
}

fn items_output(items: Vec<EvidenceItem>) -> ToolOutput {
    let shown: Vec<Value> =
        items.iter().map(|i| json!({ "id": i.id, "fact": i.fact, "untrusted": i.untrusted, "text": i.text })).collect();
    ToolOutput { content: json!({ "items": shown }).to_string(), items, error: false }
}

fn args<T: serde::de::DeserializeOwned>(name: &str, raw: &str) -> Result<T, ToolOutput> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| error(format!("bad arguments for {name}: {e}")))
}

/// The tools of one consultation; the observation ends at the tick, so no tool sees past it.
pub struct ToolBox<'a> {
    obs: &'a Observation,
    telemetry: Telemetry<'a>,
    facts: &'a ReleaseFacts,
    judged: &'a JudgeResult,
}

impl<'a> ToolBox<'a> {
    /// Tools over this tick's observation and judgement.
    pub fn new(obs: &'a Observation, facts: &'a ReleaseFacts, judged: &'a JudgeResult) -> Self {
        Self { obs, telemetry: Telemetry::new(obs), facts, judged }
    }

    /// Run one call. Failures are answers to the model, not errors of the agent.
    pub fn call(&self, name: &str, raw_args: &str) -> ToolOutput {
        match self.dispatch(name, raw_args) {
            Ok(o) | Err(o) => o,
        }
    }

    fn dispatch(&self, name: &str, raw: &str) -> Result<ToolOutput, ToolOutput> {
        let Ok(tool) = name.parse::<Tool>() else {
            let names: Vec<&str> = definitions().iter().map(|d| d.0).collect();
            return Err(error(format!("unknown tool `{name}`; available: {}", names.join(", "))));
        };
        match tool {
            Tool::QueryMetric => self.query_metric(args(name, raw)?),
            Tool::FetchLogs => self.fetch_logs(args(name, raw)?),
            Tool::ListEvents => self.list_events(args(name, raw)?),
            Tool::DeploymentHistory => args::<NoArgs>(name, raw).map(|_| self.deployment_history()),
            Tool::CompareVersions => self.compare_versions(args(name, raw)?),
        }
    }

    fn query_metric(&self, a: QueryMetric) -> Result<ToolOutput, ToolOutput> {
        let obs = self.obs;
        let m = obs
            .metrics
            .iter()
            .find(|m| m.spec.name == a.metric || metric_label(&m.spec.name) == a.metric)
            .ok_or_else(|| error(format!("no metric `{}`", a.metric)))?;
        let to = a.to_s.min(obs.now_s);
        if a.from_s > to {
            return Err(error(format!("from_s {} is after to_s {to}", a.from_s)));
        }
        let step = u64::from(obs.step_s.max(1));
        let pick = |v: &[Option<f64>]| -> Vec<Value> {
            let idx: Vec<usize> =
                (0..v.len()).filter(|i| (*i as u64 + 1) * step >= a.from_s && (*i as u64 + 1) * step <= to).collect();
            let stride = idx.len().div_ceil(120).max(1);
            idx.iter().step_by(stride).map(|&i| json!([(i as u64 + 1) * step, v[i]])).collect()
        };
        let mut series = serde_json::Map::new();
        for side in [Side::Baseline, Side::Canary].into_iter().filter(|s| a.side.includes(*s)) {
            let v = if side == Side::Baseline { &m.baseline } else { &m.canary };
            series.insert(side_name(side).into(), Value::Array(pick(v)));
        }
        let label = metric_label(&m.spec.name);
        let id = format!("series:{label}:{}-{to}", a.from_s);
        let text = json!({ "metric": label, "unit": m.spec.unit.label(), "t_s_and_value": series }).to_string();
        Ok(items_output(vec![EvidenceItem { id, fact: Fact::Context, untrusted: false, text }]))
    }

    fn fetch_logs(&self, a: FetchLogs) -> Result<ToolOutput, ToolOutput> {
        let obs = self.obs;
        let needle = a.pattern.to_lowercase();
        let hits: Vec<usize> = (0..obs.logs.len())
            .filter(|&i| {
                let l = &obs.logs[i];
                a.side.includes(l.target)
                    && (a.level == Levels::Any || is_error_level(&l.level))
                    && l.message.to_lowercase().contains(&needle)
            })
            .collect();
        let limit = a.limit.clamp(1, 50) as usize;
        Ok(items_output(hits.iter().rev().take(limit).rev().filter_map(|&i| self.telemetry.log(i)).collect()))
    }

    fn list_events(&self, a: ListEvents) -> Result<ToolOutput, ToolOutput> {
        let obs = self.obs;
        let hits: Vec<usize> = (0..obs.events.len()).filter(|&i| a.side.includes(obs.events[i].target)).collect();
        let newest = hits.iter().rev().take(50).rev();
        Ok(items_output(newest.filter_map(|&i| self.telemetry.event(i)).collect()))
    }

    fn deployment_history(&self) -> ToolOutput {
        let f = self.facts;
        let text = format!(
            "target {}: candidate {} replacing last-known-good {}; irreversible change: {}",
            f.target,
            f.candidate_revision,
            f.last_known_good.as_deref().unwrap_or("(none recorded)"),
            f.irreversible
        );
        items_output(vec![EvidenceItem { id: "release:history".into(), fact: Fact::Context, untrusted: false, text }])
    }

    fn compare_versions(&self, a: CompareVersions) -> Result<ToolOutput, ToolOutput> {
        let f = self
            .judged
            .findings
            .iter()
            .find(|f| f.metric == a.metric || metric_label(&f.metric) == a.metric)
            .ok_or_else(|| error(format!("no metric `{}`", a.metric)))?;
        // The full statistics, under the same id and fact as the finding in the evidence list.
        let item = catalogue_finding(f);
        // The statistics under the finding's label: a name that is not plain stays out.
        let named = Finding {
            metric: metric_label(&f.metric).into_owned(),
            explanation: scrub_names(&f.explanation, finding_names(f)),
            joint_jump: f.joint_jump.clone().map(|j| JointJump { with: metric_label(&j.with).into_owned(), ..j }),
            ..f.clone()
        };
        let text = serde_json::to_string(&named).unwrap_or_else(|_| item.text.clone());
        Ok(items_output(vec![EvidenceItem { text, ..item }]))
    }
}
