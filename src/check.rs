//! `backstop config check`: what every start validates (configuration,
//! policy, executor fields, guards against each release's metrics), then
//! each dependency reached read-only — the signal source, the executor's
//! system, the ledger, the model's key — so a broken setting shows up before
//! a release depends on it, not at the moment a rollback is due. Nothing is
//! changed: sources are asked for their build info, executors read state
//! (HAProxy weights, the Kubernetes workload, a webhook's `verify_url`, the
//! programs on PATH), an SQLite ledger that does not exist yet is not created.

use crate::config::Settings;
use crate::error::chain;
use crate::policy::{PolicyFile, RunMode};
use crate::release::release_id;
use crate::run::prepare::PreparedRelease;

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Reached or valid; what was read.
    Ok(String),
    /// Not checked on purpose; why.
    Skipped(String),
    /// The setting itself is wrong (exit 2); the field and what was expected.
    Invalid(String),
    /// Valid, but not reachable or not answering (exit 3); what and where.
    Failed(String),
}

/// One line of the report: what was checked, and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    /// `ledger`, `release checkout: source`, ...
    pub subject: String,
    /// The result.
    pub status: Status,
}

impl CheckLine {
    fn new(subject: impl Into<String>, status: Status) -> Self {
        Self { subject: subject.into(), status }
    }
}

/// Check everything in `settings` under `policy`, with `ledger_url` as the ledger.
pub async fn check(settings: &Settings, policy: &PolicyFile, ledger_url: &str) -> Vec<CheckLine> {
    let mut lines = vec![ledger(ledger_url).await, model(settings).await, slack(settings).await];
    for cfg in &settings.releases {
        lines.extend(release(settings, policy, cfg).await);
    }
    lines
}

async fn ledger(url: &str) -> CheckLine {
    let shown = crate::secret::redact_url(url);
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        if !path.exists() {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let status = if dir.is_dir() {
                Status::Skipped(format!("{shown}: not created yet (its folder exists; the first run creates it)"))
            } else {
                Status::Failed(format!("{shown}: folder {} does not exist", dir.display()))
            };
            return CheckLine::new("ledger", status);
        }
    }
    let status = match crate::ledger::Ledger::open(url).await {
        Ok(l) => match l.list(None, 1).await {
            Ok(r) => Status::Ok(format!("{shown}: opened, {} record(s) read", r.len())),
            Err(e) => Status::Failed(chain(&e)),
        },
        Err(e) => Status::Failed(chain(&e)),
    };
    CheckLine::new("ledger", status)
}

/// The key is present, and one consultation on a synthetic release is timed
/// against the deadline: a local model on a CPU is usually slower than a
/// tick, which is worth knowing before a release depends on it. It costs one
/// consultation's tokens.
async fn model(settings: &Settings) -> CheckLine {
    let Some(m) = &settings.model else {
        return CheckLine::new("model", Status::Skipped("no [model] configured: the judge decides alone".into()));
    };
    let status = match m.api_key().and_then(|_| crate::assessor::Assessor::new(m.clone())) {
        Err(e) => Status::Invalid(chain(&e)),
        Ok(assessor) => timed_consultation(m, assessor).await,
    };
    CheckLine::new("model", status)
}

