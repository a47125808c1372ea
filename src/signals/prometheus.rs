//! The Prometheus source: one PromQL template per metric, run through
//! `/api/v1/query_range` for each side. `{{ side }}` becomes the side's label
//! value and `{{ step }}` the sample step (`10s`), so a template such as
//! `sum(rate(http_requests_total{code=~"5..",version="{{ side }}"}[{{ step }}]))`
//! serves both sides. NaN, gaps, empty results and a failing query are
//! missing samples; Prometheus unreachable is a source failure — both hold
//! the release, neither rolls it back.

use crate::field::FieldError;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::prom_ml::{self, PromDistribution, PromLabels};
use super::{
    BadDirection, DistributionSeries, DistributionSpec, LabelSeries, LabelSpec, MetricSeries, MetricSpec, ModelSignals,
    Observation, Outcomes, Side, SignalError, SignalSource, Task, Traffic,
};

/// One metric's query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromMetric {
    /// Metric name in findings.
    pub name: String,
    /// Unit (`ratio` turns on the traffic-aware test when `traffic` is set).
    pub unit: super::Unit,
    /// Which change hurts.
    pub bad_direction: BadDirection,
    /// PromQL template with `{{ side }}` and optionally `{{ step }}`.
    pub query: String,
}

/// A Prometheus source as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    /// What the baseline is: a label value selecting the stable version
    /// serving now (a canary), or an earlier window of the service (a
    /// blue/green switch, a rolling update, a config push).
    pub baseline: PromBaseline,
    /// Label value that selects the canary.
    pub canary: String,
    /// Seconds between samples.
    #[serde(default = "default_step")]
    pub step_s: u32,
    /// Analysis window, seconds.
    #[serde(default = "default_duration")]
    pub duration_s: u64,
    /// Seconds per HTTP request.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Optional template for requests served per step by a side.
    #[serde(default)]
    pub traffic: Option<String>,
    /// The metrics.
    pub metrics: Vec<PromMetric>,
    /// Credentials, sent in the `Authorization` header and read from the
    /// environment at start — never put them in `url`.
    #[serde(default)]
    pub auth: Option<PromAuth>,
    /// Prediction and feature histograms (docs/model-releases.md).
    #[serde(default)]
    pub distributions: Vec<PromDistribution>,
    /// Delayed labelled outcomes of a binary classifier.
    #[serde(default)]
    pub labels: Vec<PromLabels>,
}

/// The baseline of a Prometheus source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PromBaseline {
    /// `baseline = "stable"`: the label value `{{ side }}` takes for the
    /// stable version, queried over the same window as the canary.
    Label(String),
    /// `baseline = { kind = "preceding" | "seasonal", offset = "1d" }`.
    Window(BaselineWindow),
}

impl From<&str> for PromBaseline {
    fn from(label: &str) -> Self {
        PromBaseline::Label(label.to_string())
    }
}

/// An earlier window of the service as the baseline: the same queries, the
/// same time range moved back by `offset` — what PromQL's `offset` modifier
/// does to every selector, applied to the range so any template works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineWindow {
    /// `preceding` (the window just before the release) or `seasonal` (one period earlier).
    pub kind: WindowKind,
    /// How far back, in Prometheus's duration syntax (`30m`, `1d`, `1w`);
    /// `preceding` defaults to the analysis window, `seasonal` needs one.
    #[serde(default)]
    pub offset: Option<String>,
    /// The label value `{{ side }}` takes for the earlier window (default: the canary's).
    #[serde(default)]
    pub label: Option<String>,
}

/// Which earlier window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// The window just before the release.
    Preceding,
    /// The same window one period earlier.
    Seasonal,
}

impl PrometheusConfig {
    /// What the baseline series will be, for the judge.
    pub fn baseline_kind(&self) -> super::BaselineKind {
        baseline_kind_of(&self.baseline)
    }

    /// Seconds the baseline's range lies before the canary's (0 for a label);
    /// an error naming the field for an offset that cannot be one.
    pub fn baseline_offset_s(&self) -> Result<u64, FieldError> {
        baseline_offset_of(&self.baseline, self.duration_s)
    }

