//! A service's past releases read back for calibration: the ledger lists
//! when each started and how it ended; its configured Prometheus source
//! reads the same window again (`PrometheusSource::starting_at`).

use std::collections::HashMap;

use crate::ledger::{Ledger, LedgerError, Record, RecordKind};
use crate::policy::Decision;
use crate::release::ReleaseStatus;
use crate::signals::{PrometheusConfig, PrometheusSource, ScenarioData, SignalError, SignalSource};

/// A past release from the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct PastRelease {
    /// Its release id.
    pub release_id: String,
    /// When it started, unix seconds (its first `release_started` record):
    /// where an earlier-window baseline is read from.
    pub started_unix_s: f64,
    /// Time 0 of its canary's samples, unix seconds: its start, or later
    /// when a continued run read its canary again.
    pub canary_unix_s: f64,
    /// Its analysis window, seconds.
    pub duration_s: u64,
    /// Promoted (or recommended for promotion): healthy by its outcome.
    pub promoted: bool,
}

impl PastRelease {
    /// Where its window is read from again.
    pub fn time_zero(&self) -> crate::signals::TimeZero {
        crate::signals::TimeZero { started_s: self.started_unix_s, canary_s: self.canary_unix_s }
    }
}

/// Why past releases could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The ledger failed.
    #[error("reading past releases from the ledger")]
    Ledger(#[from] LedgerError),
    /// The source could not read a past window.
    #[error("reading past release `{release_id}` back from Prometheus")]
    Source {
        /// The release.
        release_id: String,
        /// Why.
        #[source]
        source: SignalError,
    },
}

/// `service`'s finished releases that ended promoted or rolled back, oldest
/// first, whose whole window lies before `now_unix_s`. A release continued
/// after a restart counts once, from its first start; one whose canary was
/// read again after a long gap ([`crate::run::resume`]) is read from where
/// its last ticks read it, the samples its outcome was decided on.
pub async fn past_releases(ledger: &Ledger, service: &str, now_unix_s: f64) -> Result<Vec<PastRelease>, HistoryError> {
    let mut started: Vec<PastRelease> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (stored, record) in ledger.of_kind(RecordKind::ReleaseStarted, None, 0, 10_000).await? {
        let Record::ReleaseStarted(s) = record else { continue };
        if s.facts.service != service {
            continue;
        }
        let canary_from = s.canary_from_ms.map(|ms| ms as f64 / 1000.0);
        match index.get(&stored.release_id) {
            Some(&i) => started[i].canary_unix_s = canary_from.unwrap_or(started[i].started_unix_s),
            None if s.continued_from_s.is_none() => {
                let started_unix_s = stored.at_ms as f64 / 1000.0;
                index.insert(stored.release_id.clone(), started.len());
                started.push(PastRelease {
                    release_id: stored.release_id,
                    started_unix_s,
                    canary_unix_s: canary_from.unwrap_or(started_unix_s),
                    duration_s: s.duration_s,
                    promoted: false,
                });
            }
            None => {}
        }
    }
    let mut out = Vec::new();
    for mut p in started {
        if p.canary_unix_s + p.duration_s as f64 > now_unix_s {
            continue;
        }
        p.promoted = match ledger.finished(&p.release_id).await?.map(|f| f.status) {
            Some(ReleaseStatus::Promoted | ReleaseStatus::Recommended { decision: Decision::Promote, .. }) => true,
            Some(
                ReleaseStatus::RolledBack | ReleaseStatus::Recommended { decision: Decision::Rollback { .. }, .. },
            ) => false,
            _ => continue,
        };
        out.push(p);
    }
    Ok(out)
}

/// Each past release's whole window, read again through `cfg` (the
/// service's Prometheus source as configured today).
pub async fn read_back(
    service: &str,
    cfg: &PrometheusConfig,
    past: &[PastRelease],
) -> Result<Vec<(PastRelease, ScenarioData)>, HistoryError> {
    let mut out = Vec::new();
    for p in past {
        let fail = |source| HistoryError::Source { release_id: p.release_id.clone(), source };
        let cfg = PrometheusConfig { duration_s: p.duration_s, ..cfg.clone() };
        let source = PrometheusSource::starting_at(cfg, p.time_zero()).map_err(fail)?;
        let obs = source.observe(p.duration_s).await.map_err(fail)?;
        let mut data = ScenarioData::from_observation(p.release_id.clone(), obs);
        data.service = service.to_string();
        out.push((p.clone(), data));
    }
    Ok(out)
}

/// `service`'s past releases read back through `cfg`: the promoted ones
/// (healthy by their outcome) and the rolled-back ones.
pub async fn promoted_and_rolled_back(
    ledger: &Ledger,
    service: &str,
    cfg: &PrometheusConfig,
    now_unix_s: f64,
) -> Result<(Vec<ScenarioData>, Vec<ScenarioData>), HistoryError> {
    let past = past_releases(ledger, service, now_unix_s).await?;
    let (promoted, rolled_back): (Vec<_>, Vec<_>) =
        read_back(service, cfg, &past).await?.into_iter().partition(|(p, _)| p.promoted);
    Ok((promoted.into_iter().map(|(_, d)| d).collect(), rolled_back.into_iter().map(|(_, d)| d).collect()))
}

/// Re-calibrate `service` from its past releases (the agent's opt-in
/// `[calibration] auto`): read them back through `cfg`, calibrate within
/// the policy's bounds, and record the result when it differs from
/// `in_force`. `None` when there are too few releases yet.
pub async fn recalibrate(
    ledger: &Ledger,
    service: &str,
    cfg: &PrometheusConfig,
    policy: &crate::policy::PolicyFile,
    actor: &crate::ledger::Actor,
    now_ms: i64,
    in_force: Option<&crate::calibrate::Calibration>,
) -> Result<Option<crate::calibrate::Calibration>, HistoryError> {
    let (healthy, faulty) = promoted_and_rolled_back(ledger, service, cfg, now_ms as f64 / 1000.0).await?;
    // Learned from the policy's own tolerances, not from the calibration already in force.
    let mut base = policy.clone();
    base.calibrations.clear();
    let judge = base.judge_for(service).into_owned();
    let Ok(c) = crate::calibrate::calibrate(service, &healthy, &faulty, &judge, &policy.calibration) else {
        return Ok(None);
    };
    if in_force.is_none_or(|old| !old.same_as(&c)) {
        let id = crate::calibrate::Calibration::ledger_id(service);
        ledger.append(&id, actor, now_ms, Record::Calibration(Box::new(c.clone()))).await?;
    }
    Ok(Some(c))
}
