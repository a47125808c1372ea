//! Kubernetes pod status as signals: restarts, OOM kills and CrashLoopBackOff
//! of the baseline's and the canary's pods, and the Warning events
//! (`events.k8s.io/v1`) regarding those pods since the release began, become
//! events on the observation (untrusted text, for reports and the model; the
//! judge reads numbers only). The API failing drops these events and is
//! logged — the metrics decide, and a failing backend never causes a rollback.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{Event, EventKind, Observation, Side, SignalError, SignalSource};

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
    /// Read the Warning events (`events.k8s.io/v1`) regarding the sides' pods
    /// too (needs `list` on `events` in the namespace).
    #[serde(default = "yes")]
    pub events: bool,
}

fn yes() -> bool {
    true
}

/// Adds pod-status events to another source's observations.
pub struct WithPodSignals {
    inner: Arc<dyn SignalSource>,
    cfg: PodSignalsConfig,
    /// When the release began (unix seconds): older Kubernetes events are not its own.
    start_unix: f64,
    client: OnceCell<kube::Client>,
    // (pod, what) pairs already reported, so a pod stuck in a state is one event, not one per tick.
    seen: Mutex<HashSet<String>>,
    events: Mutex<Vec<Event>>,
}

impl WithPodSignals {
    /// Wrap `inner`, for a release that began at `start_unix` (seconds).
    pub fn new(inner: Arc<dyn SignalSource>, cfg: PodSignalsConfig, start_unix: f64) -> Self {
        Self { inner, cfg, start_unix, client: OnceCell::new(), seen: Mutex::default(), events: Mutex::default() }
    }

    async fn client(&self) -> Result<kube::Client, crate::k8s::ConnectError> {
        self.client
            .get_or_try_init(|| crate::k8s::connect(self.cfg.kubeconfig.as_deref(), self.cfg.context.as_deref()))
            .await
            .cloned()
    }

    /// New events for `side` at `now_s`, and the side's pod names; `Err` is
    /// the API's failure, logged by the caller.
    async fn pod_events(&self, side: Side, now_s: u64) -> Result<(Vec<Event>, Vec<String>), PodsUnavailable> {
        let selector = match side {
            Side::Baseline => &self.cfg.baseline_selector,
            Side::Canary => &self.cfg.canary_selector,
        };
        let client = self.client().await.map_err(PodsUnavailable::Client)?;
        let pods: Api<Pod> = Api::namespaced(client, &self.cfg.namespace);
        let list = pods.list(&ListParams::default().labels(selector)).await?;
        let names = list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        Ok((events_from_pods(&list.items, side, now_s, &mut seen), names))
    }

    /// New Warning events regarding the pods in `sides` (pod name → side).
    async fn warning_events(&self, sides: &HashMap<String, Side>, now_s: u64) -> Result<Vec<Event>, PodsUnavailable> {
        let client = self.client().await.map_err(PodsUnavailable::Client)?;
        let api: Api<K8sEvent> = Api::namespaced(client, &self.cfg.namespace);
        let list = api.list(&ListParams::default()).await.map_err(PodsUnavailable::Events)?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(events_from_k8s(&list.items, sides, self.start_unix, now_s, &mut seen))
    }
}

/// Why pod status could not be read this tick.
#[derive(Debug, thiserror::Error)]
enum PodsUnavailable {
    /// No client (kubeconfig, context, service account).
    #[error("no Kubernetes client")]
    Client(#[source] crate::k8s::ConnectError),
    /// The API refused or failed the list.
    #[error("listing pods failed")]
    List(#[from] kube::Error),
    /// The API refused or failed the list of events.
    #[error("listing events (events.k8s.io/v1) failed")]
    Events(#[source] kube::Error),
}

/// The longest event text kept, in characters: notes are untrusted and unbounded.
const MAX_NOTE_CHARS: usize = 512;

/// Warning events regarding a pod of either side that happened since
/// `start_unix`, each (uid, occurrence count) once. Pure, so arbitrary
/// event lists are tested.
fn events_from_k8s(
    items: &[K8sEvent],
    sides: &HashMap<String, Side>,
    start_unix: f64,
    now_s: u64,
    seen: &mut HashSet<String>,
) -> Vec<Event> {
    let mut out = Vec::new();
    for e in items {
        let Some(regarding) = e.regarding.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")) else { continue };
        let Some((pod, side)) = regarding.name.as_ref().and_then(|n| sides.get_key_value(n)) else { continue };
        if e.type_.as_deref() != Some("Warning") {
            continue;
        }
        let when = e.series.as_ref().map(|s| s.last_observed_time.0).or(e.event_time.as_ref().map(|t| t.0));
        let when = when.or(e.deprecated_last_timestamp.as_ref().map(|t| t.0));
        if when.is_none_or(|t| (t.as_millisecond() as f64) / 1000.0 < start_unix) {
            continue;
        }
        let count = e.series.as_ref().map(|s| s.count).or(e.deprecated_count).unwrap_or(1);
        let uid = e.metadata.uid.as_deref().or(e.metadata.name.as_deref()).unwrap_or_default();
        if !seen.insert(format!("event/{uid}/{count}")) {
            continue;
        }
        let reason = e.reason.as_deref().unwrap_or("Warning");
        let note: String =
            crate::field::strip_unsafe(e.note.as_deref().unwrap_or(""), false).chars().take(MAX_NOTE_CHARS).collect();
        let times = if count > 1 { format!(" ({count} times)") } else { String::new() };
        let message = format!("{pod}: {reason}{times}: {note}");
        out.push(Event { t_s: now_s, target: *side, kind: EventKind::named(reason), message });
    }
    out
}

/// Restarts, OOM kills and CrashLoopBackOff of `pods` as events, each
/// (pod, container, kind, restart count) once: `seen` remembers what was
/// reported on earlier ticks. Pure, so arbitrary pod statuses are tested.
fn events_from_pods(pods: &[Pod], side: Side, now_s: u64, seen: &mut HashSet<String>) -> Vec<Event> {
    let mut out = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        for cs in pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
            let mut found = Vec::new();
            if cs.restart_count > 0 {
                let text = format!("{}: container {} restarted {} times", name, cs.name, cs.restart_count);
                found.push((EventKind::Restart, text, cs.restart_count.to_string()));
            }
            if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref())
                && t.reason.as_deref() == Some("OOMKilled")
            {
                let text = format!("{}: container {} was OOMKilled (exit {})", name, cs.name, t.exit_code);
                found.push((EventKind::Oom, text, cs.restart_count.to_string()));
            }
            if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
                && w.reason.as_deref() == Some("CrashLoopBackOff")
            {
                found.push((
                    EventKind::CrashLoop,
                    format!("{}: container {} is in CrashLoopBackOff", name, cs.name),
                    String::new(),
                ));
            }
            for (kind, message, key) in found {
                if seen.insert(format!("{name}/{}/{kind}/{key}", cs.name)) {
                    out.push(Event { t_s: now_s, target: side, kind, message });
                }
            }
        }
    }
    out
}