    /// Check the source's fields; `Err(FieldError::of(field, expected))`.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::field::http_url("url", &self.url)?;
        if self.step_s == 0 {
            return Err(FieldError::of("step_s".into(), "seconds > 0".into()));
        }
        if self.duration_s < u64::from(self.step_s) {
            return Err(FieldError::of("duration_s".into(), "seconds ≥ step_s".into()));
        }
        for (i, d) in self.distributions.iter().enumerate() {
            d.validate().map_err(|e| e.under(&format!("distributions[{i}]")))?;
        }
        self.baseline_offset_s().map(|_| ())
    }
}

/// What a baseline's series will be, for the judge.
pub(crate) fn baseline_kind_of(baseline: &PromBaseline) -> super::BaselineKind {
    match baseline {
        PromBaseline::Label(_) => super::BaselineKind::Concurrent,
        PromBaseline::Window(w) if w.kind == WindowKind::Preceding => super::BaselineKind::Preceding,
        PromBaseline::Window(_) => super::BaselineKind::Seasonal,
    }
}

/// Seconds a baseline's range lies before the canary's (0 for a label), for
/// an analysis window of `duration_s`; an error naming the field for an
/// offset that cannot be one.
pub(crate) fn baseline_offset_of(baseline: &PromBaseline, duration_s: u64) -> Result<u64, FieldError> {
    let PromBaseline::Window(w) = baseline else { return Ok(0) };
    let expected = || {
        FieldError::of(
            "baseline.offset".to_string(),
            format!(
                "a duration such as `30m`, `1d` or `1w`, at least the analysis window ({duration_s}s) so the two windows do not overlap{}",
                if w.kind == WindowKind::Seasonal { "; `seasonal` needs one" } else { "" }
            ),
        )
    };
    let seconds = match (&w.offset, w.kind) {
        (None, WindowKind::Preceding) => duration_s,
        (None, WindowKind::Seasonal) => return Err(expected()),
        (Some(text), _) => prometheus_duration(text).ok_or_else(expected)?,
    };
    if seconds < duration_s {
        return Err(expected());
    }
    Ok(seconds)
}

/// Seconds in a Prometheus duration (`1d`, `1h30m`, `90s`, `1w`); jiff parses
/// its units, and days and weeks are taken as 24 h and 7 × 24 h, as Prometheus does.
fn prometheus_duration(text: &str) -> Option<u64> {
    let span: jiff::Span = text.trim().parse().ok()?;
    let relative = jiff::SpanRelativeTo::days_are_24_hours();
    let seconds = span.total((jiff::Unit::Second, relative)).ok()?;
    (seconds.is_finite() && seconds > 0.0 && seconds.fract() == 0.0).then_some(seconds as u64)
}

/// How requests to Prometheus or Loki (or a proxy in front of them) authenticate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromAuth {
    /// `Authorization: Bearer <$token_env>`.
    Bearer {
        /// Variable holding the token.
        token_env: String,
    },
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Variable holding the password.
        password_env: String,
    },
}

impl PromAuth {
    /// The credential from the environment, or which field names an unset variable.
    pub(crate) fn resolve(&self) -> Result<Credential, UnsetVariable> {
        let var = |name: &str, field: &'static str| {
            crate::secret::from_env(name).map_err(|_| UnsetVariable { field, var: name.to_string() })
        };
        Ok(match self {
            PromAuth::Bearer { token_env } => Credential::Bearer(var(token_env, "auth.token_env")?),
            PromAuth::Basic { username, password_env } => {
                Credential::Basic(username.clone(), var(password_env, "auth.password_env")?)
            }
        })
    }
}

/// A credential's variable is not set.
#[derive(Debug, thiserror::Error)]
#[error("field `{field}`: variable `{var}` is not set")]
pub struct UnsetVariable {
    /// The setting naming the variable (`auth.token_env`).
    pub field: &'static str,
    /// The variable.
    pub var: String,
}

/// A resolved credential; reqwest marks the header it makes sensitive.
pub(crate) enum Credential {
    Bearer(String),
    Basic(String, String),
}

impl Credential {
    pub(crate) fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credential::Bearer(t) => rb.bearer_auth(t),
            Credential::Basic(u, p) => rb.basic_auth(u, Some(p)),
        }
    }
}

