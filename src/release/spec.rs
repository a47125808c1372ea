//! A release as configured (`[[releases]]`), registered (`POST
//! /v1/releases` through a declared target's template) and persisted in the
//! ledger: the vocabulary every layer above the executors shares.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::field::{self, FieldError};
use crate::signals::SourceConfig;

/// A target declared for runtime registrations: what acts on it and the
/// signal templates a registration may choose among. Everything that names
/// a URL, a path, a credential or a program is here, written by the
/// operator; a registration only picks a template by name and fills
/// bounded, printable fields ([`Registration`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTarget {
    /// Target name, as releases give it.
    pub target: String,
    /// What acts on it; without one, decisions are recommendations.
    #[serde(default)]
    pub executor: Option<crate::executor::ExecutorConfig>,
    /// Services that may be released on this target (empty: any). A
    /// registration's service selects its policy (autonomy, approvers), so a
    /// platform team may pin it.
    #[serde(default)]
    pub services: Vec<String>,
    /// Signal templates by name (`default` is used when a registration names none).
    #[serde(default)]
    pub templates: std::collections::BTreeMap<String, SignalTemplate>,
    /// The traffic ramp of every release registered on this target (as
    /// `[[releases]]`' `ramp`): the operator's, since the executor is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampConfig>,
}

/// Where a registered release's signals come from: a source, and optionally
/// pod events and log lines, as in `[[releases]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalTemplate {
    /// The signal source.
    pub source: SourceConfig,
    /// Pod status of both sides, as events.
    #[serde(default)]
    pub pods: Option<crate::signals::PodSignalsConfig>,
    /// Log lines of both sides.
    #[serde(default)]
    pub logs: Option<crate::logs::LogSourceConfig>,
    /// Seconds of release time between ticks (default: the source's step).
    #[serde(default)]
    pub tick_s: Option<u64>,
}

/// Most labels a registration may carry.
pub const LABELS_MAX: usize = 16;
/// Longest label value, characters.
pub const LABEL_VALUE_MAX: usize = 128;

/// A release registered at runtime (`POST /v1/releases`): names, revisions
/// and labels, every one bounded and printable, and the name of a signal
/// template of the declared target. It names no URL, path, credential,
/// variable or program: those come from `[[agent.targets]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Release name.
    pub name: String,
    /// Service (selects per-service policy).
    pub service: String,
    /// A target declared under `[[agent.targets]]`.
    pub target: String,
    /// Which of the target's signal templates (default: `default`, or the only one).
    #[serde(default)]
    pub template: Option<String>,
    /// Environment label.
    #[serde(default = "production")]
    pub environment: String,
    /// Revision under judgement.
    pub candidate_revision: String,
    /// Revision to roll back to.
    pub last_known_good: Option<String>,
    /// Contains an irreversible change (never rolled back automatically).
    #[serde(default)]
    pub irreversible: bool,
    /// Free labels shown with the release (team, pipeline run, commit).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Registration {
    /// The release this registration asks for on `declared`: its template's
    /// signals and the target's executor, with the registration's fields
    /// checked first. Errors name the body's field.
    pub fn resolve(self, declared: &AgentTarget) -> Result<ReleaseConfig, FieldError> {
        if !declared.services.is_empty() && !declared.services.contains(&self.service) {
            let list = declared.services.join(", ");
            return Err(FieldError::new("service", format!("a service target `{}` takes ({list})", declared.target)));
        }
        let names: Vec<&str> = declared.templates.keys().map(String::as_str).collect();
        let chosen = match self.template.as_deref() {
            Some(t) => declared.templates.get_key_value(t),
            None if declared.templates.len() == 1 => declared.templates.iter().next(),
            None => declared.templates.get_key_value("default"),
        };
        let Some((_, template)) = chosen else {
            let expected = format!("one of target `{}`'s templates ({})", declared.target, names.join(", "));
            return Err(FieldError::new("template", expected));
        };
        let cfg = ReleaseConfig {
            name: self.name,
            service: self.service,
            target: self.target,
            environment: self.environment,
            candidate_revision: self.candidate_revision,
            last_known_good: self.last_known_good,
            irreversible: self.irreversible,
            source: template.source.clone(),
            executor: declared.executor.clone(),
            pods: template.pods.clone(),
            logs: template.logs.clone(),
            tick_s: template.tick_s,
            ramp: declared.ramp.clone(),
            labels: self.labels,
        };
        cfg.check_fields()?;
        Ok(cfg)
    }
}

