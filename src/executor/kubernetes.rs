//! Kubernetes executors: a Deployment rolled back to the ReplicaSet of the
//! recorded last-known-good revision (what `kubectl rollout undo
//! --to-revision` does: a JSON patch of the pod template and annotations),
//! and an Argo Rollout aborted (the merge patch `kubectl argo rollouts abort`
//! sends to the `status` subresource, falling back to the resource on 404).
//! Kubeconfig and in-cluster service accounts both work (kube's inference).
//!
//! Idempotent by construction: the rollback patches the pod template to the
//! recorded revision's (applying it twice changes nothing more), an abort sets
//! a flag, and `verify` reads the object back, so recovery after a crash can
//! always tell whether a plan took effect.

use super::bad;
use crate::field::FieldError;
use std::path::PathBuf;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;

use super::{ActionKind, ActionPlan, Checked, Executor, ExecutorError, Planner, Verification};
use crate::policy::RollbackPlan;

const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotations a rollback keeps from the Deployment itself (kubectl's skip set).
const KEEP_FROM_DEPLOYMENT: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// What kind of workload the target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// An `apps/v1` Deployment; `last_known_good` is its revision number.
    Deployment,
    /// An Argo Rollouts `Rollout`; rollback is an abort (traffic back to stable).
    ArgoRollout,
    /// A KServe `InferenceService` (`serving.kserve.io/v1beta1`): rollback
    /// as `inference_service_rollback` says, promotion removes
    /// `canaryTrafficPercent` so the latest revision takes all traffic.
    InferenceService,
}

/// How a KServe canary is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InferenceServiceRollback {
    /// `spec.predictor.canaryTrafficPercent` to 0: all traffic back on the
    /// previous ready revision, which KServe keeps (its documented rollback).
    #[default]
    Traffic,
    /// `spec.predictor.model.storageUri` back to `last_known_good` (a model
    /// URI) and the canary percentage removed: a new revision of the old model.
    StorageUri,
}

/// A Kubernetes workload as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Deployment or Argo Rollout.
    pub workload: Workload,
    /// Namespace.
    pub namespace: String,
    /// Name of the Deployment or Rollout.
    pub name: String,
    /// Kubeconfig file; without it: in-cluster service account, then `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    #[serde(default)]
    pub context: Option<String>,
    /// `inference_service` only: how its canary is rolled back.
    #[serde(default)]
    pub inference_service_rollback: InferenceServiceRollback,
}

/// The parts of a KServe `InferenceService` backstop reads and merge-patches.
#[derive(Debug, Default, Serialize, Deserialize)]
struct InferenceService {
    #[serde(default)]
    spec: InferenceServiceSpec,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct InferenceServiceSpec {
    #[serde(default)]
    predictor: Predictor,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Predictor {
    /// Always sent in a patch: `null` removes the canary split.
    #[serde(default)]
    canary_traffic_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<PredictorModel>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PredictorModel {
    #[serde(default)]
    storage_uri: Option<String>,
}

impl KubernetesConfig {
    /// Every field within bounds; names the first that is not.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.namespace.trim().is_empty() || self.name.trim().is_empty() {
            return bad("name", "the workload's namespace and name");
        }
        Ok(())
    }
}

impl Predictor {
    fn storage_uri(&self) -> Option<&str> {
        self.model.as_ref().and_then(|m| m.storage_uri.as_deref())
    }
}

/// Acts on one workload.
pub struct KubernetesExecutor {
    target: String,
    cfg: KubernetesConfig,
    client: OnceCell<kube::Client>,
}

impl KubernetesExecutor {
    /// An executor for `target`; the client is built on first use.
    pub fn new(target: impl Into<String>, cfg: KubernetesConfig) -> Result<Self, ExecutorError> {
        let target = target.into();
        if let Some(p) = &cfg.kubeconfig
            && !p.exists()
        {
            return Err(ExecutorError::setup(&target, format!("kubeconfig {} does not exist", p.display())));
        }
        Ok(Self { target, cfg, client: OnceCell::new() })
    }

