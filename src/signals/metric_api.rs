//! What every metric backend beyond Prometheus shares: per-side query
//! templates run over the window so far, samples bucketed by step, the
//! baseline either beside the canary (a label value) or an earlier window of
//! the service, and the same failure meanings as Prometheus — gaps and nulls
//! are missing samples, a query the backend refuses is that metric missing
//! (and fails `config check`), a backend that cannot be reached, answers 5xx
//! or refuses the credentials is a source failure: the release holds.
//!
//! A backend ([`MetricApi`]) says only how one query over a time range is
//! asked and how its answer is read; [`ApiSource`] does the rest, once.

use std::time::Duration;

use async_trait::async_trait;

use super::prometheus::{PromBaseline, PromMetric, baseline_kind_of, baseline_offset_of};
use super::{MetricSeries, MetricSpec, Observation, Side, SignalError, SignalSource, Traffic};
use crate::field::FieldError;

/// A time range asked of a backend: unix seconds, `from` inclusive, `to`
/// exclusive, in buckets of `step_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First second of the first bucket.
    pub from: i64,
    /// First second after the last bucket.
    pub to: i64,
    /// Seconds per bucket.
    pub step_s: u32,
}

/// Why one query gave no data.
#[derive(Debug)]
pub enum QueryError {
    /// The backend could not be reached, answered 5xx or refused the
    /// credentials: the whole source is down.
    Unreachable(String),
    /// The backend refused the query itself: that metric is missing.
    Refused(String),
}

/// One series: `(unix seconds of the bucket's start, value)`; `None` is a null.
pub type Points = Vec<(f64, Option<f64>)>;

/// How one metric backend is asked.
#[async_trait]
pub trait MetricApi: Send + Sync {
    /// The word in names and errors (`datadog`).
    fn word(&self) -> &'static str;
    /// The base URL (shown redacted).
    fn url(&self) -> &str;
    /// What `{{ step }}` becomes for a step of `step_s` seconds.
    fn step_text(&self, step_s: u32) -> String {
        format!("{step_s}s")
    }
    /// What `{{ time_filter }}` becomes, for languages that carry the range
    /// inside the query (InfluxQL, NRQL); empty for APIs that take it as parameters.
    fn time_filter(&self, _range: Range) -> String {
        String::new()
    }
    /// Text every query template must contain, with what it is for.
    fn required(&self) -> &'static [&'static str] {
        &[]
    }
    /// One query over `range`: each series the backend answered.
    async fn series(&self, http: &reqwest::Client, query: &str, range: Range) -> Result<Vec<Points>, QueryError>;
    /// Reach the backend without querying anything: what it says it is.
    async fn probe(&self, http: &reqwest::Client) -> Result<String, String>;
}

/// The settings every backend's source shares (configured beside the backend's own).
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    /// The baseline: a label value beside the canary, or an earlier window.
    pub baseline: PromBaseline,
    /// What `{{ side }}` becomes for the canary.
    pub canary: String,
    /// Seconds between samples.
    pub step_s: u32,
    /// Analysis window, seconds.
    pub duration_s: u64,
    /// Seconds per HTTP request.
    pub timeout_s: u64,
    /// Template for the requests a side served per step.
    pub traffic: Option<String>,
    /// The metrics.
    pub metrics: Vec<PromMetric>,
}

/// A backend's source config: the backend's own settings beside [`Shared`]
/// ones. The shared fields are written out in each config (serde's `flatten`
/// cannot be combined with `deny_unknown_fields`), once, by this macro.
macro_rules! api_source_config {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// The baseline: the value `{{ side }}` takes for the stable
            /// version serving now (a canary), or an earlier window of the
            /// service (`{ kind = "preceding" | "seasonal", offset = "1d" }`).
            pub baseline: $crate::signals::PromBaseline,
            /// What `{{ side }}` becomes for the canary.
            pub canary: String,
            /// Seconds between samples.
            #[serde(default = "crate::signals::metric_api::default_step")]
            pub step_s: u32,
            /// Analysis window, seconds.
            #[serde(default = "crate::signals::metric_api::default_duration")]
            pub duration_s: u64,
            /// Seconds per HTTP request.
            #[serde(default = "crate::signals::metric_api::default_timeout")]
            pub timeout_s: u64,
            /// Optional template for the requests a side served per step
            /// (turns on the traffic-aware test for `ratio` metrics).
            #[serde(default)]
            pub traffic: Option<String>,
            /// The metrics: query templates with `{{ side }}`.
            pub metrics: Vec<$crate::signals::PromMetric>,
        }

        impl $name {
            /// The settings every backend shares.
            pub fn shared(&self) -> $crate::signals::metric_api::Shared {
                $crate::signals::metric_api::Shared {
                    baseline: self.baseline.clone(),
                    canary: self.canary.clone(),
                    step_s: self.step_s,
                    duration_s: self.duration_s,
                    timeout_s: self.timeout_s,
                    traffic: self.traffic.clone(),
                    metrics: self.metrics.clone(),
                }
            }
        }
    };
}
pub(crate) use api_source_config;