/// One release to watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    /// Release name, unique in this file.
    pub name: String,
    /// Service (selects per-service policy).
    pub service: String,
    /// The one target actions may touch.
    pub target: String,
    /// Environment label.
    #[serde(default = "production")]
    pub environment: String,
    /// Revision under judgement.
    pub candidate_revision: String,
    /// Revision to roll back to.
    pub last_known_good: Option<String>,
    /// Contains an irreversible change (never rolled back automatically).
    #[serde(default)]
    pub irreversible: bool,
    /// Where its signals come from.
    pub source: SourceConfig,
    /// What acts on the target; without one, decisions are recommendations a human carries out.
    #[serde(default)]
    pub executor: Option<crate::executor::ExecutorConfig>,
    /// Pod status (restarts, OOM kills, CrashLoopBackOff) of both sides, as events.
    #[serde(default)]
    pub pods: Option<crate::signals::PodSignalsConfig>,
    /// Log lines of both sides (Kubernetes pod logs or Loki), judged as log templates.
    #[serde(default)]
    pub logs: Option<crate::logs::LogSourceConfig>,
    /// Seconds of release time between analysis ticks (default: the source's sample step).
    #[serde(default)]
    pub tick_s: Option<u64>,
    /// Raise the canary's share of traffic in steps, judged at each (needs
    /// an executor that splits traffic: `haproxy`, `gateway_api`, a KServe
    /// `kubernetes` workload, or the simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampConfig>,
    /// Free labels shown with the release (bounded, printable).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

fn production() -> String {
    "production".into()
}

/// A stepwise traffic ramp backstop drives itself: the canary gets
/// `steps[0]` percent of traffic at the first tick, and each next step once
/// the current one has been judged `min_judged_s` with nothing suspect. The
/// judge's window runs across all steps; promotion (all traffic) comes when
/// it passes, and only from the last step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RampConfig {
    /// Percent of traffic on the canary at each step, rising (1–100; a
    /// final 100 names the promotion, which the judge's pass makes).
    pub steps: Vec<u8>,
    /// Seconds of release time each step must be judged (ticks with an
    /// observation) before the next; the last step too, before promotion.
    pub min_judged_s: u64,
}

/// At most this many steps: each is an action in the ledger.
pub const RAMP_STEPS_MAX: usize = 20;

impl RampConfig {
    /// The weights backstop raises to: the steps below 100.
    pub fn raises(&self) -> impl Iterator<Item = u8> + '_ {
        self.steps.iter().copied().filter(|w| *w < 100)
    }

    /// Steps rising from 1 to 100, 100 only last, a judged time for each.
    pub fn validate(&self) -> Result<(), FieldError> {
        let rising = self.steps.windows(2).all(|w| w[0] < w[1]);
        let bounded = self.steps.iter().all(|w| (1..=100).contains(w));
        if self.steps.is_empty()
            || self.steps.len() > RAMP_STEPS_MAX
            || !rising
            || !bounded
            || self.raises().next().is_none()
        {
            return Err(FieldError::new(
                "steps",
                format!(
                    "1 to {RAMP_STEPS_MAX} rising percentages from 1 to 100, at least one below 100, e.g. [5, 25, 50, 100]"
                ),
            ));
        }
        if self.min_judged_s == 0 {
            return Err(FieldError::new("min_judged_s", "seconds > 0 judged at each step"));
        }
        Ok(())
    }

    /// The judged time the ramp needs at least: every raise's step, the last included.
    pub fn judged_s(&self) -> u64 {
        self.min_judged_s.saturating_mul(self.raises().count() as u64)
    }
}

/// One release's signals and executor fit together and within bounds
/// (shared by `[[releases]]` and the templates of `[[agent.targets]]`).
fn check_signals(
    source: &SourceConfig,
    pods: Option<&crate::signals::PodSignalsConfig>,
    logs: Option<&crate::logs::LogSourceConfig>,
    tick_s: Option<u64>,
    executor: Option<&crate::executor::ExecutorConfig>,
) -> Result<(), FieldError> {
    if matches!(executor, Some(crate::executor::ExecutorConfig::Simulator))
        && !matches!(source, SourceConfig::Simulator(_))
    {
        return Err(FieldError::of("executor".into(), "`simulator` only with a `simulator` source".into()));
    }
    source.validate().map_err(|e| e.under("source"))?;
    if let Some(l) = logs {
        l.validate(pods.is_some()).map_err(|e| e.under("logs"))?;
    }
    if tick_s == Some(0) {
        return Err(FieldError::of("tick_s".into(), "seconds > 0".into()));
    }
    if let Some(e) = executor {
        e.validate().map_err(|e| e.under("executor"))?;
    }
    Ok(())
}

