//! Graphite (graphite-web's render API, `GET /render?format=json`). The
//! template is one Graphite target expression with `{{ side }}` (a path
//! node, a tag value); `{{ step }}` becomes the step (`10s`), for
//! `summarize(…, "{{ step }}", "avg")` when the stored resolution is finer.
//! A target graphite-web refuses (HTTP 400) is that metric missing; a 5xx,
//! 401/403 or no answer holds.

use async_trait::async_trait;

use super::metric_api::{self, MetricApi, Points, QueryError, Range, api_source_config};
use super::prometheus::PromAuth;
use super::{SignalError, SignalSource};
use crate::field::FieldError;

api_source_config! {
    /// A Graphite source as configured.
    pub struct GraphiteConfig {
        /// graphite-web's base URL, e.g. `http://graphite:8080` (credentials never here: `auth`).
        pub url: String,
        /// Credentials for a proxy in front of graphite-web, read from the environment at start.
        #[serde(default)]
        pub auth: Option<PromAuth>,
    }
}

impl GraphiteConfig {
    /// Fields against their bounds, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::field::http_url("url", &self.url)?;
        self.shared().validate(&[])
    }

    /// The running source, its windows at `time0`.
    pub fn source(&self, time0: super::TimeZero) -> Result<Box<dyn SignalSource>, SignalError> {
        let api = GraphiteApi { endpoint: metric_api::Endpoint::new("graphite", &self.url, self.auth.as_ref())? };
        Ok(Box::new(metric_api::ApiSource::starting_at(Box::new(api), self.shared(), time0)?))
    }
}

/// graphite-web's render API.
struct GraphiteApi {
    endpoint: metric_api::Endpoint,
}

#[async_trait]
impl MetricApi for GraphiteApi {
    fn word(&self) -> &'static str {
        "graphite"
    }

    fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Graphite answers the points after `from` up to `until`: asking from
    /// one second before the range gives its first bucket, until one second
    /// before its end leaves out the bucket after it.
    async fn series(&self, http: &reqwest::Client, query: &str, range: Range) -> Result<Vec<Points>, QueryError> {
        let params = [
            ("target", query.to_string()),
            ("from", (range.from - 1).to_string()),
            ("until", (range.to - 1).to_string()),
            ("format", "json".to_string()),
        ];
        let resp = self.endpoint.get(http, "/render").query(&params).send().await;
        let resp = resp.map_err(|e| metric_api::unreachable(e, &self.endpoint.url))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            // graphite-web's error pages are text or HTML: their first line says enough.
            let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(300);
            return Err(metric_api::status_error(status, &first.collect::<String>()));
        }
        let body: serde_json::Value =
            resp.json().await.map_err(|e| QueryError::Unreachable(format!("{status}: {}", e.without_url())))?;
        let all = body.as_array().map(Vec::as_slice).unwrap_or_default();
        let one = |s: &serde_json::Value| -> Points {
            let points = s["datapoints"].as_array().map(Vec::as_slice).unwrap_or_default();
            points.iter().filter_map(|p| Some((p[1].as_f64()?, p[0].as_f64()))).collect()
        };
        Ok(all.iter().map(one).collect())
    }

    /// `GET /version`: graphite-web's version.
    async fn probe(&self, http: &reqwest::Client) -> Result<String, String> {
        let resp =
            self.endpoint.get(http, "/version").send().await.map_err(|e| crate::error::chain(&e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("/version answered {}", resp.status()));
        }
        let text = resp.text().await.map_err(|e| crate::error::chain(&e.without_url()))?;
        let version = text.trim();
        let looks_like_one =
            !version.is_empty() && version.len() < 40 && version.chars().all(|c| c.is_ascii_digit() || c == '.');
        if !looks_like_one {
            return Err("/version did not answer a version: not graphite-web".into());
        }
        Ok(format!("graphite-web {version}"))
    }
}