pub(crate) fn default_step() -> u32 {
    10
}

pub(crate) fn default_duration() -> u64 {
    1800
}

pub(crate) fn default_timeout() -> u64 {
    10
}

impl Shared {
    /// The shared fields against their bounds, and every template holding
    /// what the backend needs (`required`).
    pub fn validate(&self, required: &[&str]) -> Result<(), FieldError> {
        if self.step_s == 0 {
            return Err(FieldError::of("step_s".into(), "seconds > 0".into()));
        }
        if self.duration_s < u64::from(self.step_s) {
            return Err(FieldError::of("duration_s".into(), "seconds ≥ step_s".into()));
        }
        if self.metrics.is_empty() {
            return Err(FieldError::of("metrics".into(), "at least one metric".into()));
        }
        let templates = self.metrics.iter().enumerate().map(|(i, m)| (format!("metrics[{i}].query"), &m.query));
        for (field, query) in templates.chain(self.traffic.iter().map(|t| ("traffic".to_string(), t))) {
            if let Some(needed) = required.iter().find(|r| !query.contains(*r)) {
                return Err(FieldError::of(field, format!("a query template containing `{needed}`")));
            }
        }
        baseline_offset_of(&self.baseline, self.duration_s).map(|_| ())
    }
}

/// A release's metrics read from one backend; t = 0 is when the source was built.
pub struct ApiSource {
    api: Box<dyn MetricApi>,
    cfg: Shared,
    /// Seconds the baseline's window lies before the canary's (0: concurrent).
    offset_s: u64,
    time0: super::TimeZero,
    http: reqwest::Client,
}

