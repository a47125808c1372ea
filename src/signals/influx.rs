//! InfluxDB 1.x (InfluxQL over `GET /query`): one query template per metric,
//! run for each side over the window so far. `{{ side }}` becomes the side's
//! tag value, `{{ step }}` the sample step (`10s`, for `GROUP BY
//! time({{ step }})`) and `{{ time_filter }}` the window's time condition;
//! bucket `t` is sample `(t − start) / step`. Gaps and nulls are missing
//! samples, a query InfluxDB refuses is that metric missing (and fails
//! `config check`), InfluxDB unreachable or answering 5xx is a source
//! failure: the release holds, as with Prometheus. Only a concurrent baseline
//! (a tag value beside the canary's) is read.

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::prometheus::{Credential, PromAuth, PromMetric};
use super::{BaselineKind, MetricSeries, MetricSpec, Observation, Side, SignalError, SignalSource};
use crate::field::FieldError;

/// An InfluxDB 1.x source as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://influxdb:8086` (credentials never here: `auth`).
    pub url: String,
    /// The database queries run in (`db`).
    pub database: String,
    /// What `{{ side }}` becomes for the baseline (a tag value).
    pub baseline: String,
    /// What `{{ side }}` becomes for the canary.
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
    /// Credentials (InfluxDB 1.x takes HTTP Basic), read from the environment at start.
    #[serde(default)]
    pub auth: Option<PromAuth>,
    /// The metrics: InfluxQL templates with `{{ side }}`, `{{ step }}` and `{{ time_filter }}`.
    pub metrics: Vec<PromMetric>,
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

impl InfluxConfig {
    /// Fields against their bounds, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::field::http_url("url", &self.url)?;
        if self.database.trim().is_empty() {
            return Err(FieldError::of("database".into(), "the name of a database".into()));
        }
        if self.step_s == 0 {
            return Err(FieldError::of("step_s".into(), "seconds > 0".into()));
        }
        if self.duration_s < u64::from(self.step_s) {
            return Err(FieldError::of("duration_s".into(), "seconds ≥ step_s".into()));
        }
        if self.metrics.is_empty() {
            return Err(FieldError::of("metrics".into(), "at least one metric".into()));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            for needed in ["{{ side }}", "{{ time_filter }}", "GROUP BY time({{ step }})"] {
                if !m.query.contains(needed) {
                    let expected = format!("an InfluxQL template containing `{needed}`");
                    return Err(FieldError::of(format!("metrics[{i}].query"), expected));
                }
            }
        }
        Ok(())
    }
}

/// Reads a release's metrics from InfluxDB 1.x; t = 0 is when the source was built.
pub struct InfluxSource {
    cfg: InfluxConfig,
    start_unix: f64,
    http: reqwest::Client,
    credential: Option<Credential>,
}

/// Why one query gave no data.
enum QueryError {
    /// InfluxDB could not be reached or answered 5xx: the whole source is down.
    Unreachable(String),
    /// InfluxDB refused the query itself: that metric is missing.
    Refused(String),
}