async fn timed_consultation(m: &crate::assessor::ModelConfig, assessor: crate::assessor::Assessor) -> Status {
    use crate::assessor::{Ask, ModelSession, Trigger};
    let at = format!("{} at {}", m.name, crate::secret::redact_url(&m.base_url));
    let obs = crate::bench::synthetic_observation(4, 90, 7);
    let judged = crate::judge::judge(&obs, &crate::judge::JudgeConfig::default());
    let facts = crate::policy::ReleaseFacts {
        release_id: "config-check".into(),
        service: obs.service.clone(),
        target: "config-check".into(),
        service_targets: 0,
        declared_targets: vec!["config-check".into()].into(),
        candidate_revision: "candidate".into(),
        last_known_good: Some("baseline".into()),
        quarantine: None,
        last_known_good_from: None,
        irreversible: false,
        environment: "config-check".into(),
    };
    let session = ModelSession::new(std::sync::Arc::new(assessor), 0);
    let limit = std::time::Duration::from_secs(m.verdict_valid_s.max(m.timeout_s));
    let c =
        session.run(Ask { trigger: &Trigger::Inconclusive, facts: &facts, obs: &obs, judged: &judged }, limit).await;
    let secs = c.elapsed_ms as f64 / 1000.0;
    if let Some(e) = &c.error {
        return Status::Failed(format!(
            "{at}: key present, but one consultation gave no answer after {secs:.1} s: {e}"
        ));
    }
    let answer = match &c.rejection {
        Some(r) => format!("answered, and the answer was rejected ({r})"),
        None => "answered with a valid verdict".to_string(),
    };
    let fit = if secs <= m.consultation_deadline_s {
        format!("within the {} s deadline", m.consultation_deadline_s)
    } else {
        format!(
            "past the {} s deadline: on real-time ticks its verdicts are taken at the first tick after they arrive (valid {} s); demos and replays wait only the deadline",
            m.consultation_deadline_s, m.verdict_valid_s
        )
    };
    Status::Ok(format!(
        "{at}: one consultation took {secs:.1} s ({} prompt + {} completion tokens), {fit}; {answer}",
        c.usage.prompt_tokens, c.usage.completion_tokens
    ))
}

/// The bot token answers `auth.test` (read-only); the mode's other credential is present.
async fn slack(settings: &Settings) -> CheckLine {
    let Some(cfg) = &settings.slack else {
        return CheckLine::new("slack", Status::Skipped("no [slack] configured".into()));
    };
    let secrets = match crate::slack::Secrets::load(cfg, &|v| crate::secret::from_env(v).ok()) {
        Ok(s) => s,
        Err(e) => return CheckLine::new("slack", Status::Invalid(chain(&e))),
    };
    let status = match crate::slack::web::WebApi::new(&cfg.api_url, secrets.bot) {
        Err(e) => Status::Failed(chain(&e)),
        Ok(web) => match web.auth_test().await {
            Ok(a) => {
                Status::Ok(format!("{}: bot user {} in {}", crate::secret::redact_url(&cfg.api_url), a.user_id, a.team))
            }
            Err(e) => Status::Failed(chain(&e)),
        },
    };
    CheckLine::new("slack", status)
}

async fn release(settings: &Settings, policy: &PolicyFile, cfg: &crate::release::ReleaseConfig) -> Vec<CheckLine> {
    let name = |what: &str| format!("release {}: {what}", cfg.name);
    let id = release_id(cfg);
    // Built as an acting run would build it: secrets are read, executors made.
    let clock: std::sync::Arc<dyn crate::clock::Clock> = std::sync::Arc::new(crate::clock::SystemClock);
    let now_s = clock.now_ms() as f64 / 1000.0;
    let targets = settings.declared_targets().into();
    let files = cfg.files_from(settings.base_dir.as_deref());
    let prepared =
        match PreparedRelease::prepare(&files, targets, id, RunMode::Act, clock, crate::signals::TimeZero::at(now_s)) {
            Ok(p) => p,
            Err(e) => return vec![CheckLine::new(name("configuration"), Status::Invalid(chain(&e)))],
        };
    let guards = match policy.check_guards(&cfg.service, &prepared.metrics) {
        Ok(()) => Status::Ok(format!("{} metric(s), guards on their bad side", prepared.metrics.len())),
        Err(e) => Status::Invalid(chain(&e)),
    };
    let source = match prepared.source.probe().await {
        Ok(s) => match prepared.source.check_queries().await {
            Ok(()) => Status::Ok(s),
            Err(e) => Status::Invalid(chain(&e)),
        },
        Err(e) => Status::Failed(chain(&e)),
    };
    let executor = match prepared.probe_executor().await {
        None => Status::Skipped("no executor: actions are recommended, never taken".into()),
        Some(Ok(s)) => Status::Ok(s),
        Some(Err(e)) => Status::Failed(chain(&e)),
    };
    vec![
        CheckLine::new(name("policy"), guards),
        CheckLine::new(name("source"), source),
        CheckLine::new(name("executor"), executor),
    ]
}