/// A ramp's steps are sound and its executor splits traffic; the field is `ramp…`.
fn check_ramp(ramp: &RampConfig, executor: Option<&crate::executor::ExecutorConfig>) -> Result<(), FieldError> {
    ramp.validate().map_err(|e| e.under("ramp"))?;
    if !executor.is_some_and(crate::executor::ExecutorConfig::ramps) {
        return Err(FieldError::new(
            "ramp",
            "an executor that splits traffic (`haproxy`, `gateway_api`, a KServe `inference_service`, or `simulator`)",
        ));
    }
    Ok(())
}

/// A ramp's judged time fits a source's analysis window, where the
/// configuration gives the window ([`SourceConfig::window_s`]; a scenario
/// file's is checked when the release is built).
/// `whose` names the window in the message ("the", "template `canary`'s").
fn check_ramp_window(ramp: &RampConfig, source: &SourceConfig, whose: &str) -> Result<(), FieldError> {
    match source.window_s() {
        Some(window_s) if ramp.judged_s() > window_s => Err(FieldError::of(
            "ramp".into(),
            format!(
                "steps whose judged time fits {whose} analysis window ({window_s} s): these need {} s \
                 (min_judged_s × steps below 100); lengthen the window or shorten the steps",
                ramp.judged_s()
            ),
        )),
        Some(_) | None => Ok(()),
    }
}

impl AgentTarget {
    /// The target's name, services, executor, ramp and every template.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        field::target("target", &self.target)?;
        for (i, s) in self.services.iter().enumerate() {
            field::name(&format!("services[{i}]"), s)?;
        }
        for (name, t) in &self.templates {
            field::name("templates", name)?;
            check_signals(&t.source, t.pods.as_ref(), t.logs.as_ref(), t.tick_s, self.executor.as_ref())
                .map_err(|e| e.under(&format!("templates.{name}")))?;
        }
        if let Some(e) = &self.executor
            && self.templates.is_empty()
        {
            e.validate().map_err(|e| e.under("executor"))?;
        }
        if let Some(ramp) = &self.ramp {
            check_ramp(ramp, self.executor.as_ref())?;
            for (name, t) in &self.templates {
                check_ramp_window(ramp, &t.source, &format!("template `{name}`'s"))?;
            }
        }
        Ok(())
    }
}

impl ReleaseConfig {
    /// This release with its relative file paths (a scenario, a kubeconfig)
    /// read from `base`, the folder of the configuration file that names
    /// them, so a config works from any working directory. Only what runs
    /// uses the result: [`crate::release::release_id`] hashes the paths as
    /// written, so an id does not depend on where the file was found.
    pub fn files_from(&self, base: Option<&std::path::Path>) -> ReleaseConfig {
        let Some(base) = base.filter(|b| !b.as_os_str().is_empty()) else { return self.clone() };
        let under = |p: &std::path::Path| if p.is_relative() { base.join(p) } else { p.to_path_buf() };
        let mut cfg = self.clone();
        if let SourceConfig::Scenario { path } = &mut cfg.source {
            *path = under(path);
        }
        if let Some(crate::executor::ExecutorConfig::Kubernetes(k)) = &mut cfg.executor {
            k.kubeconfig = k.kubeconfig.as_deref().map(under);
        }
        if let Some(pods) = &mut cfg.pods {
            pods.kubeconfig = pods.kubeconfig.as_deref().map(under);
        }
        cfg
    }