fn default_step() -> u32 {
    10
}

fn default_duration() -> u64 {
    1800
}

fn default_timeout() -> u64 {
    10
}

/// Reads a release's metrics from Prometheus; t = 0 is when the source was built.
pub struct PrometheusSource {
    cfg: PrometheusConfig,
    api: PromApi,
    /// Seconds the baseline's window lies before the canary's (0: concurrent).
    offset_s: u64,
    time0: super::TimeZero,
    http: reqwest::Client,
    credential: Option<Credential>,
}

/// Which server speaks the Prometheus query API: the queries, the reads
/// and their meaning are the same; names and the `config check` probe differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromApi {
    /// Prometheus itself (PromQL).
    Prometheus,
    /// VictoriaMetrics (its Prometheus-compatible API; queries may be MetricsQL).
    VictoriaMetrics,
}

impl PromApi {
    /// The word in names and errors.
    pub fn word(self) -> &'static str {
        match self {
            PromApi::Prometheus => "prometheus",
            PromApi::VictoriaMetrics => "victoriametrics",
        }
    }
}

/// Why one query gave no data.
#[derive(Debug)]
enum QueryError {
    /// Prometheus could not be reached or answered 5xx: the whole source is down.
    Unreachable(String),
    /// The query itself failed (bad PromQL, 4xx): that metric is missing.
    Query(String),
}

/// The source at `url` cannot start, because of `e`.
fn setup(url: &str, e: impl std::error::Error + Send + Sync + 'static) -> SignalError {
    SignalError::Setup { source_name: format!("prometheus {}", crate::secret::redact_url(url)), source: Box::new(e) }
}

impl PrometheusSource {
    /// A source whose windows lie at `time0`.
    pub fn starting_at(cfg: PrometheusConfig, time0: super::TimeZero) -> Result<Self, SignalError> {
        let credential = match &cfg.auth {
            None => None,
            Some(a) => Some(a.resolve().map_err(|e| setup(&cfg.url, e))?),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s.max(1)))
            .build()
            .map_err(|e| setup(&cfg.url, e))?;
        let offset_s = cfg.baseline_offset_s().map_err(|e| setup(&cfg.url, e))?;
        Ok(Self { cfg, api: PromApi::Prometheus, offset_s, time0, http, credential })
    }

    /// The same source against another server speaking the Prometheus API.
    pub fn speaking(self, api: PromApi) -> Self {
        Self { api, ..self }
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(c) => c.apply(rb),
            None => rb,
        }
    }

    fn render(&self, template: &str, side: Side) -> String {
        let label = match (side, &self.cfg.baseline) {
            (Side::Baseline, PromBaseline::Label(l)) => l,
            (Side::Baseline, PromBaseline::Window(w)) => w.label.as_ref().unwrap_or(&self.cfg.canary),
            (Side::Canary, _) => &self.cfg.canary,
        };
        template.replace("{{ side }}", label).replace("{{ step }}", &format!("{}s", self.cfg.step_s))
    }

    /// One `query_range` over the `n` steps of the window starting `back_s`
    /// seconds before the release: the answer and the window's origin (unix seconds).
    async fn fetch(&self, query: &str, n: usize, back_s: u64) -> Result<Answer, QueryError> {
        let step = f64::from(self.cfg.step_s.max(1));
        let origin = self.time0.origin(back_s);
        let (start, end) = (origin + step, origin + step * n as f64);
        let url = format!("{}/api/v1/query_range", self.cfg.url.trim_end_matches('/'));
        let params = [
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        // reqwest's error text carries the URL, credentials and all: drop it and name the redacted one.
        let resp = self.authed(self.http.post(&url)).form(&params).send().await.map_err(|e| {
            QueryError::Unreachable(format!(
                "{} ({})",
                crate::error::chain(&e.without_url()),
                crate::secret::redact_url(&url)
            ))
        })?;
        let status = resp.status();
        let body: serde_json::Value =
            resp.json().await.map_err(|e| QueryError::Unreachable(format!("{status}: {}", e.without_url())))?;
        Ok(Answer { status, body, origin, step, n })
    }

    /// Both sides, each answer read by `read`: the canary's `n` samples so
    /// far; the baseline's as many for a concurrent one, the whole earlier
    /// window (all of it in the past) otherwise. A failed query leaves its
    /// side missing; Prometheus unreachable fails the source.
    async fn both<T: Clone>(
        &self,
        template: &str,
        n: usize,
        read: fn(&Answer) -> Result<Vec<Option<T>>, QueryError>,
    ) -> Result<[Vec<Option<T>>; 2], SignalError> {
        let whole = (self.cfg.duration_s / u64::from(self.cfg.step_s.max(1))) as usize;
        let baseline_n = if self.offset_s == 0 { n } else { whole };
        let mut sides = [vec![None; baseline_n], vec![None; n]];
        for (k, side) in [Side::Baseline, Side::Canary].into_iter().enumerate() {
            let q = self.render(template, side);
            let (len, back) = if side == Side::Baseline { (baseline_n, self.offset_s) } else { (n, 0) };
            if len == 0 {
                continue;
            }
            match self.fetch(&q, len, back).await.and_then(|a| read(&a)) {
                Ok(s) => sides[k] = s,
                Err(QueryError::Query(e)) => {
                    tracing::warn!(query = %q, error = %e, "Query failed; its samples are missing.")
                }
                Err(QueryError::Unreachable(e)) => {
                    return Err(SignalError::Unavailable {
                        source_name: format!("{} at {}", self.api.word(), crate::secret::redact_url(&self.cfg.url)),
                        reason: e,
                    });
                }
            }
        }
        Ok(sides)
    }
}

