//! Log lines of both sides from Loki: one LogQL query per side against
//! `GET /loki/api/v1/query_range` (`direction=forward`, nanosecond
//! `start`/`end`), answered as `resultType: streams`.

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::reader::{LogBatch, LogReadError, LogReader, RawLine};
use crate::field::FieldError;
use crate::signals::{PromAuth, Side};

/// `[releases.logs] source = "loki"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Base URL, e.g. `http://loki:3100` (credentials go in `auth`, not here).
    pub url: String,
    /// LogQL log query of the baseline's lines, e.g. `{app="checkout",track="stable"} |= "error"`.
    pub baseline_query: String,
    /// LogQL log query of the canary's lines.
    pub canary_query: String,
    /// Tenant (`X-Scope-OrgID`) of a multi-tenant Loki.
    #[serde(default)]
    pub tenant: Option<String>,
    /// How requests authenticate (Grafana Cloud: basic; a gateway: bearer).
    #[serde(default)]
    pub auth: Option<PromAuth>,
    /// Lines per query at most (Loki's `limit`); a read cut short resumes at its last line.
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// Seconds before a query is abandoned.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_limit() -> u32 {
    5000
}

fn default_timeout() -> u64 {
    10
}

impl LokiConfig {
    /// The first wrong field and what it should be.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::field::http_url("url", &self.url)?;
        for (field, q) in [("baseline_query", &self.baseline_query), ("canary_query", &self.canary_query)] {
            if !q.trim_start().starts_with('{') {
                return Err(FieldError::of(
                    field.into(),
                    "a LogQL log query starting with a stream selector `{…}`".into(),
                ));
            }
        }
        if self.baseline_query.trim() == self.canary_query.trim() {
            return Err(FieldError::of(
                "canary_query".into(),
                "a query other than `baseline_query` (the other side's lines)".into(),
            ));
        }
        if !(1..=50_000).contains(&self.limit) {
            return Err(FieldError::of("limit".into(), "lines between 1 and 50000".into()));
        }
        if !(1..=300).contains(&self.timeout_s) {
            return Err(FieldError::of("timeout_s".into(), "seconds between 1 and 300".into()));
        }
        Ok(())
    }
}

/// Reads both sides' lines from Loki.
pub struct LokiLogs {
    cfg: LokiConfig,
    http: reqwest::Client,
    credential: Option<crate::signals::Credential>,
    /// Seconds the baseline's query is moved back (an earlier-window baseline), 0 for a concurrent one.
    baseline_offset_s: u64,
}

impl LokiLogs {
    /// A reader for `cfg`; an unset credential variable is named. The
    /// baseline's lines are read `baseline_offset_s` earlier and placed on
    /// the release's clock, as the metrics' earlier window is.
    pub fn new(cfg: LokiConfig, baseline_offset_s: u64) -> Result<Self, LogReadError> {
        let credential = cfg.auth.as_ref().map(PromAuth::resolve).transpose()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s.max(1)))
            .build()
            .map_err(|source| LogReadError::Http { url: crate::secret::redact_url(&cfg.url), source })?;
        Ok(Self { cfg, http, credential, baseline_offset_s })
    }
}

#[async_trait]
impl LogReader for LokiLogs {
    fn name(&self) -> String {
        format!("loki {}", crate::secret::redact_url(&self.cfg.url))
    }

