//! Datadog (`GET /api/v1/query`, "Query timeseries points"). The query is
//! Datadog's metric query language; `{{ step }}` becomes the step in seconds
//! for `.rollup(avg, {{ step }})`, so one point per step comes back. The keys
//! travel in the `DD-API-KEY` and `DD-APPLICATION-KEY` headers, read from
//! the environment at start. A rejected key, a rate limit (429) or a 5xx is
//! a source failure (the release holds); a 400 or an answer with
//! `status: "error"` is the query refused.

use async_trait::async_trait;

use super::metric_api::{self, MetricApi, Points, QueryError, Range, api_source_config};
use super::{SignalError, SignalSource};
use crate::field::FieldError;

api_source_config! {
    /// A Datadog source as configured.
    pub struct DatadogConfig {
        /// The API host of your Datadog site (`https://api.datadoghq.eu`, …).
        #[serde(default = "default_url")]
        pub url: String,
        /// Variable holding the API key (`DD-API-KEY`).
        #[serde(default = "default_api_key_env")]
        pub api_key_env: String,
        /// Variable holding the application key (`DD-APPLICATION-KEY`), which
        /// needs the `timeseries_query` permission.
        #[serde(default = "default_app_key_env")]
        pub app_key_env: String,
    }
}

fn default_url() -> String {
    "https://api.datadoghq.com".into()
}

fn default_api_key_env() -> String {
    "DD_API_KEY".into()
}

fn default_app_key_env() -> String {
    "DD_APP_KEY".into()
}

impl DatadogConfig {
    /// Fields against their bounds, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::field::http_url("url", &self.url)?;
        self.shared().validate(&[])
    }

    /// The running source, its windows at `time0`.
    pub fn source(&self, time0: super::TimeZero) -> Result<Box<dyn SignalSource>, SignalError> {
        let setup = |source| SignalError::Setup {
            source_name: format!("datadog {}", crate::secret::redact_url(&self.url)),
            source,
        };
        let api_key = metric_api::secret_header("api_key_env", &self.api_key_env).map_err(setup)?;
        let app_key = metric_api::secret_header("app_key_env", &self.app_key_env).map_err(setup)?;
        let api = DatadogApi { url: self.url.clone(), api_key, app_key };
        Ok(Box::new(metric_api::ApiSource::starting_at(Box::new(api), self.shared(), time0)?))
    }
}

/// Datadog's v1 metrics API.
struct DatadogApi {
    url: String,
    api_key: reqwest::header::HeaderValue,
    app_key: reqwest::header::HeaderValue,
}

impl DatadogApi {
    /// A GET with both keys.
    fn get(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        http.get(format!("{}{path}", self.url.trim_end_matches('/')))
            .header("DD-API-KEY", self.api_key.clone())
            .header("DD-APPLICATION-KEY", self.app_key.clone())
    }
}

/// The error text of a Datadog answer: `error` or the `errors` list.
fn error_text(body: &serde_json::Value) -> Option<String> {
    if let Some(e) = body["error"].as_str().filter(|e| !e.is_empty()) {
        return Some(e.to_string());
    }
    let errors = body["errors"].as_array()?;
    Some(errors.iter().map(|e| e.as_str().unwrap_or("?")).collect::<Vec<_>>().join("; "))
}

#[async_trait]
impl MetricApi for DatadogApi {
    fn word(&self) -> &'static str {
        "datadog"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn step_text(&self, step_s: u32) -> String {
        step_s.to_string()
    }

    /// `to` is the last second asked for: Datadog's range is inclusive.
    async fn series(&self, http: &reqwest::Client, query: &str, range: Range) -> Result<Vec<Points>, QueryError> {
        let params =
            [("from", range.from.to_string()), ("to", (range.to - 1).to_string()), ("query", query.to_string())];
        let resp = self.get(http, "/api/v1/query").query(&params).send().await;
        let resp = resp.map_err(|e| metric_api::unreachable(e, &self.url))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() || body["status"] == "error" {
            return Err(metric_api::status_error(status, &error_text(&body).unwrap_or_default()));
        }
        let all = body["series"].as_array().map(Vec::as_slice).unwrap_or_default();
        let one = |s: &serde_json::Value| -> Points {
            let points = s["pointlist"].as_array().map(Vec::as_slice).unwrap_or_default();
            points.iter().filter_map(|p| Some((p[0].as_f64()? / 1000.0, p[1].as_f64()))).collect()
        };
        Ok(all.iter().map(one).collect())
    }

    /// `GET /api/v1/validate`: whether Datadog takes the API key (it states no version).
    async fn probe(&self, http: &reqwest::Client) -> Result<String, String> {
        let resp =
            self.get(http, "/api/v1/validate").send().await.map_err(|e| crate::error::chain(&e.without_url()))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() || body["valid"] != true {
            let why = error_text(&body).unwrap_or_default();
            return Err(format!("/api/v1/validate answered {status} {}", crate::field::strip_unsafe(&why, false)));
        }
        Ok("Datadog took the API key".into())
    }
}