    /// What the Kubernetes API's error means here: its refusal (a status
    /// it answered), or an API server that could not be reached.
    fn api(&self, e: kube::Error) -> ExecutorError {
        ExecutorError::kubernetes(&self.target, e)
    }

    /// The target is not in the state the action needs.
    fn refuse(&self, answer: impl std::fmt::Display) -> ExecutorError {
        ExecutorError::refused(&self.target, answer.to_string())
    }

    async fn client(&self) -> Result<kube::Client, ExecutorError> {
        self.client
            .get_or_try_init(|| crate::k8s::connect(self.cfg.kubeconfig.as_deref(), self.cfg.context.as_deref()))
            .await
            .cloned()
            .map_err(|e| ExecutorError::setup_from(&self.target, "no Kubernetes client", e))
    }

    fn rollouts(&self, client: kube::Client) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout");
        Api::namespaced_with(client, &self.cfg.namespace, &ApiResource::from_gvk(&gvk))
    }

    fn inference_services(&self, client: kube::Client) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("serving.kserve.io", "v1beta1", "InferenceService");
        Api::namespaced_with(client, &self.cfg.namespace, &ApiResource::from_gvk(&gvk))
    }

    /// What `kind` to `revision` makes of the InferenceService's predictor
    /// (the merge patch itself: an unset `canaryTrafficPercent` is sent as
    /// null, which removes it), and the step as a human reads it.
    fn isvc_change(&self, kind: ActionKind, revision: &str) -> (Predictor, String) {
        let (canary, model, step) = match (kind, self.cfg.inference_service_rollback) {
            (ActionKind::Promote, _) => {
                (None, None, "canaryTrafficPercent removed (latest revision takes all traffic)".to_string())
            }
            (ActionKind::Rollback, InferenceServiceRollback::Traffic) => {
                (Some(0), None, "canaryTrafficPercent = 0 (traffic back to the previous ready revision)".to_string())
            }
            (ActionKind::Rollback, InferenceServiceRollback::StorageUri) => (
                None,
                Some(PredictorModel { storage_uri: Some(revision.to_string()) }),
                format!("model.storageUri = {revision} and canaryTrafficPercent removed"),
            ),
            (ActionKind::Raise { weight }, _) => (
                Some(i64::from(weight)),
                None,
                format!("canaryTrafficPercent = {weight} (the latest revision takes {weight}% of traffic)"),
            ),
        };
        let step =
            format!("inferenceservice {}/{}: merge-patch spec.predictor.{step}", self.cfg.namespace, self.cfg.name);
        (Predictor { canary_traffic_percent: canary, model }, step)
    }

    async fn patch_isvc(&self, kind: ActionKind, revision: &str) -> Result<String, ExecutorError> {
        let api = self.inference_services(self.client().await?);
        let (predictor, step) = self.isvc_change(kind, revision);
        let patch = Patch::Merge(InferenceService { spec: InferenceServiceSpec { predictor } });
        api.patch(&self.cfg.name, &PatchParams::default(), &patch).await.map_err(|e| self.api(e))?;
        Ok(step)
    }

    /// Whether the InferenceService's predictor is what `kind` to `revision`
    /// set (a promotion also accepts an explicit 100 %), and what was read.
    async fn isvc_state(&self, kind: ActionKind, revision: &str) -> Result<Verification, ExecutorError> {
        let o = self.inference_services(self.client().await?).get(&self.cfg.name).await.map_err(|e| self.api(e))?;
        let now: InferenceService = serde_json::from_value(o.data)
            .map_err(|e| self.refuse(format!("the InferenceService is not in KServe's v1beta1 shape: {e}")))?;
        let (want, _) = self.isvc_change(kind, revision);
        let (percent, uri) = (now.spec.predictor.canary_traffic_percent, now.spec.predictor.storage_uri());
        let verified = match want.canary_traffic_percent {
            Some(p) => percent == Some(p),
            None => percent.is_none_or(|p| p == 100),
        } && want.storage_uri().is_none_or(|w| uri == Some(w));
        let shown = percent.map_or("unset".to_string(), |p| p.to_string());
        let observed = format!("canaryTrafficPercent {shown}, storageUri {}", uri.unwrap_or(""));
        Ok(Verification { verified, observed })
    }

    /// The ReplicaSet of the Deployment at `revision`, with its pod-template-hash label removed.
    async fn template_of(
        &self,
        deployments: &Api<Deployment>,
        revision: &str,
    ) -> Result<(Deployment, ReplicaSet), ExecutorError> {
        let client = self.client().await?;
        let d = deployments.get(&self.cfg.name).await.map_err(|e| self.api(e))?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            return Err(self.refuse(format!("deployment {} is paused; resume it before rolling back", self.cfg.name)));
        }
        let selector = d.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
        let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let rss: Api<ReplicaSet> = Api::namespaced(client, &self.cfg.namespace);
        let list = rss.list(&ListParams::default().labels(&labels.join(","))).await.map_err(|e| self.api(e))?;
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let owned = list
            .items
            .into_iter()
            .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.kind == "Deployment"));
        let mut found = None;
        for rs in owned {
            if rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).map(String::as_str) == Some(revision) {
                found = Some(rs);
            }
        }
        let rs =
            found.ok_or_else(|| self.refuse(format!("no ReplicaSet of {} has revision {revision}", self.cfg.name)))?;
        Ok((d, rs))
    }

    async fn undo(&self, revision: &str) -> Result<String, ExecutorError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client().await?, &self.cfg.namespace);
        let (d, rs) = self.template_of(&deployments, revision).await?;
        let mut template =
            rs.spec.and_then(|s| s.template).ok_or_else(|| self.refuse("ReplicaSet has no pod template"))?;
        if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove("pod-template-hash");
        }
        let own = d.metadata.annotations.unwrap_or_default();
        let mut annotations: std::collections::BTreeMap<String, String> =
            own.into_iter().filter(|(k, _)| KEEP_FROM_DEPLOYMENT.contains(&k.as_str())).collect();
        for (k, v) in rs.metadata.annotations.unwrap_or_default() {
            if !KEEP_FROM_DEPLOYMENT.contains(&k.as_str()) {
                annotations.insert(k, v);
            }
        }
        let ops = json!([
            { "op": "replace", "path": "/spec/template", "value": template },
            { "op": "replace", "path": "/metadata/annotations", "value": annotations },
        ]);
        let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|e| self.refuse(e))?;
        deployments
            .patch(&self.cfg.name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .map_err(|e| self.api(e))?;
        Ok(format!(
            "deployment {}/{} rolled back to the template of revision {revision}",
            self.cfg.namespace, self.cfg.name
        ))
    }

    async fn abort(&self) -> Result<String, ExecutorError> {
        let api = self.rollouts(self.client().await?);
        let body = Patch::Merge(json!({ "status": { "abort": true } }));
        match api.patch_status(&self.cfg.name, &PatchParams::default(), &body).await {
            Ok(_) => Ok(format!("rollout {}/{} aborted (status subresource)", self.cfg.namespace, self.cfg.name)),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                api.patch(&self.cfg.name, &PatchParams::default(), &body).await.map_err(|e| self.api(e))?;
                Ok(format!("rollout {}/{} aborted (no status subresource)", self.cfg.namespace, self.cfg.name))
            }
            Err(e) => Err(self.api(e)),
        }
    }
}

