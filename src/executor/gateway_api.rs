//! The Kubernetes Gateway API executor: a canary and a stable Service as two
//! `backendRefs` of an `HTTPRoute` (`gateway.networking.k8s.io/v1`), whose
//! weights split the traffic — the standard most meshes and gateways now
//! implement. Rollback sets the canary's weight to 0, promotion the
//! stable's, a ramp step shares `total_weight` between them.
//!
//! Every rule of the route that names both backends is changed, by a JSON
//! Patch that first `test`s each backend's name at the index it writes, so
//! a route edited meanwhile (rules reordered, a backend removed) is refused
//! by the API server rather than half-applied at the wrong place. Weights
//! are absolute, so applying a plan twice leaves the state of once, and
//! `verify` reads the route back (what recovery after a crash needs).

use std::path::PathBuf;

use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;

use super::{ActionKind, ActionPlan, Checked, Executor, ExecutorError, Planner, Verification, bad};
use crate::field::FieldError;
use crate::policy::RollbackPlan;

/// An `HTTPRoute` whose two backends carry the canary and the stable version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayApiConfig {
    /// Namespace of the route.
    pub namespace: String,
    /// Name of the `HTTPRoute`.
    pub route: String,
    /// The `backendRefs` name (a Service) that runs the canary.
    pub canary_backend: String,
    /// The `backendRefs` name that runs the stable version.
    pub stable_backend: String,
    /// Weight the two share (Gateway API weights are relative; 100 reads as percent).
    #[serde(default = "hundred")]
    pub total_weight: u32,
    /// Kubeconfig file; without it: in-cluster service account, then `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    #[serde(default)]
    pub context: Option<String>,
}

fn hundred() -> u32 {
    100
}

/// The Gateway API's largest backend weight.
const MAX_WEIGHT: u32 = 1_000_000;

impl GatewayApiConfig {
    /// Every field within bounds; names the first that is not.
    pub fn validate(&self) -> Result<(), FieldError> {
        let name =
            |s: &str| !s.trim().is_empty() && s.len() <= 253 && !s.contains(|c: char| c.is_whitespace() || c == '/');
        if !name(&self.namespace) || !name(&self.route) {
            return bad("route", "the HTTPRoute's namespace and name (Kubernetes object names)");
        }
        if !name(&self.canary_backend) || !name(&self.stable_backend) || self.canary_backend == self.stable_backend {
            return bad("canary_backend", "two different backendRefs names (the canary's and the stable's Services)");
        }
        if !(2..=MAX_WEIGHT).contains(&self.total_weight) {
            return bad("total_weight", "a weight from 2 to 1000000 (the Gateway API's bound)");
        }
        Ok(())
    }
}

/// The parts of an `HTTPRoute` read back (unknown fields are ignored; the
/// patch writes by path, so nothing unread is lost).
#[derive(Debug, Default, Deserialize)]
struct Route {
    #[serde(default)]
    spec: RouteSpec,
}

#[derive(Debug, Default, Deserialize)]
struct RouteSpec {
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    backend_refs: Vec<BackendRef>,
}

#[derive(Debug, Deserialize)]
struct BackendRef {
    name: String,
    /// Unset means 1 (the API's default).
    #[serde(default)]
    weight: Option<u32>,
}

/// Where in the route one rule holds both backends: rule, canary's and stable's index.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Split {
    rule: usize,
    canary: usize,
    stable: usize,
}

/// Drives one route's two backend weights.
pub struct GatewayApiExecutor {
    target: String,
    cfg: GatewayApiConfig,
    client: OnceCell<kube::Client>,
}

impl GatewayApiExecutor {
    /// An executor for `target`; the client is built on first use.
    pub fn new(target: impl Into<String>, cfg: GatewayApiConfig) -> Result<Self, ExecutorError> {
        let target = target.into();
        if let Some(p) = cfg.kubeconfig.as_ref().filter(|p| !p.exists()) {
            return Err(ExecutorError::setup(&target, format!("kubeconfig {} does not exist", p.display())));
        }
        Ok(Self { target, cfg, client: OnceCell::new() })
    }