impl ApiSource {
    /// A source whose windows lie at `time0`.
    pub fn starting_at(api: Box<dyn MetricApi>, cfg: Shared, time0: super::TimeZero) -> Result<Self, SignalError> {
        let setup = |e: Box<dyn std::error::Error + Send + Sync>| SignalError::Setup {
            source_name: format!("{} {}", api.word(), crate::secret::redact_url(api.url())),
            source: e,
        };
        let offset_s = baseline_offset_of(&cfg.baseline, cfg.duration_s).map_err(|e| setup(Box::new(e)))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s.max(1)))
            .build()
            .map_err(|e| setup(Box::new(e)))?;
        Ok(Self { api, cfg, offset_s, time0, http })
    }

    fn shown(&self) -> String {
        format!("{} {}", self.api.word(), crate::secret::redact_url(self.api.url()))
    }

    /// The `len` buckets of a side's window, starting `back_s` before the release.
    fn range(&self, len: usize, back_s: u64) -> Range {
        let from = self.time0.origin(back_s).floor() as i64;
        let step_s = self.cfg.step_s;
        Range { from, to: from + i64::from(step_s) * len as i64, step_s }
    }

    fn render(&self, template: &str, side: Side, range: Range) -> String {
        let label = match (side, &self.cfg.baseline) {
            (Side::Baseline, PromBaseline::Label(l)) => l,
            (Side::Baseline, PromBaseline::Window(w)) => w.label.as_ref().unwrap_or(&self.cfg.canary),
            (Side::Canary, _) => &self.cfg.canary,
        };
        template
            .replace("{{ side }}", label)
            .replace("{{ step }}", &self.api.step_text(self.cfg.step_s))
            .replace("{{ time_filter }}", &self.api.time_filter(range))
    }

    /// One side's `len` samples, or why there are none.
    async fn side(&self, template: &str, side: Side, len: usize, back_s: u64) -> Result<Vec<Option<f64>>, QueryError> {
        let range = self.range(len, back_s);
        let q = self.render(template, side, range);
        let series = self.api.series(&self.http, &q, range).await?;
        match series.as_slice() {
            [] => Ok(vec![None; len]),
            [one] => Ok(bucketed(one, range, len)),
            more => Err(QueryError::Refused(format!("{} series answered; aggregate to one", more.len()))),
        }
    }

    /// Both sides: the canary's `n` samples so far; the baseline's as many
    /// for a concurrent one, the whole earlier window otherwise. A refused
    /// query leaves its side missing; a backend that is down fails the source.
    async fn both(&self, template: &str, n: usize) -> Result<[Vec<Option<f64>>; 2], SignalError> {
        let whole = (self.cfg.duration_s / u64::from(self.cfg.step_s)) as usize;
        let baseline_n = if self.offset_s == 0 { n } else { whole };
        let mut sides = [vec![None; baseline_n], vec![None; n]];
        for (k, (side, len, back)) in
            [(Side::Baseline, baseline_n, self.offset_s), (Side::Canary, n, 0)].into_iter().enumerate()
        {
            if len == 0 {
                continue;
            }
            match self.side(template, side, len, back).await {
                Ok(s) => sides[k] = s,
                Err(QueryError::Refused(e)) => {
                    tracing::warn!(source = %self.shown(), error = %e, "Query refused; its samples are missing.");
                }
                Err(QueryError::Unreachable(reason)) => {
                    return Err(SignalError::Unavailable { source_name: self.shown(), reason });
                }
            }
        }
        Ok(sides)
    }
}

/// Sample `i` is the point whose bucket starts at `range.from + i × step`;
/// nulls, non-finite values and points outside the window are missing.
pub(crate) fn bucketed(points: &Points, range: Range, len: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; len];
    let step = f64::from(range.step_s);
    for (t, v) in points {
        let Some(v) = v.filter(|v| v.is_finite()) else { continue };
        // Kept in f64 until range-checked: an absurd timestamp lands outside, never wraps.
        let i = ((t - range.from as f64) / step).round();
        if i >= 0.0 && i < len as f64 {
            out[i as usize] = Some(v);
        }
    }
    out
}

#[async_trait]
impl SignalSource for ApiSource {
    fn name(&self) -> String {
        format!("{}:{}", self.api.word(), crate::secret::redact_url(self.api.url()))
    }

    async fn probe(&self) -> Result<String, SignalError> {
        let said = self.api.probe(&self.http).await;
        let said = said.map_err(|reason| SignalError::Unavailable { source_name: self.shown(), reason })?;
        Ok(format!("{}: {said}", self.shown()))
    }

