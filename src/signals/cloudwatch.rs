//! Amazon CloudWatch (`GetMetricData` through CloudWatch's Query API: a
//! form POST, signed with Signature Version 4, answered in XML). The
//! template is one metric-math or Metrics Insights expression with `{{ side
//! }}`; the step is the query's `Period`, so it must be one CloudWatch
//! accepts (1, 5, 10, 30 or a multiple of 60 seconds). Credentials come
//! from the standard variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN` when set), read at start, else from a web identity or
//! the instance profile (`aws`), renewed before they expire; a
//! fetch that fails is a source failure that holds. Signing is aws-sigv4's,
//! AWS's own crate. A rejected signature or key (403), throttling or a 5xx
//! is a source failure that holds; any other error answer is the query refused.

use std::sync::Arc;

use async_trait::async_trait;

use super::aws::{KeyVars, Origin, Provider, sign_post};
use super::metric_api::{self, MetricApi, Points, QueryError, Range, api_source_config};
use super::{SignalError, SignalSource};
use crate::clock::Clock;
use crate::field::FieldError;

api_source_config! {
    /// An Amazon CloudWatch source as configured.
    pub struct CloudWatchConfig {
        /// The region (`eu-west-1`): it picks the endpoint and signs the request.
        pub region: String,
        /// The endpoint, when not `https://monitoring.REGION.amazonaws.com`
        /// (a VPC endpoint, a FIPS endpoint).
        #[serde(default)]
        pub url: Option<String>,
        /// Variable holding the access key id.
        #[serde(default = "default_key_id_env")]
        pub access_key_id_env: String,
        /// Variable holding the secret access key.
        #[serde(default = "default_secret_env")]
        pub secret_access_key_env: String,
        /// Variable holding a session token, used when set (temporary credentials).
        #[serde(default = "default_token_env")]
        pub session_token_env: String,
    }
}

fn default_key_id_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

fn default_token_env() -> String {
    "AWS_SESSION_TOKEN".into()
}

/// Error codes that mean nothing can be read now, whatever the query.
const DOWN_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestExpired",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ServiceUnavailable",
    "InternalFailure",
];

impl CloudWatchConfig {
    /// The endpoint requests go to.
    pub fn endpoint(&self) -> String {
        self.url.clone().unwrap_or_else(|| format!("https://monitoring.{}.amazonaws.com", self.region))
    }

    /// Fields against their bounds, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        let region_ok = !self.region.is_empty()
            && self.region.len() <= 32
            && self.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(FieldError::of("region".into(), "an AWS region such as `eu-west-1`".into()));
        }
        if let Some(url) = &self.url {
            crate::field::http_url("url", url)?;
        }
        if !(matches!(self.step_s, 1 | 5 | 10 | 30) || self.step_s.is_multiple_of(60)) {
            let expected = "a CloudWatch period: 1, 5, 10, 30 or a multiple of 60 seconds";
            return Err(FieldError::of("step_s".into(), expected.into()));
        }
        self.shared().validate(&[])
    }

    /// The running source, its windows at `time0`; `clock` dates each
    /// request's signature.
    pub fn source(&self, time0: super::TimeZero, clock: Arc<dyn Clock>) -> Result<Box<dyn SignalSource>, SignalError> {
        let setup = |source: Box<dyn std::error::Error + Send + Sync>| SignalError::Setup {
            source_name: format!("cloudwatch {}", crate::secret::redact_url(&self.endpoint())),
            source,
        };
        let vars = KeyVars {
            key_id: &self.access_key_id_env,
            secret: &self.secret_access_key_env,
            token: &self.session_token_env,
        };
        // Only the keys are secrets (remembered, so no output shows them); a role ARN or an endpoint is not.
        let var = |v: &str| match [vars.key_id, vars.secret, vars.token].contains(&v) {
            true => crate::secret::from_env(v).ok(),
            false => std::env::var(v).ok(),
        };
        let origin = Origin::choose(var, &vars, &self.region).map_err(|e| setup(Box::new(e)))?;
        let credentials = Provider::new(origin, clock.clone());
        let api = CloudWatchApi { url: self.endpoint(), region: self.region.clone(), credentials, clock };
        Ok(Box::new(metric_api::ApiSource::starting_at(Box::new(api), self.shared(), time0)?))
    }
}