#[async_trait]
impl SignalSource for WithPodSignals {
    fn name(&self) -> String {
        format!("{} + pods in {}", self.inner.name(), self.cfg.namespace)
    }

    async fn probe(&self) -> Result<String, SignalError> {
        self.inner.probe().await
    }

    async fn check_queries(&self) -> Result<(), SignalError> {
        self.inner.check_queries().await
    }

    async fn observe(&self, now_s: u64) -> Result<Observation, SignalError> {
        let mut obs = self.inner.observe(now_s).await?;
        let mut sides = HashMap::new();
        let warn = |e: &PodsUnavailable| tracing::warn!(namespace = %self.cfg.namespace, error = %crate::error::chain(e), "Pod status unavailable; metrics still decide.");
        for side in [Side::Baseline, Side::Canary] {
            match self.pod_events(side, now_s).await {
                Ok((new, names)) => {
                    self.events.lock().unwrap_or_else(PoisonError::into_inner).extend(new);
                    sides.extend(names.into_iter().map(|n| (n, side)));
                }
                Err(e) => warn(&e),
            }
        }
        if self.cfg.events && !sides.is_empty() {
            match self.warning_events(&sides, now_s).await {
                Ok(new) => self.events.lock().unwrap_or_else(PoisonError::into_inner).extend(new),
                Err(e) => warn(&e),
            }
        }
        obs.events.extend(self.events.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned());
        Ok(obs)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// A pod list as the API might send it, with arbitrary names, counts and reasons.
    fn pod() -> impl Strategy<Value = serde_json::Value> {
        let reason = prop_oneof![
            Just("OOMKilled".to_string()),
            Just("CrashLoopBackOff".to_string()),
            Just("Error".to_string()),
            "[ -~\u{80}-\u{10ffff}]{0,20}"
        ];
        let container = ("[ -~]{0,12}", any::<i32>(), reason.clone(), reason, any::<i32>()).prop_map(
            |(name, restarts, waiting, terminated, exit)| {
                json!({ "name": name, "restartCount": restarts, "ready": false, "image": "i", "imageID": "",
                        "state": { "waiting": { "reason": waiting } },
                        "lastState": { "terminated": { "reason": terminated, "exitCode": exit } } })
            },
        );
        (proptest::option::of("[ -~]{0,20}"), prop::collection::vec(container, 0..4))
            .prop_map(|(name, cs)| json!({ "metadata": { "name": name }, "status": { "containerStatuses": cs } }))
    }

    proptest! {
        #[test]
        fn any_pod_status_gives_each_event_once_and_never_panics(pods in prop::collection::vec(pod(), 0..5)) {
            let pods: Vec<Pod> = pods.into_iter().filter_map(|p| serde_json::from_value(p).ok()).collect();
            let mut seen = HashSet::new();
            let first = events_from_pods(&pods, Side::Canary, 10, &mut seen);
            prop_assert!(first.iter().all(|e| e.t_s == 10 && e.target == Side::Canary));
            prop_assert!(first.iter().all(|e| ["restart", "oom", "crashloop"].contains(&e.kind.as_str())));
            // The same statuses on the next tick are nothing new.
            prop_assert!(events_from_pods(&pods, Side::Canary, 20, &mut seen).is_empty());
        }
    }

    #[test]
    fn an_oom_killed_crash_looping_container_is_three_events() {
        let pod: Pod = serde_json::from_value(json!({ "metadata": { "name": "checkout-v42-abc" }, "status": {
            "containerStatuses": [{ "name": "app", "restartCount": 3, "ready": false, "image": "i", "imageID": "",
                "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                "lastState": { "terminated": { "reason": "OOMKilled", "exitCode": 137 } } }] } }))
        .unwrap();
        let kinds: Vec<String> = events_from_pods(&[pod], Side::Canary, 30, &mut HashSet::new())
            .into_iter()
            .map(|e| e.kind.to_string())
            .collect();
        assert_eq!(kinds, ["restart", "oom", "crashloop"]);
    }
}