impl Planner for KubernetesExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        let (ns, name) = (&self.cfg.namespace, &self.cfg.name);
        let step = match self.cfg.workload {
            Workload::Deployment => format!(
                "patch deployment {ns}/{name}: pod template and annotations from its ReplicaSet at revision {}",
                rollback.to_revision
            ),
            Workload::ArgoRollout => {
                format!("abort rollout {ns}/{name}: merge-patch status.abort=true (traffic back to stable)")
            }
            Workload::InferenceService => self.isvc_change(ActionKind::Rollback, &rollback.to_revision).1,
        };
        Ok(ActionPlan::new(ActionKind::Rollback, &self.target, &rollback.to_revision, at_s, vec![step]))
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        if self.cfg.workload == Workload::InferenceService {
            let step = self.isvc_change(ActionKind::Promote, revision).1;
            return Ok(ActionPlan::new(ActionKind::Promote, &self.target, revision, at_s, vec![step]));
        }
        let step =
            format!("nothing to patch: the rollout of {}/{} proceeds on its own", self.cfg.namespace, self.cfg.name);
        Ok(ActionPlan::new(ActionKind::Promote, &self.target, revision, at_s, vec![step]))
    }

    /// Only a KServe InferenceService splits traffic by a number backstop
    /// sets; a Deployment has no split and an Argo Rollout runs its own steps.
    fn plan_raise(&self, revision: &str, weight: u8, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        if self.cfg.workload != Workload::InferenceService {
            return Err(super::cannot_raise(&self.target, "a Kubernetes Deployment or Argo Rollout"));
        }
        let kind = ActionKind::Raise { weight };
        let step = self.isvc_change(kind, revision).1;
        Ok(ActionPlan::new(kind, &self.target, revision, at_s, vec![step]))
    }
}