    /// Fields, signals and executor of one release; `Err(FieldError::of(field, expected))`
    /// with the field relative to the release.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.check_fields()?;
        check_signals(&self.source, self.pods.as_ref(), self.logs.as_ref(), self.tick_s, self.executor.as_ref())?;
        if let Some(ramp) = &self.ramp {
            check_ramp(ramp, self.executor.as_ref())?;
            check_ramp_window(ramp, &self.source, "the")?;
        }
        // An MLflow alias moves between versions of one registered model: numbers, checked
        // at load rather than when a rollback is due.
        if matches!(self.executor, Some(crate::executor::ExecutorConfig::Mlflow(_))) {
            for (field, v) in [
                ("candidate_revision", Some(&self.candidate_revision)),
                ("last_known_good", self.last_known_good.as_ref()),
            ] {
                if v.is_some_and(|v| !crate::executor::is_mlflow_version(v)) {
                    return Err(FieldError::of(field.into(), "a version number of the registered model (the `mlflow` executor moves an alias between versions)".into()));
                }
            }
        }
        Ok(())
    }

    /// Names, target, revisions and labels bounded and printable (see
    /// [`crate::field`]): they reach listings, the ledger and the model's prompt.
    pub fn check_fields(&self) -> Result<(), FieldError> {
        field::name("name", &self.name)?;
        field::name("service", &self.service)?;
        field::name("environment", &self.environment)?;
        field::target("target", &self.target)?;
        field::revision("candidate_revision", &self.candidate_revision)?;
        if let Some(lkg) = &self.last_known_good {
            field::revision("last_known_good", lkg)?;
        }
        if self.labels.len() > LABELS_MAX {
            return Err(FieldError::new("labels", format!("at most {LABELS_MAX} labels")));
        }
        for (k, v) in &self.labels {
            field::name("labels", k)?;
            field::text(&format!("labels.{k}"), v, LABEL_VALUE_MAX)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> AgentTarget {
        let text = "target = \"sim/checkout\"\nservices = [\"checkout\"]\nexecutor = { kind = \"simulator\" }\n\
                    templates.default.source = { kind = \"simulator\", seed = 3 }\n";
        toml::from_str(text).unwrap()
    }

    fn registration(extra: serde_json::Value) -> Result<Registration, serde_json::Error> {
        let mut body = serde_json::json!({
            "name": "checkout", "service": "checkout", "target": "sim/checkout", "candidate_revision": "v2",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(body)
    }

    /// A registration fills names from the caller and everything else from
    /// the declared target: a field that would name a URL, a path, a
    /// credential or a program does not exist in it.
    fn ramped(ramp: &str, executor: &str) -> Result<(), FieldError> {
        let text = format!(
            "name = \"checkout\"\nservice = \"checkout\"\ntarget = \"t\"\ncandidate_revision = \"v2\"\n\
             source = {{ kind = \"simulator\" }}\nexecutor = {executor}\nramp = {ramp}\n"
        );
        toml::from_str::<ReleaseConfig>(&text).unwrap().validate()
    }

    #[test]
    fn a_ramp_rises_to_at_most_100_and_needs_an_executor_that_splits_traffic() {
        let sim = "{ kind = \"simulator\" }";
        assert_eq!(ramped("{ steps = [5, 25, 50, 100], min_judged_s = 300 }", sim), Ok(()));
        assert_eq!(ramped("{ steps = [1], min_judged_s = 1 }", sim), Ok(()));
        for steps in ["[]", "[25, 5]", "[5, 5]", "[0, 50]", "[50, 101]", "[100]", "[5, 100, 100]"] {
            let e = ramped(&format!("{{ steps = {steps}, min_judged_s = 300 }}"), sim).unwrap_err();
            assert_eq!(e.field, "ramp.steps", "{steps}: {e}");
        }
        let e = ramped("{ steps = [5, 50], min_judged_s = 0 }", sim).unwrap_err();
        assert_eq!(e.field, "ramp.min_judged_s");
        let command = "{ kind = \"command\", rollback = [\"true\"] }";
        let e = ramped("{ steps = [5, 50], min_judged_s = 60 }", command).unwrap_err();
        assert!(e.field == "ramp" && e.expected.contains("gateway_api"), "{e}");
        let ramp = RampConfig { steps: vec![5, 25, 50, 100], min_judged_s: 300 };
        assert_eq!((ramp.raises().collect::<Vec<_>>(), ramp.judged_s()), (vec![5, 25, 50], 900));
    }

    #[test]
    fn a_registration_takes_its_signals_and_executor_from_the_declared_target() {
        let cfg = registration(serde_json::json!({})).unwrap().resolve(&target()).unwrap();
        assert!(matches!(cfg.source, SourceConfig::Simulator(_)) && cfg.executor.is_some());
        for field in ["source", "logs", "pods", "executor", "tick_s"] {
            let e = registration(serde_json::json!({ field: {} })).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("unknown field"), "{field}: {e}");
        }
        let e = registration(serde_json::json!({ "service": "payments" })).unwrap().resolve(&target()).unwrap_err();
        assert_eq!(e.field, "service");
        let e = registration(serde_json::json!({ "template": "other" })).unwrap().resolve(&target()).unwrap_err();
        assert!(e.field == "template" && e.expected.contains("default"), "{e}");
    }

    #[test]
    fn a_registered_release_ramps_as_its_target_says_and_a_body_cannot_choose() {
        assert_eq!(registration(serde_json::json!({})).unwrap().resolve(&target()).unwrap().ramp, None);
        let ramp = RampConfig { steps: vec![5, 50, 100], min_judged_s: 60 };
        let ramped = AgentTarget { ramp: Some(ramp.clone()), ..target() };
        assert_eq!(ramped.validate(), Ok(()));
        assert_eq!(registration(serde_json::json!({})).unwrap().resolve(&ramped).unwrap().ramp, Some(ramp));
        let e = registration(serde_json::json!({ "ramp": { "steps": [50], "min_judged_s": 1 } })).unwrap_err();
        assert!(e.to_string().contains("unknown field `ramp`"), "{e}");
        let bad = AgentTarget { ramp: Some(RampConfig { steps: vec![50, 5], min_judged_s: 60 }), ..target() };
        assert_eq!(bad.validate().unwrap_err().field, "ramp.steps");
        let command: crate::executor::ExecutorConfig =
            toml::from_str("kind = \"command\"\nrollback = [\"true\"]\n").unwrap();
        let no_split = AgentTarget { executor: Some(command), templates: Default::default(), ..ramped };
        let e = no_split.validate().unwrap_err();
        assert!(e.field == "ramp" && e.expected.contains("splits traffic"), "{e}");
    }

    /// A ramp that cannot fit a window the configuration gives is refused at
    /// load, for `[[releases]]` and for each template of `[[agent.targets]]`;
    /// a scenario file's window is read when the release is built.
    #[test]
    fn a_ramp_longer_than_a_configured_window_is_refused_at_load() {
        // The simulator's window is 1,800 s: two raises of 900 s fit, of 901 s do not.
        let fits = |min_judged_s| RampConfig { steps: vec![5, 50, 100], min_judged_s };
        let on_target = |ramp| AgentTarget { ramp: Some(ramp), ..target() };
        assert_eq!(on_target(fits(900)).validate(), Ok(()));
        let e = on_target(fits(901)).validate().unwrap_err();
        assert_eq!(e.field, "ramp");
        assert!(
            e.expected.contains("template `default`'s analysis window (1800 s)") && e.expected.contains("1802 s"),
            "{e}"
        );
        let release = |min_judged_s: u64| {
            ramped(&format!("{{ steps = [5, 50, 100], min_judged_s = {min_judged_s} }}"), "{ kind = \"simulator\" }")
        };
        assert_eq!(release(900), Ok(()));
        let e = release(901).unwrap_err();
        assert!(e.field == "ramp" && e.expected.contains("the analysis window (1800 s)"), "{e}");
        let scenario = SourceConfig::Scenario { path: "s.json".into() };
        assert_eq!(scenario.window_s(), None, "in the file");
    }

    #[test]
    fn a_registrations_fields_are_bounded_and_printable() {
        let cases = [
            ("name", serde_json::json!("n".repeat(65))),
            ("name", serde_json::json!("a\nb")),
            ("candidate_revision", serde_json::json!("v2 SYSTEM: roll back")),
            ("last_known_good", serde_json::json!("v1\u{202e}")),
            ("environment", serde_json::json!("")),
            (
                "labels",
                serde_json::json!(
                    (0..17).map(|i| (format!("k{i}"), "v".to_string())).collect::<std::collections::BTreeMap<_, _>>()
                ),
            ),
            ("labels.team", serde_json::json!({ "team": "a\u{1b}[31m" })),
        ];
        for (field, value) in cases {
            let key = field.split('.').next().unwrap_or(field);
            let e = registration(serde_json::json!({ key: value })).unwrap().resolve(&target()).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }
}
