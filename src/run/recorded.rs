//! The report of a release the ledger holds, for `advise` and the agent's
//! API and dashboard: from its records at once, nothing judged again; its
//! charts from its data read again only when they are what the last tick
//! judged.

use std::time::Duration;

use super::prepare::PreparedRelease;
use super::{Runtime, RuntimeError};
use crate::ledger::LedgerError;
use crate::orchestrator::RunOutcome;
use crate::orchestrator::recorded::{Ended, Recorded, recorded_release};
use crate::policy::RunMode;
use crate::release::{ReleaseConfig, ReleaseStatus};
use crate::report::{Charts, Report};
use crate::signals::{Observation, TimeZero};

/// How long reading a recorded release's data again for its charts may take.
const READ_AGAIN: Duration = Duration::from_secs(15);

/// What the ledger gives for a release's report.
#[derive(Debug)]
pub enum RecordedReport {
    /// It never ran with this configuration.
    Nothing,
    /// Being judged now: its report exists when it ends.
    InProgress {
        /// Ticks recorded so far.
        ticks: u64,
        /// Release seconds into its window.
        now_s: u64,
    },
    /// It ended.
    Ended {
        /// Its report.
        report: Box<Report>,
        /// Ticks the ledger holds.
        ticks: u64,
    },
}

/// The ledger could not be read, or the release could not be prepared for its report.
#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    /// Reading the release's records failed.
    #[error("reading the release's records")]
    Ledger(#[source] LedgerError),
    /// Its configuration does not make a release any more.
    #[error(transparent)]
    Prepare(#[from] RuntimeError),
}

/// The report of `cfg` as the ledger holds it.
pub async fn recorded_report(runtime: &Runtime, cfg: &ReleaseConfig) -> Result<RecordedReport, RecordedError> {
    let id = crate::release::release_id(cfg);
    let found = recorded_release(&runtime.ledger, &id, runtime.model.is_some()).await.map_err(RecordedError::Ledger)?;
    Ok(match found {
        Recorded::Nothing => RecordedReport::Nothing,
        Recorded::InProgress { ticks, now_s } => RecordedReport::InProgress { ticks, now_s },
        Recorded::Ended(e) => {
            let ticks = e.outcome.ticks;
            RecordedReport::Ended { report: Box::new(report_of_ended(runtime, cfg, *e).await?), ticks }
        }
    })
}

/// The report of an ended release, its charts from its data read again
/// (only when they are the data its last tick judged).
async fn report_of_ended(runtime: &Runtime, cfg: &ReleaseConfig, e: Ended) -> Result<Report, RuntimeError> {
    let start_s = e.started_at_ms as f64 / 1000.0;
    let canary_s = e.canary_from_ms.map_or(start_s, |ms| ms as f64 / 1000.0);
    let p = runtime.prepare_at(cfg, RunMode::Advise, 0, TimeZero { started_s: start_s, canary_s })?;
    let mut outcome = e.outcome;
    let (observation, charts) = read_again(&p.release, outcome.decided_at_s, &e.last_inputs_digest).await;
    outcome.last_observation = observation;
    let r = &p.release;
    let mut report = Report::new(&p.name, &r.facts, &outcome, r.duration_s, e.acting, r.known_onset_s);
    report.charts = charts;
    plan_to_approve(&mut report, r, &outcome);
    report.ramp = r.ramp.as_ref().map(|ramp| crate::report::RampReport::new(ramp, &outcome, e.acting));
    Ok(report)
}

/// A report of a release awaiting approval carries the exact plan approving runs.
pub fn plan_to_approve(report: &mut Report, p: &PreparedRelease, outcome: &RunOutcome) {
    if let ReleaseStatus::AwaitingApproval { proposed, .. } = &outcome.status {
        report.plan = p.plan_for(proposed, outcome.decided_at_s);
    }
}

/// The release's data at `now_s`, read again: drawn only when their digest
/// is the one the last tick recorded.
async fn read_again(release: &PreparedRelease, now_s: u64, judged: &str) -> (Option<Observation>, Charts) {
    let not_drawn = |reason: String| (None, Charts::NotDrawn { reason });
    if judged == "none" {
        return not_drawn("the source gave no data at the last tick".into());
    }
    match tokio::time::timeout(READ_AGAIN, release.source.observe(now_s)).await {
        Err(_) => not_drawn(format!("reading the data again took over {} s", READ_AGAIN.as_secs())),
        Ok(Err(e)) => not_drawn(format!("reading the data again failed: {}", crate::error::chain(&e))),
        Ok(Ok(obs)) => {
            let text = serde_json::to_string(&obs).unwrap_or_default();
            if crate::digest::digest(text.as_bytes()) == judged {
                (Some(obs), Charts::ReadAgain)
            } else {
                not_drawn("the data read again differ from what the last tick judged".into())
            }
        }
    }
}
