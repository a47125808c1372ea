//! What is open, derived from the records and kept beside them in the same
//! transaction as every write: the releases running in acting mode (for
//! admission's blast radius, read inside the write transaction) and the
//! intents without a settling outcome (for recovery at every release's
//! start). Reading these instead of every start, end, intent and outcome the
//! ledger ever held keeps a release's start proportional to what is open,
//! not to the ledger's history (100,000 releases a day, BENCHMARKS.md).
//!
//! Neither table is part of the chain: both are derived again from the
//! records by [`ensure`] on the first open of a ledger written before
//! migration 0005, and a binary without that migration refuses to open a
//! ledger that has it, so no writer can leave them behind.

use std::collections::BTreeMap;

use sqlx::Row;

use super::StoredRecord;
use super::record::Record;

/// The record kinds that open or close something here.
const KINDS: [&str; 4] = ["release_started", "release_finished", "intent", "outcome"];

/// Name of the marker row saying the tables hold every record's effect.
const MARKER: &str = "open_state";

/// One record's effect on what is open.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    /// A release started acting on `target` of `service`.
    Running { service: String, target: String },
    /// A release ended for good.
    Ended,
    /// An action on `target` was intended (plan id).
    Intended { plan: String, target: String },
    /// An action's outcome settled its plan.
    Settled { plan: String },
}

/// Pure: what `row` opens or closes, if anything (a record that does not
/// parse opens nothing: `audit verify` names it).
fn effect(row: &StoredRecord) -> Option<Effect> {
    if !KINDS.contains(&row.kind.as_str()) {
        return None;
    }
    match Record::from_stored(row).ok()? {
        Record::ReleaseStarted(s) if s.mode == crate::policy::RunMode::Act => {
            Some(Effect::Running { service: s.facts.service, target: s.facts.target })
        }
        Record::ReleaseFinished(f) if f.status.is_final() => Some(Effect::Ended),
        Record::Intent(i) => Some(Effect::Intended { plan: i.plan.id, target: i.plan.target }),
        Record::Outcome(o) if o.result.settles() => Some(Effect::Settled { plan: o.plan_id }),
        _ => None,
    }
}

/// Apply `rows` (in seq order) inside the transaction that inserts them.
pub(super) async fn apply(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    rows: &[StoredRecord],
) -> Result<(), sqlx::Error> {
    for row in rows {
        let Some(e) = effect(row) else { continue };
        let q = match &e {
            Effect::Running { service, target } => sqlx::query(
                "INSERT INTO ledger_running (release_id, service, target) VALUES ($1, $2, $3) \
                 ON CONFLICT (release_id) DO NOTHING",
            )
            .bind(row.release_id.as_str())
            .bind(service.as_str())
            .bind(target.as_str()),
            Effect::Ended => {
                sqlx::query("DELETE FROM ledger_running WHERE release_id = $1").bind(row.release_id.as_str())
            }
            Effect::Intended { plan, target } => sqlx::query(
                "INSERT INTO ledger_open_intents (plan_id, target, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (plan_id) DO NOTHING",
            )
            .bind(plan.as_str())
            .bind(target.as_str())
            .bind(row.seq),
            Effect::Settled { plan } => {
                sqlx::query("DELETE FROM ledger_open_intents WHERE plan_id = $1").bind(plan.as_str())
            }
        };
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Releases of `service` running in acting mode, as committed: release id → target.
pub(super) async fn running(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    service: &str,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let rows = sqlx::query("SELECT release_id, target FROM ledger_running WHERE service = $1")
        .bind(service)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(|r| Ok((r.try_get("release_id")?, r.try_get("target")?))).collect()
}

/// The intent records on `target` without a settling outcome, oldest first, in one read.
pub(super) async fn open_intent_records(pool: &sqlx::AnyPool, target: &str) -> Result<Vec<StoredRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM ledger_records WHERE seq IN (SELECT seq FROM ledger_open_intents WHERE target = $1) ORDER BY seq",
        super::COLUMNS
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(target).fetch_all(pool).await?;
    rows.iter().map(super::stored).collect()
}

/// The intent record of plan `plan_id` if it is still open (no settling outcome).
pub(super) async fn open_intent_record(
    pool: &sqlx::AnyPool,
    plan_id: &str,
) -> Result<Option<StoredRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM ledger_records WHERE seq IN (SELECT seq FROM ledger_open_intents WHERE plan_id = $1)",
        super::COLUMNS
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(plan_id).fetch_optional(pool).await?;
    row.as_ref().map(super::stored).transpose()
}

/// Records read per query while deriving the tables again.
const REBUILD_PAGE: i64 = 10_000;

/// Whether both tables were derived (migration 0005's marker), read on `conn`.
pub(super) async fn marked<'c, E>(conn: E) -> Result<bool, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT name FROM ledger_derived WHERE name = $1").bind(MARKER).fetch_optional(conn).await?;
    Ok(row.is_some())
}

/// Derive both tables from the records and set the marker, inside `tx`,
/// which holds the head like a write (the caller opens it: `derive_once` in the parent):
/// no record lands half-counted.
pub(super) async fn derive(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(), sqlx::Error> {
    let kinds = KINDS.map(|k| format!("'{k}'")).join(", ");
    let sql = format!(
        "SELECT {} FROM ledger_records WHERE kind IN ({kinds}) AND seq > $1 ORDER BY seq LIMIT $2",
        super::COLUMNS
    );
    let mut after = 0i64;
    loop {
        let page =
            sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(after).bind(REBUILD_PAGE).fetch_all(&mut **tx).await?;
        let rows: Vec<StoredRecord> = page.iter().map(super::stored).collect::<Result<_, _>>()?;
        apply(tx, &rows).await?;
        match rows.last() {
            Some(last) if rows.len() as i64 == REBUILD_PAGE => after = last.seq,
            _ => break,
        }
    }
    sqlx::query("INSERT INTO ledger_derived (name) VALUES ($1)").bind(MARKER).execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ReleaseFinished;
    use crate::release::ReleaseStatus;

    fn row(kind: &str, body: String) -> StoredRecord {
        StoredRecord {
            seq: 7,
            record_id: "id".into(),
            release_id: "r".into(),
            kind: kind.into(),
            actor: "agent".into(),
            at_ms: 0,
            body,
            record_version: 2,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn end(status: ReleaseStatus) -> StoredRecord {
        let rec = Record::ReleaseFinished(ReleaseFinished {
            status,
            ticks: 3,
            decided_at_s: 30,
            model_usage: Default::default(),
        });
        row("release_finished", rec.body_json().unwrap())
    }

    #[test]
    fn only_ends_for_good_and_settling_outcomes_close_anything() {
        assert_eq!(effect(&end(ReleaseStatus::Interrupted)), None, "an interrupted release still has its canary");
        assert_eq!(effect(&end(ReleaseStatus::Promoted)), Some(Effect::Ended));
        assert_eq!(effect(&row("tick", "{}".into())), None, "ticks are never parsed");
        assert_eq!(effect(&row("intent", r#"{"broken": true}"#.into())), None, "unreadable opens nothing");
    }
}