impl InfluxSource {
    /// A source whose release started at `start_unix` (seconds).
    pub fn starting_at(cfg: InfluxConfig, start_unix: f64) -> Result<Self, SignalError> {
        let setup = |e: Box<dyn std::error::Error + Send + Sync>| SignalError::Setup {
            source_name: format!("influxdb {}", crate::secret::redact_url(&cfg.url)),
            source: e,
        };
        let credential = match &cfg.auth {
            None => None,
            Some(a) => Some(a.resolve().map_err(|e| setup(Box::new(e)))?),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s.max(1)))
            .build()
            .map_err(|e| setup(Box::new(e)))?;
        Ok(Self { cfg, start_unix, http, credential })
    }

    fn shown(&self) -> String {
        format!("influxdb {}", crate::secret::redact_url(&self.cfg.url))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.get(format!("{}{path}", self.cfg.url.trim_end_matches('/')));
        match &self.credential {
            Some(c) => c.apply(rb),
            None => rb,
        }
    }

    /// The template for `side` over the first `n` steps of the window.
    fn render(&self, template: &str, side: Side, n: usize) -> String {
        let label = match side {
            Side::Baseline => &self.cfg.baseline,
            Side::Canary => &self.cfg.canary,
        };
        let step = f64::from(self.cfg.step_s);
        let (from, to) = (self.start_unix.floor() as i64, (self.start_unix + step * n as f64).floor() as i64);
        template
            .replace("{{ side }}", label)
            .replace("{{ step }}", &format!("{}s", self.cfg.step_s))
            .replace("{{ time_filter }}", &format!("time >= {from}s AND time < {to}s"))
    }

    /// One query: the answer's body.
    async fn query(&self, q: &str) -> Result<serde_json::Value, QueryError> {
        let params = [("db", self.cfg.database.as_str()), ("q", q), ("epoch", "s")];
        let resp = self.get("/query").query(&params).send().await.map_err(|e| {
            QueryError::Unreachable(format!("{} ({})", crate::error::chain(&e.without_url()), self.shown()))
        })?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(QueryError::Unreachable(format!("/query answered {status}")));
        }
        let body: serde_json::Value =
            resp.json().await.map_err(|e| QueryError::Unreachable(format!("{status}: {}", e.without_url())))?;
        // A refused query: HTTP 400 with `error`, or 200 with the statement's `error`.
        let refused = body["error"].as_str().or_else(|| body["results"][0]["error"].as_str());
        match refused {
            Some(e) => Err(QueryError::Refused(e.to_string())),
            None => Ok(body),
        }
    }

    /// `n` samples of one side: the one series' buckets by index; more than one series is refused.
    fn samples(&self, body: &serde_json::Value, n: usize) -> Result<Vec<Option<f64>>, QueryError> {
        let mut out = vec![None; n];
        let series = body["results"][0]["series"].as_array().map(Vec::as_slice).unwrap_or_default();
        let [one] = series else {
            if series.is_empty() {
                return Ok(out);
            }
            return Err(QueryError::Refused(format!("{} series answered; aggregate to one", series.len())));
        };
        let step = f64::from(self.cfg.step_s);
        for row in one["values"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let (Some(t), Some(v)) = (row[0].as_f64(), row[1].as_f64()) else { continue };
            let i = ((t - self.start_unix.floor()) / step).round();
            if v.is_finite() && i >= 0.0 && (i as usize) < n {
                out[i as usize] = Some(v);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl SignalSource for InfluxSource {
    fn name(&self) -> String {
        format!("influxdb:{}", crate::secret::redact_url(&self.cfg.url))
    }

    /// `GET /ping`: reachable, and the version InfluxDB states in `X-Influxdb-Version`.
    async fn probe(&self) -> Result<String, SignalError> {
        let fail = |reason: String| SignalError::Unavailable { source_name: self.shown(), reason };
        let resp = self.get("/ping").send().await.map_err(|e| fail(crate::error::chain(&e.without_url())))?;
        if !resp.status().is_success() {
            return Err(fail(format!("/ping answered {}", resp.status())));
        }
        let version = resp.headers().get("X-Influxdb-Version").and_then(|v| v.to_str().ok()).map(str::to_string);
        let version = version.ok_or_else(|| fail("no X-Influxdb-Version header: not an InfluxDB 1.x".into()))?;
        Ok(format!("{}: InfluxDB {version}", self.shown()))
    }

    /// Each template for both sides, once: a refused one names its metric.
    async fn check_queries(&self) -> Result<(), SignalError> {
        for m in &self.cfg.metrics {
            for side in [Side::Baseline, Side::Canary] {
                let q = self.render(&m.query, side, 1);
                if let Err(QueryError::Refused(reason)) = self.query(&q).await {
                    return Err(SignalError::BadQuery {
                        source_name: self.shown(),
                        metric: m.name.clone(),
                        query: q,
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    async fn observe(&self, now_s: u64) -> Result<Observation, SignalError> {
        let n = (now_s.min(self.cfg.duration_s) / u64::from(self.cfg.step_s)) as usize;
        let mut metrics = Vec::new();
        for m in &self.cfg.metrics {
            let mut sides = [vec![None; n], vec![None; n]];
            for (k, side) in [Side::Baseline, Side::Canary].into_iter().enumerate() {
                let q = self.render(&m.query, side, n);
                match self.query(&q).await.and_then(|body| self.samples(&body, n)) {
                    Ok(s) => sides[k] = s,
                    Err(QueryError::Refused(e)) => {
                        tracing::warn!(query = %q, error = %e, "Query refused; its samples are missing.");
                    }
                    Err(QueryError::Unreachable(reason)) => {
                        return Err(SignalError::Unavailable { source_name: self.shown(), reason });
                    }
                }
            }
            let [baseline, canary] = sides;
            let spec = MetricSpec { name: m.name.clone(), unit: m.unit.clone(), bad_direction: m.bad_direction };
            metrics.push(MetricSeries { spec, baseline, canary });
        }
        Ok(Observation {
            service: "influxdb".into(),
            step_s: self.cfg.step_s,
            duration_s: self.cfg.duration_s,
            now_s,
            baseline_kind: BaselineKind::Concurrent,
            traffic: None,
            metrics,
            logs: vec![],
            events: vec![],
            ml: Default::default(),
        })
    }
}