/// CloudWatch's Query API.
struct CloudWatchApi {
    url: String,
    region: String,
    credentials: Provider,
    /// The time a signature states; CloudWatch refuses one more than 5 minutes off.
    clock: Arc<dyn Clock>,
}

/// Unix seconds as CloudWatch's ISO 8601 timestamps.
fn iso(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s).map(|t| t.to_string()).unwrap_or_default()
}

impl CloudWatchApi {
    /// One signed `action` with `params`: the answer's status and XML text.
    async fn call(
        &self,
        http: &reqwest::Client,
        action: &str,
        params: &[(String, String)],
    ) -> Result<(reqwest::StatusCode, String), QueryError> {
        let mut form = vec![("Action".to_string(), action.to_string()), ("Version".into(), "2010-08-01".into())];
        form.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&form).map_err(|e| QueryError::Refused(e.to_string()))?;
        let url = format!("{}/", self.url.trim_end_matches('/'));
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let identity =
            self.credentials.identity(http).await.map_err(|e| QueryError::Unreachable(crate::error::chain(&e)))?;
        let scope = (self.region.as_str(), "monitoring");
        let signed = sign_post(&identity, scope, self.clock.now_ms(), &url, (content_type, body.as_bytes()))
            .map_err(|e| QueryError::Unreachable(crate::error::chain(&e)))?;
        let mut rb = http.post(&url).header("content-type", content_type).body(body);
        for (name, value) in signed {
            rb = rb.header(name, value);
        }
        let resp = rb.send().await.map_err(|e| metric_api::unreachable(e, &self.url))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| metric_api::unreachable(e, &self.url))?;
        Ok((status, text))
    }
}

/// An error answer's `Code` and `Message`.
fn error_of(xml: &roxmltree::Document) -> (String, String) {
    let text =
        |name: &str| xml.descendants().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).unwrap_or("").to_string();
    (text("Code"), text("Message"))
}

/// The answer read: the one result's points and the next page's token, or why not.
fn read_answer(status: reqwest::StatusCode, text: &str) -> Result<(Points, Option<String>), QueryError> {
    // An answer that is not CloudWatch's XML at all (a proxy's page): nothing can be read.
    let xml = roxmltree::Document::parse(text)
        .map_err(|e| QueryError::Unreachable(format!("{status}: not CloudWatch's XML ({e})")))?;
    if !status.is_success() {
        let (code, message) = error_of(&xml);
        let why = format!("{code}: {message}");
        return Err(match DOWN_CODES.contains(&code.as_str()) {
            true => QueryError::Unreachable(format!("{status}: {}", crate::field::strip_unsafe(&why, false))),
            false => metric_api::status_error(status, &why),
        });
    }
    let Some(result) = xml.descendants().find(|n| n.has_tag_name("MetricDataResults")) else {
        return Err(QueryError::Refused("the answer holds no MetricDataResults".into()));
    };
    let members: Vec<_> = result.children().filter(|n| n.has_tag_name("member")).collect();
    let [member] = members.as_slice() else {
        return match members.len() {
            0 => Ok((vec![], None)),
            n => Err(QueryError::Refused(format!("{n} results answered; the expression must give one"))),
        };
    };
    let list = |name: &str| -> Vec<String> {
        let node = member.children().find(|n| n.has_tag_name(name));
        let items = node.into_iter().flat_map(|n| n.children().filter(|c| c.has_tag_name("member")));
        items.map(|c| c.text().unwrap_or("").trim().to_string()).collect()
    };
    let times = list("Timestamps");
    let values = list("Values");
    let point = |(t, v): (&String, &String)| {
        let t = t.parse::<jiff::Timestamp>().ok()?.as_second() as f64;
        Some((t, v.parse::<f64>().ok()))
    };
    let points = times.iter().zip(values.iter()).filter_map(point).collect();
    let next = xml.descendants().find(|n| n.has_tag_name("NextToken")).and_then(|n| n.text()).map(str::to_string);
    Ok((points, next))
}

