//! Kubernetes pod status as signals: restarts, OOM kills and CrashLoopBackOff
//! of the baseline's and the canary's pods become events on the observation
//! (untrusted text, for reports and the model; the judge reads numbers only).
//! The API failing drops these events and is logged — the metrics decide,
//! and a failing backend never causes a rollback.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{Event, Observation, Side, SignalError, SignalSource};

/// Which pods are whose, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodSignalsConfig {
    /// Namespace of the pods.
    pub namespace: String,
    /// Label selector of the baseline's pods, e.g. `app=checkout,track=stable`.
    pub baseline_selector: String,
    /// Label selector of the canary's pods.
    pub canary_selector: String,
    /// Kubeconfig file; without it: in-cluster service account, then `$KUBECONFIG`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    #[serde(default)]
    pub context: Option<String>,
}

/// Adds pod-status events to another source's observations.
pub struct WithPodSignals {
    inner: Arc<dyn SignalSource>,
    cfg: PodSignalsConfig,
    client: OnceCell<kube::Client>,
    // (pod, what) pairs already reported, so a pod stuck in a state is one event, not one per tick.
    seen: Mutex<HashSet<String>>,
    events: Mutex<Vec<Event>>,
}

impl WithPodSignals {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn SignalSource>, cfg: PodSignalsConfig) -> Self {
        Self { inner, cfg, client: OnceCell::new(), seen: Mutex::default(), events: Mutex::default() }
    }

    async fn client(&self) -> Result<kube::Client, String> {
        self.client
            .get_or_try_init(|| crate::k8s::connect(self.cfg.kubeconfig.as_deref(), self.cfg.context.as_deref()))
            .await
            .cloned()
    }

    /// New events for `side` at `now_s`.
    async fn pod_events(&self, side: Side, now_s: u64) -> Result<Vec<Event>, String> {
        let selector = match side {
            Side::Baseline => &self.cfg.baseline_selector,
            Side::Canary => &self.cfg.canary_selector,
        };
        let pods: Api<Pod> = Api::namespaced(self.client().await?, &self.cfg.namespace);
        let list = pods.list(&ListParams::default().labels(selector)).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for pod in list.items {
            let name = pod.metadata.name.unwrap_or_default();
            for cs in pod.status.and_then(|s| s.container_statuses).unwrap_or_default() {
                let mut found = Vec::new();
                if cs.restart_count > 0 {
                    found.push((
                        "restart",
                        format!("{}: container {} restarted {} times", name, cs.name, cs.restart_count),
                        cs.restart_count.to_string(),
                    ));
                }
                if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref())
                    && t.reason.as_deref() == Some("OOMKilled")
                {
                    found.push((
                        "oom",
                        format!("{}: container {} was OOMKilled (exit {})", name, cs.name, t.exit_code),
                        cs.restart_count.to_string(),
                    ));
                }
                if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
                    && w.reason.as_deref() == Some("CrashLoopBackOff")
                {
                    found.push((
                        "crashloop",
                        format!("{}: container {} is in CrashLoopBackOff", name, cs.name),
                        String::new(),
                    ));
                }
                for (kind, message, key) in found {
                    if seen.insert(format!("{name}/{}/{kind}/{key}", cs.name)) {
                        out.push(Event { t_s: now_s, target: side, kind: kind.into(), message });
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl SignalSource for WithPodSignals {
    fn name(&self) -> String {
        format!("{} + pods in {}", self.inner.name(), self.cfg.namespace)
    }

    async fn probe(&self) -> Result<String, SignalError> {
        self.inner.probe().await
    }

    async fn observe(&self, now_s: u64) -> Result<Observation, SignalError> {
        let mut obs = self.inner.observe(now_s).await?;
        for side in [Side::Baseline, Side::Canary] {
            match self.pod_events(side, now_s).await {
                Ok(new) => self.events.lock().unwrap_or_else(PoisonError::into_inner).extend(new),
                Err(e) => {
                    tracing::warn!(namespace = %self.cfg.namespace, error = %e, "Pod status unavailable; metrics still decide.")
                }
            }
        }
        obs.events.extend(self.events.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned());
        Ok(obs)
    }
}
