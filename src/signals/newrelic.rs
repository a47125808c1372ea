//! New Relic through NerdGraph (`POST /graphql`, an NRQL query in an
//! account). The template is NRQL with `{{ time_filter }}` (it becomes
//! `SINCE … UNTIL …`) and `TIMESERIES {{ step }}` (`10 seconds`), both
//! required; each bucket's value is the result field named `value` (write
//! `SELECT … AS value`) or the one numeric field beside the bucket's times.
//! The user key travels in the `API-Key` header, read from the environment at
//! start. A rejected key or a 5xx holds; an answer with `errors` is the query
//! refused.

use async_trait::async_trait;

use super::metric_api::{self, MetricApi, Points, QueryError, Range, api_source_config};
use super::{SignalError, SignalSource};
use crate::field::FieldError;

api_source_config! {
    /// A New Relic source as configured.
    pub struct NewRelicConfig {
        /// The NerdGraph endpoint (`https://api.eu.newrelic.com/graphql` in the EU region).
        #[serde(default = "default_url")]
        pub url: String,
        /// The account the NRQL runs in.
        pub account_id: u64,
        /// Variable holding a user API key (`NRAK-…`).
        #[serde(default = "default_api_key_env")]
        pub api_key_env: String,
    }
}

fn default_url() -> String {
    "https://api.newrelic.com/graphql".into()
}

fn default_api_key_env() -> String {
    "NEW_RELIC_API_KEY".into()
}

/// What every NRQL template must contain.
const REQUIRED: &[&str] = &["{{ time_filter }}", "TIMESERIES {{ step }}"];

/// The NRQL query, with the account and the query as GraphQL variables (never spliced into the document).
const NRQL: &str =
    "query($account: Int!, $nrql: Nrql!) { actor { account(id: $account) { nrql(query: $nrql) { results } } } }";

/// The account's name: reachable, the key taken, the account readable.
const ACCOUNT: &str = "query($account: Int!) { actor { account(id: $account) { name } } }";

impl NewRelicConfig {
    /// Fields against their bounds, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::field::http_url("url", &self.url)?;
        if self.account_id == 0 || self.account_id > i32::MAX as u64 {
            return Err(FieldError::of("account_id".into(), "a New Relic account id (1 to 2147483647)".into()));
        }
        self.shared().validate(REQUIRED)
    }

    /// The running source, its windows at `time0`.
    pub fn source(&self, time0: super::TimeZero) -> Result<Box<dyn SignalSource>, SignalError> {
        let key = metric_api::secret_header("api_key_env", &self.api_key_env).map_err(|source| SignalError::Setup {
            source_name: format!("newrelic {}", crate::secret::redact_url(&self.url)),
            source,
        })?;
        let api = NewRelicApi { url: self.url.clone(), account_id: self.account_id, key };
        Ok(Box::new(metric_api::ApiSource::starting_at(Box::new(api), self.shared(), time0)?))
    }
}

/// One NerdGraph request: the document and its variables (never spliced into it).
#[derive(serde::Serialize)]
struct GraphQl<'a> {
    query: &'a str,
    variables: Variables<'a>,
}

/// The variables the two documents take.
#[derive(serde::Serialize)]
struct Variables<'a> {
    account: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nrql: Option<&'a str>,
}

/// New Relic's NerdGraph API.
struct NewRelicApi {
    url: String,
    account_id: u64,
    key: reqwest::header::HeaderValue,
}