impl PrometheusSource {
    /// Every configured query template, with the name of what it measures.
    fn templates(&self) -> Vec<(&str, &str)> {
        let mut all: Vec<(&str, &str)> = self.cfg.metrics.iter().map(|m| (m.name.as_str(), m.query.as_str())).collect();
        all.extend(self.cfg.traffic.as_deref().map(|t| ("traffic", t)));
        all.extend(self.cfg.distributions.iter().map(|d| (d.name.as_str(), d.query.as_str())));
        all.extend(self.cfg.labels.iter().map(|l| (l.name.as_str(), l.query.as_str())));
        all
    }

    /// One instant query (`/api/v1/query`): `Err` only when Prometheus
    /// answered that the query itself is wrong (HTTP 400 or 422).
    async fn try_query(&self, metric: &str, query: &str) -> Result<(), SignalError> {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let Ok(resp) = self.authed(self.http.post(&url)).form(&[("query", query)]).send().await else {
            return Ok(());
        };
        let status = resp.status();
        if status != reqwest::StatusCode::BAD_REQUEST && status != reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            return Ok(());
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let why = body["error"].as_str().unwrap_or("no error text");
        Err(SignalError::BadQuery {
            source_name: format!("{} {}", self.api.word(), crate::secret::redact_url(&self.cfg.url)),
            metric: metric.to_string(),
            query: query.to_string(),
            reason: format!("{status}: {}", crate::field::strip_unsafe(why, false)),
        })
    }

    /// The configured histograms and label counters over the first `n` steps.
    async fn model_signals(&self, n: usize) -> Result<ModelSignals, SignalError> {
        let mut ml = ModelSignals::default();
        for d in &self.cfg.distributions {
            let [b, c] = self.both(&d.query, n, read_histograms).await?;
            let h = |v: Vec<Option<BTreeMap<String, f64>>>| -> Vec<Option<super::Counts>> {
                v.into_iter().map(|m| m.and_then(|m| prom_ml::histogram(&d.le, &m))).collect()
            };
            let spec = DistributionSpec { name: d.name.clone(), kind: d.kind, le: d.le.clone() };
            ml.distributions.push(DistributionSeries { spec, baseline: h(b), canary: h(c) });
        }
        for l in &self.cfg.labels {
            let [baseline, canary] = self.both(&l.query, n, read_outcomes).await?;
            let spec = LabelSpec { name: l.name.clone(), task: Task::Binary, delay_s: l.delay_s };
            ml.labels.push(LabelSeries { spec, baseline, canary });
        }
        Ok(ml)
    }
}