    /// The (canary, stable) weights `kind` sets.
    fn weights(&self, kind: ActionKind) -> (u32, u32) {
        let total = self.cfg.total_weight;
        match kind {
            ActionKind::Rollback => (0, total),
            ActionKind::Promote => (total, 0),
            ActionKind::Raise { weight } => {
                let canary = ((u64::from(total) * u64::from(weight) + 50) / 100) as u32;
                let canary = canary.clamp(1, total - 1);
                (canary, total - canary)
            }
        }
    }

    fn describe(&self, kind: ActionKind) -> String {
        let (c, s) = self.weights(kind);
        format!(
            "httproute {}/{}: backendRefs weight {} = {c}, {} = {s} (in every rule naming both)",
            self.cfg.namespace, self.cfg.route, self.cfg.canary_backend, self.cfg.stable_backend
        )
    }

    fn plan(&self, kind: ActionKind, revision: &str, at_s: u64) -> ActionPlan {
        let read = "read the route back: every such rule at those weights".to_string();
        ActionPlan::new(kind, &self.target, revision, at_s, vec![self.describe(kind), read])
    }

    async fn routes(&self) -> Result<Api<DynamicObject>, ExecutorError> {
        let client = self
            .client
            .get_or_try_init(|| crate::k8s::connect(self.cfg.kubeconfig.as_deref(), self.cfg.context.as_deref()))
            .await
            .cloned()
            .map_err(|e| ExecutorError::setup_from(&self.target, "no Kubernetes client", e))?;
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
        Ok(Api::namespaced_with(client, &self.cfg.namespace, &ApiResource::from_gvk(&gvk)))
    }

    /// The route as it is now, and where it holds both backends.
    async fn read(&self) -> Result<(Route, Vec<Split>), ExecutorError> {
        let o =
            self.routes().await?.get(&self.cfg.route).await.map_err(|e| ExecutorError::kubernetes(&self.target, e))?;
        let route: Route = serde_json::from_value(o.data).map_err(|e| {
            ExecutorError::refused(&self.target, format!("the HTTPRoute is not in the Gateway API's v1 shape: {e}"))
        })?;
        let at = |r: &Rule, name: &str| r.backend_refs.iter().position(|b| b.name == name);
        let splits: Vec<Split> = (route.spec.rules.iter().enumerate())
            .filter_map(|(i, r)| {
                Some(Split {
                    rule: i,
                    canary: at(r, &self.cfg.canary_backend)?,
                    stable: at(r, &self.cfg.stable_backend)?,
                })
            })
            .collect();
        if splits.is_empty() {
            let (c, s) = (&self.cfg.canary_backend, &self.cfg.stable_backend);
            let what = format!(
                "httproute {}/{} has no rule whose backendRefs name both `{c}` and `{s}`",
                self.cfg.namespace, self.cfg.route
            );
            return Err(ExecutorError::refused(&self.target, what));
        }
        Ok((route, splits))
    }

    /// What the route's split rules hold now, one `canary/stable` pair per rule.
    fn observed(&self, route: &Route, splits: &[Split]) -> (Vec<(u32, u32)>, String) {
        let weight = |s: &Split, j: usize| route.spec.rules[s.rule].backend_refs[j].weight.unwrap_or(1);
        let pairs: Vec<(u32, u32)> = splits.iter().map(|s| (weight(s, s.canary), weight(s, s.stable))).collect();
        let shown: Vec<String> =
            splits.iter().zip(&pairs).map(|(s, (c, st))| format!("rule {}: {c}/{st}", s.rule)).collect();
        let text = format!(
            "httproute {}/{} weights {}/{}: {}",
            self.cfg.namespace,
            self.cfg.route,
            self.cfg.canary_backend,
            self.cfg.stable_backend,
            shown.join(", ")
        );
        (pairs, text)
    }

    /// The JSON Patch setting `(canary, stable)` at `splits`, each write
    /// preceded by a test that the index still names the same backend.
    fn patch(&self, splits: &[Split], (canary, stable): (u32, u32)) -> Result<json_patch::Patch, ExecutorError> {
        let mut ops = Vec::new();
        for s in splits {
            for (j, name, w) in
                [(s.canary, &self.cfg.canary_backend, canary), (s.stable, &self.cfg.stable_backend, stable)]
            {
                let at = format!("/spec/rules/{}/backendRefs/{j}", s.rule);
                ops.push(json!({ "op": "test", "path": format!("{at}/name"), "value": name }));
                ops.push(json!({ "op": "add", "path": format!("{at}/weight"), "value": w }));
            }
        }
        serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(|e| ExecutorError::refused(&self.target, format!("cannot build the JSON patch: {e}")))
    }
}

