//! A release as the ledger holds it: what `advise` reports, without judging
//! again, for a release that `watch`, `serve` or an agent already ran.
//! [`from_records`] is pure; [`recorded_release`] only reads.

use super::{Conclusion, RunOutcome};
use crate::ledger::{Ledger, LedgerError, Record, StoredRecord};

/// What the ledger holds of one release.
#[derive(Debug, Clone)]
pub enum Recorded {
    /// No record: the release never ran with this id.
    Nothing,
    /// Ticks are recorded but no end: a process is judging it now (or died
    /// and will continue it). Its report exists once it ends.
    InProgress {
        /// Ticks recorded so far.
        ticks: u64,
        /// Release time of the last one, seconds.
        now_s: u64,
    },
    /// The release ended (or was interrupted, and continues when run again).
    Ended(Box<Ended>),
}

/// An ended release, as recorded.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The outcome, with the last tick's judgement, rules and the latest consultation.
    pub outcome: RunOutcome,
    /// Wall clock of the first start, unix ms: where a live source's window began.
    pub started_at_ms: i64,
    /// Time 0 of its canary's samples when read from elsewhere than the
    /// first start (`release_started`'s `canary_from_ms`, the newest), unix ms.
    pub canary_from_ms: Option<i64>,
    /// Digest of the observation the last tick judged (`none` when its source failed).
    pub last_inputs_digest: String,
    /// The run could act (`watch`, an agent), not only advise.
    pub acting: bool,
}

/// Read one release's records and say what they hold.
pub async fn recorded_release(
    ledger: &Ledger,
    release_id: &str,
    model_configured: bool,
) -> Result<Recorded, LedgerError> {
    let records = ledger.release_records(release_id).await?;
    Ok(from_records(release_id, &records, model_configured))
}

/// What `records` (one release's, in ledger order) hold. The latest end
/// counts; a tick after it (a continued run) makes the release in progress again.
pub fn from_records(release_id: &str, records: &[(StoredRecord, Record)], model_configured: bool) -> Recorded {
    let mut started_at_ms = None;
    let mut canary_from_ms = None;
    let mut acting = false;
    let mut last_tick = None;
    let mut consultation = None;
    let mut end = None;
    for (stored, record) in records {
        match record {
            Record::ReleaseStarted(r) => {
                started_at_ms.get_or_insert(stored.at_ms);
                canary_from_ms = r.canary_from_ms;
                acting = r.mode == crate::policy::RunMode::Act;
            }
            Record::Tick(t) => {
                if t.consultation.is_some() {
                    consultation = t.consultation.clone();
                }
                last_tick = Some(t.as_ref());
                end = None;
            }
            Record::ReleaseFinished(f) => end = Some(f),
            _ => {}
        }
    }
    let (Some(done), Some(started_at_ms)) = (end, started_at_ms) else {
        return match last_tick {
            Some(t) => Recorded::InProgress { ticks: t.tick, now_s: t.now_s },
            None => Recorded::Nothing,
        };
    };
    let failed = last_tick.is_some_and(|t| t.inputs_digest == "none");
    let outcome = RunOutcome {
        release_id: release_id.to_string(),
        status: done.status.clone(),
        conclusion: Conclusion::AlreadyFinished,
        ticks: last_tick.map_or(done.ticks, |t| t.tick),
        decided_at_s: done.decided_at_s,
        final_judge: last_tick.map(|t| t.judge.clone()),
        final_rules: last_tick.map(|t| t.rules.clone()).unwrap_or_default(),
        signal_failure: last_tick.filter(|_| failed).map(|t| t.judge.summary.clone()),
        last_observation: None,
        consultation,
        model_usage: done.model_usage,
        model_configured,
        ramp: recorded_ramp(acting, records),
    };
    let last_inputs_digest = last_tick.map_or_else(|| "none".to_string(), |t| t.inputs_digest.clone());
    Recorded::Ended(Box::new(Ended { outcome, started_at_ms, canary_from_ms, last_inputs_digest, acting }))
}

/// The ramp a finished run walked, from its records: an acting run's raises
/// that took effect, an advisory run's rehearsals (in its tick records). A
/// ledger written before rehearsals were recorded holds none, so an advisory
/// trace without one is not known, rather than told as "none due".
fn recorded_ramp(acting: bool, records: &[(StoredRecord, Record)]) -> Option<super::step::RampTrace> {
    let trace = super::step::ramp_history(records.iter().map(|(_, r)| r));
    (acting || !trace.raises.is_empty()).then_some(trace)
}