/// Each step's cumulative buckets by `le` (read into counts per bucket later).
fn read_histograms(a: &Answer) -> Result<Vec<Option<BTreeMap<String, f64>>>, QueryError> {
    Ok(prom_ml::by_label(a.points()?, a.n, "le").into_iter().map(|m| (!m.is_empty()).then_some(m)).collect())
}

/// Each step's confusion counts by `outcome`.
fn read_outcomes(a: &Answer) -> Result<Vec<Option<Outcomes>>, QueryError> {
    Ok(prom_ml::by_label(a.points()?, a.n, "outcome").iter().map(prom_ml::outcomes).collect())
}

/// One `query_range` answer and the window it was asked for.
struct Answer {
    pub status: reqwest::StatusCode,
    pub body: serde_json::Value,
    /// Unix seconds of the window's start.
    pub origin: f64,
    pub step: f64,
    /// Steps asked for.
    pub n: usize,
}

impl Answer {
    /// Every finite point of every series: `(series labels, step index, value)`;
    /// only a server error or a failed query is an error.
    pub fn points(&self) -> Result<Vec<(&serde_json::Value, usize, f64)>, QueryError> {
        if self.status.is_server_error() {
            let why = self.body["error"].as_str().unwrap_or("");
            return Err(QueryError::Unreachable(format!("{}: {why}", self.status)));
        }
        if self.body["status"] != "success" {
            let why = self.body["error"].as_str().unwrap_or("no error text");
            return Err(QueryError::Query(format!("{}: {why}", self.status)));
        }
        let mut out = Vec::new();
        for s in self.body["data"]["result"].as_array().into_iter().flatten() {
            for point in s["values"].as_array().into_iter().flatten() {
                let (Some(ts), Some(v)) = (point[0].as_f64(), point[1].as_str().and_then(|v| v.parse::<f64>().ok()))
                else {
                    continue;
                };
                // Index kept in f64 until range-checked: an absurd timestamp
                // (±1e130) lands outside the window, never wraps or overflows.
                let i = ((ts - self.origin) / self.step).round() - 1.0;
                if v.is_finite() && i >= 0.0 && i < self.n as f64 {
                    out.push((&s["metric"], i as usize, v));
                }
            }
        }
        Ok(out)
    }
}

/// Sample `i` is the value at the end of interval `i`, several series summed.
fn plain(a: &Answer) -> Result<Vec<Option<f64>>, QueryError> {
    let mut out = vec![None; a.n];
    for (_, i, v) in a.points()? {
        out[i] = Some(out[i].unwrap_or(0.0) + v);
    }
    // Finite values can still sum past f64::MAX; an infinite sum is no sample.
    for slot in out.iter_mut().filter(|s| s.is_some_and(|v| !v.is_finite())) {
        *slot = None;
    }
    Ok(out)
}

impl PrometheusSource {
    async fn probe_victoria(&self) -> Result<String, SignalError> {
        let url = format!("{}/metrics", self.cfg.url.trim_end_matches('/'));
        let shown = crate::secret::redact_url(&self.cfg.url);
        let fail =
            |reason: String| SignalError::Unavailable { source_name: format!("victoriametrics {shown}"), reason };
        let resp =
            self.authed(self.http.get(&url)).send().await.map_err(|e| fail(crate::error::chain(&e.without_url())))?;
        if !resp.status().is_success() {
            return Err(fail(format!("/metrics answered {}", resp.status())));
        }
        let text = resp.text().await.map_err(|e| fail(crate::error::chain(&e.without_url())))?;
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("vm_app_version{").and_then(|r| r.split('"').nth(1)))
            .ok_or_else(|| fail("no vm_app_version in /metrics: not a VictoriaMetrics".into()))?;
        // Debian's build states an empty version.
        let version = if version.is_empty() { "not stated by this build" } else { version };
        Ok(format!("victoriametrics {shown}: VictoriaMetrics, version {version}"))
    }
}

#[async_trait]
impl SignalSource for PrometheusSource {
    fn name(&self) -> String {
        format!("{}:{}", self.api.word(), crate::secret::redact_url(&self.cfg.url))
    }