impl NewRelicApi {
    /// One GraphQL request: `data`, or why there is none.
    async fn ask(
        &self,
        http: &reqwest::Client,
        document: &str,
        nrql: Option<&str>,
    ) -> Result<serde_json::Value, QueryError> {
        let body = GraphQl { query: document, variables: Variables { account: self.account_id, nrql } };
        let resp = http.post(&self.url).header("API-Key", self.key.clone()).json(&body).send().await;
        let resp = resp.map_err(|e| metric_api::unreachable(e, &self.url))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let errors = body["errors"].as_array().map(Vec::as_slice).unwrap_or_default();
        let why = errors.iter().map(|e| e["message"].as_str().unwrap_or("?")).collect::<Vec<_>>().join("; ");
        // NerdGraph answers 200 for most errors; their class says whether the query or the service failed.
        let down = errors.iter().any(|e| {
            matches!(
                e["extensions"]["errorClass"].as_str(),
                Some("SERVER_ERROR" | "TIMEOUT" | "UNAUTHORIZED" | "FORBIDDEN")
            )
        });
        match (errors.is_empty(), down) {
            (false, true) => {
                Err(QueryError::Unreachable(format!("{status}: {}", crate::field::strip_unsafe(&why, false))))
            }
            (false, false) => Err(metric_api::status_error(status, &why)),
            (true, _) if !status.is_success() => Err(metric_api::status_error(status, "")),
            (true, _) => Ok(body["data"].clone()),
        }
    }
}

/// A bucket's value: its `value` field, or its one numeric field beside the times.
fn value_of(row: &serde_json::Value) -> Option<f64> {
    if let Some(v) = row.get("value") {
        return v.as_f64();
    }
    let fields = row.as_object()?;
    let mut others = fields.iter().filter(|(k, _)| !matches!(k.as_str(), "beginTimeSeconds" | "endTimeSeconds"));
    match (others.next(), others.next()) {
        (Some((_, v)), None) => v.as_f64(),
        _ => None,
    }
}

#[async_trait]
impl MetricApi for NewRelicApi {
    fn word(&self) -> &'static str {
        "newrelic"
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn step_text(&self, step_s: u32) -> String {
        format!("{step_s} seconds")
    }

    fn time_filter(&self, range: Range) -> String {
        format!("SINCE {} UNTIL {}", range.from, range.to)
    }

    fn required(&self) -> &'static [&'static str] {
        REQUIRED
    }

    /// One series (NRQL's `TIMESERIES` without `FACET`); a bucket whose value
    /// cannot be told is missing.
    async fn series(&self, http: &reqwest::Client, query: &str, _range: Range) -> Result<Vec<Points>, QueryError> {
        let data = self.ask(http, NRQL, Some(query)).await?;
        let results = &data["actor"]["account"]["nrql"]["results"];
        let Some(rows) = results.as_array() else {
            return Err(QueryError::Refused("the answer holds no NRQL results".into()));
        };
        if rows.iter().any(|r| r.get("facet").is_some()) {
            return Err(QueryError::Refused("a FACET query answers several series; aggregate to one".into()));
        }
        let points = rows.iter().filter_map(|r| Some((r["beginTimeSeconds"].as_f64()?, value_of(r))));
        Ok(vec![points.collect()])
    }

    async fn probe(&self, http: &reqwest::Client) -> Result<String, String> {
        let data = self.ask(http, ACCOUNT, None).await;
        let data = data.map_err(|(QueryError::Unreachable(e) | QueryError::Refused(e))| e)?;
        let name = data["actor"]["account"]["name"].as_str().ok_or("no account in the answer")?;
        Ok(format!("New Relic account {} ({})", self.account_id, crate::field::strip_unsafe(name, false)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::value_of;

    #[test]
    fn a_buckets_value_is_its_value_field_or_its_one_number() {
        assert_eq!(value_of(&json!({ "beginTimeSeconds": 1, "endTimeSeconds": 2, "value": 0.5 })), Some(0.5));
        assert_eq!(value_of(&json!({ "beginTimeSeconds": 1, "endTimeSeconds": 2, "count": 7 })), Some(7.0));
        assert_eq!(value_of(&json!({ "beginTimeSeconds": 1, "endTimeSeconds": 2, "a": 1, "b": 2 })), None);
        assert_eq!(value_of(&json!({ "beginTimeSeconds": 1, "endTimeSeconds": 2, "value": null })), None);
    }
}