impl Planner for GatewayApiExecutor {
    fn target(&self) -> &str {
        &self.target
    }

    fn plan_rollback(&self, rollback: &RollbackPlan, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(self.plan(ActionKind::Rollback, &rollback.to_revision, at_s))
    }

    fn plan_promote(&self, revision: &str, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(self.plan(ActionKind::Promote, revision, at_s))
    }

    fn plan_raise(&self, revision: &str, weight: u8, at_s: u64) -> Result<ActionPlan, ExecutorError> {
        Ok(self.plan(ActionKind::Raise { weight }, revision, at_s))
    }
}

#[async_trait]
impl Executor for GatewayApiExecutor {
    async fn apply(&self, plan: Checked<'_>) -> Result<String, ExecutorError> {
        let (_, splits) = self.read().await?;
        let patch = self.patch(&splits, self.weights(plan.kind))?;
        let routes = self.routes().await?;
        routes
            .patch(&self.cfg.route, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .map_err(|e| ExecutorError::kubernetes(&self.target, e))?;
        Ok(self.describe(plan.kind))
    }

    async fn read_back(&self, plan: Checked<'_>) -> Result<Verification, ExecutorError> {
        let (route, splits) = self.read().await?;
        let (pairs, observed) = self.observed(&route, &splits);
        let want = self.weights(plan.kind);
        Ok(Verification { verified: pairs.iter().all(|p| *p == want), observed })
    }

    async fn probe(&self) -> Result<String, ExecutorError> {
        let (route, splits) = self.read().await?;
        Ok(self.observed(&route, &splits).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(total_weight: u32) -> GatewayApiExecutor {
        let cfg = GatewayApiConfig {
            namespace: "shop".into(),
            route: "checkout".into(),
            canary_backend: "checkout-v2".into(),
            stable_backend: "checkout-v1".into(),
            total_weight,
            kubeconfig: None,
            context: None,
        };
        GatewayApiExecutor::new("gw/checkout", cfg).unwrap()
    }

    #[test]
    fn a_step_shares_the_total_and_neither_side_of_a_step_is_ever_zero() {
        let e = executor(100);
        assert_eq!(e.weights(ActionKind::Raise { weight: 5 }), (5, 95));
        assert_eq!(e.weights(ActionKind::Rollback), (0, 100));
        assert_eq!(e.weights(ActionKind::Promote), (100, 0));
        let coarse = executor(2);
        assert_eq!(coarse.weights(ActionKind::Raise { weight: 1 }), (1, 1));
        assert_eq!(coarse.weights(ActionKind::Raise { weight: 99 }), (1, 1));
        let fine = executor(1000);
        assert_eq!(fine.weights(ActionKind::Raise { weight: 25 }), (250, 750));
    }

    #[test]
    fn the_patch_tests_each_backends_name_before_writing_its_weight() {
        let e = executor(100);
        let patch = e.patch(&[Split { rule: 1, canary: 1, stable: 0 }], (25, 75)).unwrap();
        let ops = serde_json::to_value(&patch).unwrap();
        let want = json!([
            { "op": "test", "path": "/spec/rules/1/backendRefs/1/name", "value": "checkout-v2" },
            { "op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 25 },
            { "op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "checkout-v1" },
            { "op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 75 },
        ]);
        assert_eq!(ops, want);
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (cfg, field) in [
            (GatewayApiConfig { route: " ".into(), ..executor(100).cfg }, "route"),
            (GatewayApiConfig { stable_backend: "checkout-v2".into(), ..executor(100).cfg }, "canary_backend"),
            (GatewayApiConfig { total_weight: 1, ..executor(100).cfg }, "total_weight"),
        ] {
            assert_eq!(cfg.validate().unwrap_err().field, field);
        }
    }
}