    /// Prometheus: `GET /api/v1/status/buildinfo`; VictoriaMetrics: its
    /// version from `GET /metrics` (its buildinfo is empty). Reachable, and the server named.
    async fn probe(&self) -> Result<String, SignalError> {
        if self.api == PromApi::VictoriaMetrics {
            return self.probe_victoria().await;
        }
        let url = format!("{}/api/v1/status/buildinfo", self.cfg.url.trim_end_matches('/'));
        let shown = crate::secret::redact_url(&self.cfg.url);
        let fail = |reason: String| SignalError::Unavailable { source_name: format!("prometheus {shown}"), reason };
        let resp =
            self.authed(self.http.get(&url)).send().await.map_err(|e| fail(crate::error::chain(&e.without_url())))?;
        if !resp.status().is_success() {
            return Err(fail(format!("buildinfo answered {}", resp.status())));
        }
        let doc: serde_json::Value = resp.json().await.map_err(|e| fail(format!("not JSON: {}", e.without_url())))?;
        let version = doc["data"]["version"].as_str().unwrap_or("?");
        Ok(format!("prometheus {shown}: version {version}"))
    }

    /// Each template rendered for both sides, asked once.
    async fn check_queries(&self) -> Result<(), SignalError> {
        for (metric, template) in self.templates() {
            for side in [Side::Baseline, Side::Canary] {
                self.try_query(metric, &self.render(template, side)).await?;
            }
        }
        Ok(())
    }

    async fn observe(&self, now_s: u64) -> Result<Observation, SignalError> {
        let n = ((now_s.min(self.cfg.duration_s)) / u64::from(self.cfg.step_s.max(1))) as usize;
        let mut metrics = Vec::new();
        for m in &self.cfg.metrics {
            let [baseline, canary] = self.both(&m.query, n, plain).await?;
            let spec = MetricSpec { name: m.name.clone(), unit: m.unit.clone(), bad_direction: m.bad_direction };
            metrics.push(MetricSeries { spec, baseline, canary });
        }
        let traffic = match &self.cfg.traffic {
            Some(t) => {
                let [b, c] = self.both(t, n, plain).await?;
                let count =
                    |v: Vec<Option<f64>>| v.into_iter().map(|x| x.unwrap_or(0.0).max(0.0).round() as u64).collect();
                Some(Traffic { baseline: count(b), canary: count(c) })
            }
            None => None,
        };
        Ok(Observation {
            service: "prometheus".into(),
            step_s: self.cfg.step_s,
            duration_s: self.cfg.duration_s,
            now_s,
            baseline_kind: self.cfg.baseline_kind(),
            traffic,
            metrics,
            logs: vec![],
            events: vec![],
            ml: self.model_signals(n).await?,
        })
    }
}

#[cfg(test)]
mod samples_tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Any JSON value, a few levels deep, with numbers from the whole f64 range.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            "[ -~]{0,12}".prop_map(Value::String),
            prop_oneof![Just("NaN"), Just("+Inf"), Just("-Inf"), Just("1e308"), Just("-0")].prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A Prometheus answer whose points are arbitrary.
    fn answer() -> impl Strategy<Value = Value> {
        let point = (any_json(), any_json()).prop_map(|(t, v)| json!([t, v]));
        let values = prop::collection::vec(
            prop_oneof![
                point,
                (0u32..80, any::<f64>()).prop_map(|(t, v)| json!([1000.0 + f64::from(t), v.to_string()]))
            ],
            0..40,
        );
        let series = prop::collection::vec(values.prop_map(|v| json!({ "metric": {}, "values": v })), 0..4);
        prop_oneof![
            series.prop_map(|r| json!({ "status": "success", "data": { "resultType": "matrix", "result": r } })),
            any_json(),
        ]
    }

    pub(crate) fn answer_of(status: reqwest::StatusCode, body: Value, n: usize) -> Answer {
        Answer { status, body, origin: 1000.0, step: 10.0, n }
    }

    proptest! {
        #[test]
        fn any_answer_gives_finite_samples_in_the_window_or_a_clear_error(
            body in answer(),
            code in prop_oneof![Just(200u16), Just(400), Just(422), Just(500), Just(503)],
        ) {
            let status = reqwest::StatusCode::from_u16(code).unwrap();
            match plain(&answer_of(status, body, 6)) {
                Ok(out) => {
                    prop_assert!(out.iter().flatten().all(|v| v.is_finite()), "{out:?}");
                    prop_assert_eq!(out.len(), 6);
                }
                Err(QueryError::Unreachable(e) | QueryError::Query(e)) => prop_assert!(e.contains(&code.to_string()), "{e}"),
            }
        }
    }

    /// Found by CI: a timestamp of -4.3e130 saturated to i64::MIN and
    /// the "- 1" overflowed (a panic in debug builds).
    #[test]
    fn an_absurd_timestamp_is_outside_the_window_not_a_panic() {
        let body = json!({ "status": "success", "data": { "result": [
            { "values": [[-4.327721235114431e130, "1"], [1e300, "2"], [1010.0, "3"]] } ] } });
        let out = plain(&answer_of(reqwest::StatusCode::OK, body, 2)).unwrap();
        assert_eq!(out, vec![Some(3.0), None]);
    }

    #[test]
    fn sums_that_overflow_are_missing_not_infinite() {
        let body = json!({ "status": "success", "data": { "result": [
            { "values": [[1010.0, "1.7e308"]] }, { "values": [[1010.0, "1.7e308"]] } ] } });
        let out = plain(&answer_of(reqwest::StatusCode::OK, body, 2)).unwrap();
        assert_eq!(out, vec![None, None]);
    }
}