    /// Each template for both sides over the first step, once: a refused one names its metric.
    async fn check_queries(&self) -> Result<(), SignalError> {
        let metrics = self.cfg.metrics.iter().map(|m| (m.name.as_str(), m.query.as_str()));
        for (metric, template) in metrics.chain(self.cfg.traffic.as_deref().map(|t| ("traffic", t))) {
            for (side, back) in [(Side::Baseline, self.offset_s), (Side::Canary, 0)] {
                if let Err(QueryError::Refused(reason)) = self.side(template, side, 1, back).await {
                    return Err(SignalError::BadQuery {
                        source_name: self.shown(),
                        metric: metric.to_string(),
                        query: self.render(template, side, self.range(1, back)),
                        reason: crate::field::strip_unsafe(&reason, false).into_owned(),
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
            let [baseline, canary] = self.both(&m.query, n).await?;
            let spec = MetricSpec { name: m.name.clone(), unit: m.unit.clone(), bad_direction: m.bad_direction };
            metrics.push(MetricSeries { spec, baseline, canary });
        }
        let traffic = match &self.cfg.traffic {
            Some(t) => {
                let [b, c] = self.both(t, n).await?;
                let count =
                    |v: Vec<Option<f64>>| v.into_iter().map(|x| x.unwrap_or(0.0).max(0.0).round() as u64).collect();
                Some(Traffic { baseline: count(b), canary: count(c) })
            }
            None => None,
        };
        Ok(Observation {
            service: self.api.word().into(),
            step_s: self.cfg.step_s,
            duration_s: self.cfg.duration_s,
            now_s,
            baseline_kind: baseline_kind_of(&self.cfg.baseline),
            traffic,
            metrics,
            logs: vec![],
            events: vec![],
            ml: Default::default(),
        })
    }
}

/// An answer that carries an error, by its HTTP status: 5xx, 401, 403, 429
/// and redirects mean nothing can be read now (the source is down, it
/// holds); any other status (400, 422, a 200 carrying an error) is the query refused.
pub(crate) fn status_error(status: reqwest::StatusCode, why: &str) -> QueryError {
    let text = format!("{status}: {}", crate::field::strip_unsafe(why, false));
    let down = status.is_server_error() || status.is_redirection() || matches!(status.as_u16(), 401 | 403 | 429);
    if down { QueryError::Unreachable(text) } else { QueryError::Refused(text) }
}

/// A base URL and the optional credential (`auth`) every request to it carries.
pub(crate) struct Endpoint {
    pub url: String,
    credential: Option<super::Credential>,
}

impl Endpoint {
    /// The endpoint of the backend `word` at `url`, its credential read from the environment now.
    pub fn new(word: &str, url: &str, auth: Option<&super::PromAuth>) -> Result<Self, SignalError> {
        let credential = match auth {
            None => None,
            Some(a) => Some(a.resolve().map_err(|e| SignalError::Setup {
                source_name: format!("{word} {}", crate::secret::redact_url(url)),
                source: Box::new(e),
            })?),
        };
        Ok(Self { url: url.to_string(), credential })
    }

    /// A GET of `path` under the URL, with the credential.
    pub fn get(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        let rb = http.get(format!("{}{path}", self.url.trim_end_matches('/')));
        match &self.credential {
            Some(c) => c.apply(rb),
            None => rb,
        }
    }
}

/// A credential from the environment variable `var` named by the setting `field`.
pub(crate) fn secret(field: &'static str, var: &str) -> Result<String, super::UnsetVariable> {
    crate::secret::from_env(var).map_err(|_| super::UnsetVariable { field, var: var.to_string() })
}

/// A credential from the environment as a header value, marked sensitive so
/// no log or debug print shows it.
pub(crate) fn secret_header(
    field: &'static str,
    var: &str,
) -> Result<reqwest::header::HeaderValue, Box<dyn std::error::Error + Send + Sync>> {
    let value = secret(field, var)?;
    let mut h = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| {
        FieldError::of(field.into(), format!("variable `{var}` holding a key of visible ASCII characters"))
    })?;
    h.set_sensitive(true);
    Ok(h)
}

/// reqwest's error without its URL (which may carry credentials), with the redacted one.
pub(crate) fn unreachable(e: reqwest::Error, url: &str) -> QueryError {
    QueryError::Unreachable(format!("{} ({})", crate::error::chain(&e.without_url()), crate::secret::redact_url(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_in_their_buckets_and_nulls_and_strays_are_missing() {
        let range = Range { from: 1000, to: 1040, step_s: 10 };
        let points = vec![
            (1000.0, Some(1.0)),
            (1010.0, None),
            (1020.0, Some(f64::NAN)),
            (1030.0, Some(4.0)),
            (1040.0, Some(5.0)),
            (-4.3e130, Some(6.0)),
            (990.0, Some(7.0)),
        ];
        assert_eq!(bucketed(&points, range, 4), vec![Some(1.0), None, None, Some(4.0)]);
    }

    #[test]
    fn statuses_that_stop_every_query_hold_and_the_rest_refuse_the_query() {
        use reqwest::StatusCode;
        for down in [500, 502, 503, 401, 403, 429] {
            let e = status_error(StatusCode::from_u16(down).unwrap(), "x");
            assert!(matches!(e, QueryError::Unreachable(_)), "{down}");
        }
        for refused in [200, 400, 404, 422] {
            let e = status_error(StatusCode::from_u16(refused).unwrap(), "x");
            assert!(matches!(e, QueryError::Refused(_)), "{refused}");
        }
    }
}