    async fn read(&self, side: Side, after_unix_s: f64, until_unix_s: f64) -> Result<LogBatch, LogReadError> {
        let (query, back) = match side {
            Side::Baseline => (&self.cfg.baseline_query, self.baseline_offset_s as f64),
            Side::Canary => (&self.cfg.canary_query, 0.0),
        };
        let (after_unix_s, until_unix_s) = (after_unix_s - back, until_unix_s - back);
        let url = format!("{}/loki/api/v1/query_range", self.cfg.url.trim_end_matches('/'));
        let ns = |s: f64| format!("{:.0}", s * 1e9);
        let params = [
            ("query", query.clone()),
            ("start", ns(after_unix_s)),
            // `end` is exclusive in some Loki versions: ask a microsecond past the window.
            ("end", ns(until_unix_s + 1e-6)),
            ("limit", self.cfg.limit.to_string()),
            ("direction", "forward".into()),
        ];
        let mut rb = self.http.get(&url).query(&params);
        if let Some(t) = &self.cfg.tenant {
            rb = rb.header("X-Scope-OrgID", t);
        }
        if let Some(c) = &self.credential {
            rb = c.apply(rb);
        }
        let http_error = |source: reqwest::Error| LogReadError::Http {
            url: crate::secret::redact_url(&url),
            source: source.without_url(),
        };
        let resp = rb.send().await.map_err(http_error)?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(http_error)?;
        let mut lines = streams(status, &body)?;
        let limit_hit = lines.len() >= self.cfg.limit as usize;
        let complete = match lines.last() {
            Some(last) if limit_hit => last.at_unix_s,
            _ => until_unix_s,
        };
        lines.iter_mut().for_each(|l| l.at_unix_s += back);
        Ok(LogBatch { lines, complete_through_unix_s: complete + back })
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<AnswerData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerData {
    result_type: String,
    result: Vec<Stream>,
}

#[derive(Deserialize)]
struct Stream {
    /// `[nanoseconds as a string, line]`, and since Loki 3 an optional third
    /// element of structured metadata, ignored.
    values: Vec<Vec<serde_json::Value>>,
}

/// The lines of a `query_range` answer, oldest first, or what is wrong with
/// it (Loki's error text on a non-200, a metric query's matrix). Pure.
pub fn streams(status: u16, body: &str) -> Result<Vec<RawLine>, LogReadError> {
    let wrong = |detail: String| LogReadError::Answer { backend: "loki", status, detail };
    if status != 200 {
        return Err(wrong(body.chars().take(300).collect()));
    }
    let answer: Answer = serde_json::from_str(body).map_err(|e| wrong(format!("not a query_range answer: {e}")))?;
    let data = match (answer.status.as_str(), answer.data) {
        ("success", Some(d)) => d,
        (s, _) => return Err(wrong(format!("status `{s}`, expected `success` with data"))),
    };
    if data.result_type != "streams" {
        return Err(wrong(format!(
            "resultType `{}`: expected `streams` (a log query, not a metric query)",
            data.result_type
        )));
    }
    let mut lines = Vec::new();
    for stream in data.result {
        for value in stream.values {
            let (Some(ns), Some(message)) =
                (value.first().and_then(|v| v.as_str()), value.get(1).and_then(|v| v.as_str()))
            else {
                return Err(wrong("a value that is not `[\"<nanoseconds>\", \"<line>\"]`".into()));
            };
            let at: i128 = ns.parse().map_err(|_| wrong(format!("timestamp `{ns}` is not nanoseconds")))?;
            lines.push(RawLine { at_unix_s: at as f64 / 1e9, message: message.to_string() });
        }
    }
    lines.sort_by(|a, b| a.at_unix_s.total_cmp(&b.at_unix_s));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_from_loki_docs_answer_merge_in_time_order() {
        // The shape of https://grafana.com/docs/loki/latest/reference/loki-http-api/#query-logs-within-a-range-of-time
        let body = r#"{"status":"success","data":{"resultType":"streams","result":[
            {"stream":{"app":"checkout","pod":"b"},"values":[["1795687202000000000","ERROR db timeout"]]},
            {"stream":{"app":"checkout","pod":"a"},"values":[["1795687201500000000","ERROR cart empty",{"trace_id":"x"}]]}],
            "stats":{"summary":{"bytesProcessedPerSecond":1}}}}"#;
        let lines = streams(200, body).unwrap();
        let msgs: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, ["ERROR cart empty", "ERROR db timeout"]);
        assert!((lines[0].at_unix_s - 1_795_687_201.5).abs() < 1e-6);
    }

    #[test]
    fn errors_and_metric_answers_are_named() {
        let e = streams(400, "parse error at line 1, col 2: syntax error").unwrap_err().to_string();
        assert!(e.contains("400") && e.contains("parse error"), "{e}");
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(streams(200, matrix).unwrap_err().to_string().contains("expected `streams`"));
        assert!(streams(200, "<html>").unwrap_err().to_string().contains("not a query_range answer"));
        let bad_ts =
            r#"{"status":"success","data":{"resultType":"streams","result":[{"stream":{},"values":[["soon","x"]]}]}}"#;
        assert!(streams(200, bad_ts).unwrap_err().to_string().contains("`soon`"));
    }

    #[test]
    fn config_fields_are_checked() {
        let ok = LokiConfig {
            url: "http://loki:3100".into(),
            baseline_query: r#"{track="stable"}"#.into(),
            canary_query: r#"{track="canary"}"#.into(),
            tenant: None,
            auth: None,
            limit: 5000,
            timeout_s: 10,
        };
        assert!(ok.validate().is_ok());
        let same = LokiConfig { canary_query: ok.baseline_query.clone(), ..ok.clone() };
        assert_eq!(same.validate().unwrap_err().field, "canary_query");
        let not_logql = LokiConfig { baseline_query: "rate(x[1m])".into(), ..ok.clone() };
        assert_eq!(not_logql.validate().unwrap_err().field, "baseline_query");
        assert_eq!(LokiConfig { url: "loki:3100".into(), ..ok }.validate().unwrap_err().field, "url");
    }
}