#[cfg(test)]
mod baseline_tests {
    use super::*;

    fn cfg(baseline: PromBaseline) -> PrometheusConfig {
        PrometheusConfig {
            url: "http://127.0.0.1:9".into(),
            baseline,
            canary: "green".into(),
            step_s: 10,
            duration_s: 1800,
            timeout_s: 1,
            traffic: None,
            metrics: vec![],
            auth: None,
            distributions: vec![],
            labels: vec![],
        }
    }

    fn window(kind: WindowKind, offset: Option<&str>) -> PromBaseline {
        PromBaseline::Window(BaselineWindow { kind, offset: offset.map(str::to_string), label: None })
    }

    #[test]
    fn offsets_read_as_prometheus_reads_them() {
        for (text, seconds) in [("1d", 86_400), ("1w", 604_800), ("1h30m", 5_400), ("1800s", 1_800), ("2h", 7_200)] {
            assert_eq!(cfg(window(WindowKind::Seasonal, Some(text))).baseline_offset_s(), Ok(seconds), "{text}");
        }
        assert_eq!(cfg(window(WindowKind::Preceding, None)).baseline_offset_s(), Ok(1_800));
        assert_eq!(cfg("stable".into()).baseline_offset_s(), Ok(0));
    }

    #[test]
    fn a_bad_offset_names_the_field_and_what_it_expects() {
        for bad in ["yesterday", "-1d", "0s", "10m", "1.5s", ""] {
            let crate::field::FieldError { field, expected } =
                cfg(window(WindowKind::Seasonal, Some(bad))).validate().unwrap_err();
            assert_eq!(field, "baseline.offset", "{bad}");
            assert!(expected.contains("at least the analysis window (1800s)"), "{bad}: {expected}");
        }
        let expected = cfg(window(WindowKind::Seasonal, None)).validate().unwrap_err().expected;
        assert!(expected.contains("`seasonal` needs one"), "{expected}");
    }

    #[test]
    fn the_baseline_kind_follows_the_configuration() {
        use crate::signals::BaselineKind;
        assert_eq!(cfg("blue".into()).baseline_kind(), BaselineKind::Concurrent);
        assert_eq!(cfg(window(WindowKind::Preceding, None)).baseline_kind(), BaselineKind::Preceding);
        assert_eq!(cfg(window(WindowKind::Seasonal, Some("1d"))).baseline_kind(), BaselineKind::Seasonal);
        let toml = r#"baseline = { kind = "seasonal", offset = "1d", label = "blue" }"#;
        #[derive(Deserialize)]
        struct Only {
            baseline: PromBaseline,
        }
        let parsed: Only = toml::from_str(toml).unwrap();
        assert_eq!(
            parsed.baseline,
            PromBaseline::Window(BaselineWindow {
                kind: WindowKind::Seasonal,
                offset: Some("1d".into()),
                label: Some("blue".into())
            })
        );
    }
}
