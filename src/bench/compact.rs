//! `bench --compact N`: what compaction does to a ledger of `N` finished
//! releases, each with a window of tick records whose judgements come from
//! the simulator (5 metrics, as the 10,000-release run): rows and bytes before
//! and after, how fast ticks are compacted, and what `audit verify` costs.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sqlx::Row;

use crate::judge::judge;
use crate::ledger::{Actor, Ledger, LedgerError, Record, ReleaseFinished, TickRecord};
use crate::policy::{Decision, ModelInput, PolicyFile, RunMode};
use crate::release::ReleaseStatus;
use crate::signals::simulator::{SimConfig, Simulator};

/// Releases written at once (each a task appending its ticks in order).
const WRITERS: usize = 64;

/// What `bench --compact` measured.
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    /// Releases written, all finished.
    pub releases: usize,
    /// Rows before and after.
    pub rows: (i64, i64),
    /// Bytes the ledger's tables take before and after (live pages; the
    /// space freed is reused by later records).
    pub bytes: (i64, i64),
    /// Tick records removed.
    pub removed: u64,
    /// Seconds compaction took.
    pub compact_s: f64,
    /// Its longest transaction, ms: how long an append may wait behind it.
    pub longest_group_ms: f64,
    /// Seconds `audit verify` took before and after.
    pub verify_s: (f64, f64),
    /// Problems `audit verify` found after (none expected).
    pub problems: usize,
}

/// Write `releases` finished releases of `ticks` ticks each to the empty ledger at `url`, then compact.
pub async fn compaction(
    url: &str,
    (releases, ticks): (usize, u32),
    policy: &PolicyFile,
) -> Result<CompactReport, LedgerError> {
    let ledger = Arc::new(Ledger::open(url).await?);
    let policy = Arc::new(policy.clone());
    for chunk in (0..releases).collect::<Vec<_>>().chunks(WRITERS) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let (ledger, policy) = (ledger.clone(), policy.clone());
                tokio::spawn(async move { write_release(&ledger, &policy, i, ticks).await })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|_| LedgerError::WriterGone)??;
        }
    }
    let before = (rows(&ledger).await?, bytes(&ledger).await?);
    let verify_before = timed_verify(&ledger).await?;
    let started = Instant::now();
    let done = ledger.compact(i64::MAX, (0, &Actor::agent("bench")), u64::MAX).await?;
    let compact_s = started.elapsed().as_secs_f64();
    let verify_after = timed_verify(&ledger).await?;
    Ok(CompactReport {
        releases,
        rows: (before.0, rows(&ledger).await?),
        bytes: (before.1, bytes(&ledger).await?),
        removed: done.removed,
        compact_s,
        longest_group_ms: done.longest_group.as_secs_f64() * 1000.0,
        verify_s: (verify_before.0, verify_after.0),
        problems: verify_before.1 + verify_after.1,
    })
}

async fn write_release(ledger: &Ledger, policy: &PolicyFile, i: usize, ticks: u32) -> Result<(), LedgerError> {
    let sim = Simulator::new(SimConfig { seed: i as u64, ..SimConfig::default() });
    let (id, actor) = (format!("bench-{i}"), Actor::agent("bench"));
    for k in 1..=ticks {
        let now_s = u64::from(k) * 10;
        let judged = judge(&sim.observe_at(now_s), &policy.judge);
        let record = Record::Tick(Box::new(TickRecord {
            tick: u64::from(k),
            now_s,
            mode: RunMode::Act,
            inputs_digest: format!("{:064x}", u64::from(k) * 7919 + i as u64),
            judge: judged,
            model: ModelInput::NotConfigured,
            consultation: None,
            prompt_version: None,
            tool_calls: vec![],
            decision: Decision::Continue,
            rules: vec![],
            lease: Some(crate::ledger::LeaseRole::Holder { token: 1 }),
            rehearsed_raise: None,
        }));
        ledger.append(&id, &actor, now_s as i64 * 1000, record).await?;
    }
    let end = ReleaseFinished {
        status: ReleaseStatus::Promoted,
        ticks: u64::from(ticks),
        decided_at_s: u64::from(ticks) * 10,
        model_usage: Default::default(),
    };
    ledger.append(&id, &actor, i64::from(ticks) * 10_000, Record::ReleaseFinished(end)).await?;
    Ok(())
}

async fn rows(ledger: &Ledger) -> Result<i64, LedgerError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM ledger_records").fetch_one(ledger.pool()).await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// Bytes in use by the ledger's tables and indexes: SQLite's pages less its
/// free list; PostgreSQL's after `VACUUM FULL` (in service, autovacuum makes
/// the freed space reusable without shrinking the files).
async fn bytes(ledger: &Ledger) -> Result<i64, LedgerError> {
    let pool = ledger.pool();
    if ledger.url().starts_with("sqlite:") {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await?;
        let get = |sql: &'static str| async move {
            let row = sqlx::query(sql).fetch_one(pool).await?;
            row.try_get::<i64, _>(0)
        };
        let (pages, free, size) =
            (get("PRAGMA page_count").await?, get("PRAGMA freelist_count").await?, get("PRAGMA page_size").await?);
        return Ok((pages - free) * size);
    }
    sqlx::query("VACUUM FULL ledger_records").execute(pool).await?;
    sqlx::query("VACUUM FULL ledger_compacted").execute(pool).await?;
    let sql =
        "SELECT CAST(pg_total_relation_size('ledger_records') + pg_total_relation_size('ledger_compacted') AS BIGINT)";
    let row = sqlx::query(sql).fetch_one(pool).await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// Seconds a full `verify` takes, and the problems it found (none expected).
async fn timed_verify(ledger: &Ledger) -> Result<(f64, usize), LedgerError> {
    let started = Instant::now();
    let report = ledger.verify(None).await?;
    Ok((started.elapsed().as_secs_f64(), report.problems.len()))
}