#[async_trait]
impl Executor for KubernetesExecutor {
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError> {
        match (plan.kind, self.cfg.workload) {
            (kind, Workload::InferenceService) => self.patch_isvc(kind, &plan.to_revision).await,
            (ActionKind::Promote, _) => Ok("promotion left to the rollout itself".into()),
            (ActionKind::Raise { .. }, _) => {
                Err(super::cannot_raise(&self.target, "a Kubernetes Deployment or Argo Rollout"))
            }
            (ActionKind::Rollback, Workload::Deployment) => self.undo(&plan.to_revision).await,
            (ActionKind::Rollback, Workload::ArgoRollout) => self.abort().await,
        }
    }

    async fn probe(&self) -> Result<String, ExecutorError> {
        let client = self.client().await?;
        let (ns, name) = (&self.cfg.namespace, &self.cfg.name);
        match self.cfg.workload {
            Workload::Deployment => {
                let d = Api::<Deployment>::namespaced(client, ns).get(name).await.map_err(|e| self.api(e))?;
                let revision = d.metadata.annotations.and_then(|a| a.get("deployment.kubernetes.io/revision").cloned());
                Ok(format!("Deployment {ns}/{name} at revision {}", revision.unwrap_or_else(|| "?".into())))
            }
            Workload::ArgoRollout => {
                self.rollouts(client).get(name).await.map_err(|e| self.api(e))?;
                Ok(format!("Rollout {ns}/{name} found"))
            }
            Workload::InferenceService => {
                let v = self.isvc_state(ActionKind::Promote, "").await?;
                Ok(format!("InferenceService {ns}/{name}: {}", v.observed))
            }
        }
    }

    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError> {
        let client = self.client().await?;
        match (plan.kind, self.cfg.workload) {
            (kind, Workload::InferenceService) => self.isvc_state(kind, &plan.to_revision).await,
            (ActionKind::Promote, _) => Ok(Verification { verified: true, observed: "nothing was changed".into() }),
            (ActionKind::Raise { .. }, _) => {
                Ok(Verification { verified: false, observed: "no traffic split to read on this workload".into() })
            }
            (ActionKind::Rollback, Workload::Deployment) => {
                let deployments: Api<Deployment> = Api::namespaced(client, &self.cfg.namespace);
                let (d, rs) = self.template_of(&deployments, &plan.to_revision).await?;
                let strip = |t: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| {
                    t.map(|mut t| {
                        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                            l.remove("pod-template-hash");
                        }
                        t
                    })
                };
                let now = strip(d.spec.map(|s| s.template));
                let wanted = strip(rs.spec.and_then(|s| s.template));
                Ok(Verification {
                    verified: now.is_some() && now == wanted,
                    observed: format!("deployment template matches revision {}: {}", plan.to_revision, now == wanted),
                })
            }
            (ActionKind::Rollback, Workload::ArgoRollout) => {
                let r = self.rollouts(client).get(&self.cfg.name).await.map_err(|e| self.api(e))?;
                let aborted = r.data["status"]["abort"].as_bool().unwrap_or(false);
                Ok(Verification { verified: aborted, observed: format!("rollout status.abort = {aborted}") })
            }
        }
    }
}
