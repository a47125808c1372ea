//! Pod logs of both sides through the Kubernetes API
//! (`GET /api/v1/namespaces/{ns}/pods/{name}/log?sinceTime=…&timestamps=true`),
//! with the pods the release's `[pods]` section selects.

use std::str::FromStr;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::reader::{LogBatch, LogReadError, LogReader, RawLine};
use crate::field::FieldError;
use crate::signals::{PodSignalsConfig, Side};

/// `[releases.logs] source = "kubernetes"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodLogsConfig {
    /// Container whose log is read; the API's default (the only container) when absent.
    #[serde(default)]
    pub container: Option<String>,
    /// Bytes read per pod per tick at most (the API's `limitBytes`); default 4 MiB.
    #[serde(default = "default_limit_bytes")]
    pub limit_bytes: i64,
}

fn default_limit_bytes() -> i64 {
    4 << 20
}

impl PodLogsConfig {
    /// The first wrong field and what it should be.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(1024..=(64 << 20)).contains(&self.limit_bytes) {
            return Err(FieldError::of("limit_bytes".into(), "bytes between 1024 and 67108864".into()));
        }
        if self.container.as_ref().is_some_and(|c| c.trim().is_empty()) {
            return Err(FieldError::of(
                "container".into(),
                "a container name, or no `container` for the pod's only one".into(),
            ));
        }
        Ok(())
    }
}

/// Reads pod logs of the selected pods.
pub struct PodLogs {
    pods: PodSignalsConfig,
    cfg: PodLogsConfig,
    client: OnceCell<kube::Client>,
}

impl PodLogs {
    /// Logs of the pods `pods` selects.
    pub fn new(pods: PodSignalsConfig, cfg: PodLogsConfig) -> Self {
        Self { pods, cfg, client: OnceCell::new() }
    }

    async fn api(&self) -> Result<Api<Pod>, LogReadError> {
        let client = self
            .client
            .get_or_try_init(|| crate::k8s::connect(self.pods.kubeconfig.as_deref(), self.pods.context.as_deref()))
            .await
            .map_err(LogReadError::Client)?;
        Ok(Api::namespaced(client.clone(), &self.pods.namespace))
    }
}

#[async_trait]
impl LogReader for PodLogs {
    fn name(&self) -> String {
        format!("pod logs in {}", self.pods.namespace)
    }

    async fn read(&self, side: Side, after_unix_s: f64, until_unix_s: f64) -> Result<LogBatch, LogReadError> {
        let selector = match side {
            Side::Baseline => &self.pods.baseline_selector,
            Side::Canary => &self.pods.canary_selector,
        };
        let api = self.api().await?;
        let list = api.list(&ListParams::default().labels(selector)).await?;
        let params = LogParams {
            container: self.cfg.container.clone(),
            limit_bytes: Some(self.cfg.limit_bytes),
            // Second precision: lines in the same second come again and are filtered by time.
            since_time: jiff::Timestamp::from_second(after_unix_s.floor() as i64).ok(),
            timestamps: true,
            ..LogParams::default()
        };
        let mut batch = LogBatch { lines: vec![], complete_through_unix_s: until_unix_s };
        for pod in &list.items {
            let Some(name) = pod.metadata.name.as_deref() else { continue };
            let text = match api.logs(name, &params).await {
                Ok(t) => t,
                // Gone between the list and the read: its lines went with it.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(e.into()),
            };
            let lines = parse_pod_log(&text);
            // Cut at `limitBytes`: what came is complete only up to its last line.
            if text.len() as i64 >= self.cfg.limit_bytes
                && let Some(last) = lines.last()
            {
                batch.complete_through_unix_s = batch.complete_through_unix_s.min(last.at_unix_s);
            }
            batch.lines.extend(lines);
        }
        batch.lines.sort_by(|a, b| a.at_unix_s.total_cmp(&b.at_unix_s));
        Ok(batch)
    }
}

/// A pod log read with `timestamps=true`: each line is an RFC 3339
/// timestamp, a space, and the line. Lines without one (a cut last line)
/// are skipped. Pure.
pub fn parse_pod_log(text: &str) -> Vec<RawLine> {
    text.lines()
        .filter_map(|line| {
            let (stamp, message) = line.split_once(' ')?;
            let t = jiff::Timestamp::from_str(stamp).ok()?;
            let at_unix_s = t.as_second() as f64 + f64::from(t.subsec_nanosecond()) / 1e9;
            Some(RawLine { at_unix_s, message: message.to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamped_lines_parse_and_untimed_ones_are_skipped() {
        let text = "2026-11-28T10:00:01.250000000Z ERROR payment failed order=17\n\
                    garbage without a stamp\n\
                    2026-11-28T10:00:02Z {\"level\":\"info\",\"msg\":\"ok\"}\n\
                    2026-11-28T10:00:0";
        let lines = parse_pod_log(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message, "ERROR payment failed order=17");
        assert!((lines[0].at_unix_s - 1_795_860_001.25).abs() < 1e-3, "{}", lines[0].at_unix_s);
        assert_eq!(lines[1].message, "{\"level\":\"info\",\"msg\":\"ok\"}");
    }

    #[test]
    fn limits_outside_bounds_are_named() {
        let bad = PodLogsConfig { container: None, limit_bytes: 10 };
        assert_eq!(bad.validate().unwrap_err().field, "limit_bytes");
        assert!(PodLogsConfig { container: None, limit_bytes: default_limit_bytes() }.validate().is_ok());
    }
}