/// Pages read at most per query (a window is far below one page of 100,800 points).
const MAX_PAGES: usize = 10;

#[async_trait]
impl MetricApi for CloudWatchApi {
    fn word(&self) -> &'static str {
        "cloudwatch"
    }

    fn url(&self) -> &str {
        &self.url
    }

    async fn series(&self, http: &reqwest::Client, query: &str, range: Range) -> Result<Vec<Points>, QueryError> {
        let q = "MetricDataQueries.member.1";
        let mut params = vec![
            (format!("{q}.Id"), "backstop".to_string()),
            (format!("{q}.Expression"), query.to_string()),
            (format!("{q}.Period"), range.step_s.to_string()),
            ("StartTime".into(), iso(range.from)),
            ("EndTime".into(), iso(range.to)),
            ("ScanBy".into(), "TimestampAscending".into()),
        ];
        let mut all = Points::new();
        for _ in 0..MAX_PAGES {
            let (status, text) = self.call(http, "GetMetricData", &params).await?;
            let (points, next) = read_answer(status, &text)?;
            all.extend(points);
            match next {
                Some(token) => {
                    params.retain(|(k, _)| k != "NextToken");
                    params.push(("NextToken".into(), token));
                }
                None => break,
            }
        }
        Ok(vec![all])
    }

    /// A signed `ListMetrics` of a namespace nothing publishes to (an empty
    /// page): the region answers and takes the credentials (CloudWatch states no version).
    async fn probe(&self, http: &reqwest::Client) -> Result<String, String> {
        let params = [("Namespace".to_string(), "backstop/probe".to_string())];
        let answer = self.call(http, "ListMetrics", &params).await;
        let (status, text) = answer.map_err(|(QueryError::Unreachable(e) | QueryError::Refused(e))| e)?;
        if !status.is_success() {
            let why = roxmltree::Document::parse(&text).map(|x| error_of(&x)).unwrap_or_default();
            return Err(format!(
                "ListMetrics answered {status} {}: {}",
                why.0,
                crate::field::strip_unsafe(&why.1, false)
            ));
        }
        let from = self.credentials.origin().describe();
        Ok(format!("CloudWatch in {} took the signed request (credentials: {from})", self.region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer from the GetMetricData API reference's example, shortened.
    const ANSWER: &str = r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">
  <GetMetricDataResult>
    <MetricDataResults>
      <member>
        <Timestamps><member>2024-05-01T10:00:00Z</member><member>2024-05-01T10:00:10Z</member></Timestamps>
        <Values><member>0.01</member><member>0.2</member></Values>
        <Label>errors</Label><Id>backstop</Id><StatusCode>Complete</StatusCode>
      </member>
    </MetricDataResults>
    <Messages/>
  </GetMetricDataResult>
  <ResponseMetadata><RequestId>5f3b9a4e-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</GetMetricDataResponse>"#;

    #[test]
    fn an_answer_gives_its_points_and_errors_their_meaning() {
        let (points, next) = read_answer(reqwest::StatusCode::OK, ANSWER).unwrap();
        assert_eq!(points, vec![(1714557600.0, Some(0.01)), (1714557610.0, Some(0.2))]);
        assert_eq!(next, None);
        let error = |code: &str| {
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>m</Message></Error><RequestId>r</RequestId></ErrorResponse>"
            )
        };
        let bad = reqwest::StatusCode::BAD_REQUEST;
        assert!(matches!(read_answer(bad, &error("InvalidParameterValue")), Err(QueryError::Refused(_))));
        assert!(matches!(read_answer(bad, &error("Throttling")), Err(QueryError::Unreachable(_))));
        let forbidden = reqwest::StatusCode::FORBIDDEN;
        assert!(matches!(read_answer(forbidden, &error("SignatureDoesNotMatch")), Err(QueryError::Unreachable(_))));
        assert!(matches!(read_answer(reqwest::StatusCode::OK, "<html>"), Err(QueryError::Unreachable(_))));
    }
}
