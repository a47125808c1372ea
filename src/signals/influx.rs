//! InfluxDB 1.x (InfluxQL over `GET /query`). `{{ time_filter }}` becomes
//! the range's time condition and `{{ step }}` the step (`10s`, for `GROUP BY
//! time({{ step }})`); both are required. A query InfluxDB refuses (HTTP 400,
//! or 200 with the statement's `error`) is that metric missing.

use async_trait::async_trait;

use super::metric_api::{self, MetricApi, Points, QueryError, Range, api_source_config};
use super::prometheus::PromAuth;
use super::{SignalError, SignalSource};
use crate::field::FieldError;

api_source_config! {
    /// An InfluxDB 1.x source as configured.
    pub struct InfluxConfig {
        /// Base URL, e.g. `http://influxdb:8086` (credentials never here: `auth`).
        pub url: String,
        /// The database queries run in (`db`).
        pub database: String,
        /// Credentials (InfluxDB 1.x takes HTTP Basic), read from the environment at start.
        #[serde(default)]
        pub auth: Option<PromAuth>,
    }
}

/// What every InfluxQL template must contain.
const REQUIRED: &[&str] = &["{{ time_filter }}", "GROUP BY time({{ step }})"];

impl InfluxConfig {
    /// Fields against their bounds, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::field::http_url("url", &self.url)?;
        if self.database.trim().is_empty() {
            return Err(FieldError::of("database".into(), "the name of a database".into()));
        }
        self.shared().validate(REQUIRED)
    }

    /// The running source, its windows at `time0`.
    pub fn source(&self, time0: super::TimeZero) -> Result<Box<dyn SignalSource>, SignalError> {
        let api = InfluxApi {
            endpoint: metric_api::Endpoint::new("influxdb", &self.url, self.auth.as_ref())?,
            database: self.database.clone(),
        };
        Ok(Box::new(metric_api::ApiSource::starting_at(Box::new(api), self.shared(), time0)?))
    }
}

/// InfluxDB 1.x's query API.
struct InfluxApi {
    endpoint: metric_api::Endpoint,
    database: String,
}

#[async_trait]
impl MetricApi for InfluxApi {
    fn word(&self) -> &'static str {
        "influxdb"
    }

    fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn time_filter(&self, range: Range) -> String {
        format!("time >= {}s AND time < {}s", range.from, range.to)
    }

    fn required(&self) -> &'static [&'static str] {
        REQUIRED
    }

    async fn series(&self, http: &reqwest::Client, query: &str, _range: Range) -> Result<Vec<Points>, QueryError> {
        let params = [("db", self.database.as_str()), ("q", query), ("epoch", "s")];
        let resp = self
            .endpoint
            .get(http, "/query")
            .query(&params)
            .send()
            .await
            .map_err(|e| metric_api::unreachable(e, &self.endpoint.url))?;
        let status = resp.status();
        if status.is_server_error() || matches!(status.as_u16(), 401 | 403) {
            return Err(metric_api::status_error(status, "/query"));
        }
        let body: serde_json::Value =
            resp.json().await.map_err(|e| QueryError::Unreachable(format!("{status}: {}", e.without_url())))?;
        let refused = body["error"].as_str().or_else(|| body["results"][0]["error"].as_str());
        if let Some(why) = refused {
            return Err(metric_api::status_error(status, why));
        }
        let all = body["results"][0]["series"].as_array().map(Vec::as_slice).unwrap_or_default();
        let one = |s: &serde_json::Value| -> Points {
            let rows = s["values"].as_array().map(Vec::as_slice).unwrap_or_default();
            rows.iter().filter_map(|r| Some((r[0].as_f64()?, r[1].as_f64()))).collect()
        };
        Ok(all.iter().map(one).collect())
    }

    /// `GET /ping`: the version InfluxDB states in `X-Influxdb-Version`.
    async fn probe(&self, http: &reqwest::Client) -> Result<String, String> {
        let resp = self.endpoint.get(http, "/ping").send().await.map_err(|e| crate::error::chain(&e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("/ping answered {}", resp.status()));
        }
        let version = resp.headers().get("X-Influxdb-Version").and_then(|v| v.to_str().ok());
        let version = version.ok_or("no X-Influxdb-Version header: not an InfluxDB 1.x")?;
        Ok(format!("InfluxDB {version}"))
    }
}
