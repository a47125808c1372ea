//! The one writer task per process: group commit of whatever appends have
//! queued, each batch one transaction that holds the head (and so the chain)
//! for its duration, retried whole when the database says to try again.

use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::chain::{GENESIS, StoredRecord, record_hash};
use super::lease::{LeaseOp, LeaseRow, apply};
use super::record::{LeaseRecord, RECORD_VERSION, Record, RecordKind};
use super::{Appended, Dialect, LedgerError, Receipt};

/// Appends written in one transaction at most.
const MAX_BATCH: usize = 512;
/// Tries of one batch before its callers see the error.
const MAX_TRIES: u32 = 60;

pub(super) struct Job {
    pub release_id: String,
    pub actor: String,
    pub at_ms: i64,
    /// Kind and serialised body.
    pub body: Option<(RecordKind, String)>,
    pub lease: Option<LeaseOp>,
    pub reply: oneshot::Sender<Result<Appended, LedgerError>>,
}

pub(super) fn spawn(pool: AnyPool, dialect: Dialect) -> mpsc::Sender<Job> {
    let (tx, mut rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let result = write_with_retry(&pool, dialect, &batch).await;
            match result {
                Ok(done) => {
                    for (job, r) in batch.into_iter().zip(done) {
                        let _ = job.reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    let mut e = Some(e);
                    for job in batch {
                        let err = e.take().map_or_else(
                            || LedgerError::Query(sqlx::Error::Protocol(text.clone())),
                            LedgerError::Query,
                        );
                        let _ = job.reply.send(Err(err));
                    }
                }
            }
        }
    });
    tx
}

/// Errors another writer causes: a lock it holds, a serialisation conflict.
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.to_string()).unwrap_or_default();
            matches!(code.as_str(), "40001" | "40P01" | "23505" | "5" | "6" | "517")
                || d.message().contains("locked")
                || d.message().contains("busy")
        }
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

async fn write_with_retry(pool: &AnyPool, dialect: Dialect, batch: &[Job]) -> Result<Vec<Appended>, sqlx::Error> {
    let mut tries = 0;
    loop {
        match write_batch(pool, dialect, batch).await {
            Err(e) if tries < MAX_TRIES && retryable(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries.min(20)))).await;
            }
            other => return other,
        }
    }
}

/// The chain's position inside one transaction.
struct Cursor {
    seq: i64,
    prev_hash: String,
}

async fn write_batch(pool: &AnyPool, dialect: Dialect, batch: &[Job]) -> Result<Vec<Appended>, sqlx::Error> {
    let mut tx = match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Dialect::Postgres => pool.begin().await?,
    };
    let head_sql = match dialect {
        Dialect::Sqlite => "SELECT seq, hash FROM ledger_head WHERE id = 1",
        Dialect::Postgres => "SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE",
    };
    let head = sqlx::query(head_sql).fetch_optional(&mut *tx).await?;
    let mut cur = match head {
        Some(r) => Cursor { seq: r.try_get("seq")?, prev_hash: r.try_get("hash")? },
        None => Cursor { seq: 0, prev_hash: GENESIS.to_string() },
    };
    let start_seq = cur.seq;
    let mut out = Vec::with_capacity(batch.len());
    for job in batch {
        out.push(write_job(&mut tx, dialect, &mut cur, job).await?);
    }
    if cur.seq != start_seq {
        sqlx::query(
            "INSERT INTO ledger_head (id, seq, hash) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .bind(cur.seq)
        .bind(&cur.prev_hash)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(out)
}

async fn write_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    cur: &mut Cursor,
    job: &Job,
) -> Result<Appended, sqlx::Error> {
    let mut role = None;
    if let Some(op) = &job.lease {
        let current = read_lease(tx, dialect, op.target()).await?;
        let step = apply(op, current.as_ref(), job.at_ms);
        if step.refuse {
            return Ok(Appended { receipt: None, role: Some(step.role), refused: true });
        }
        if let Some(row) = &step.write {
            write_lease(tx, op.target(), row).await?;
        }
        if let (Some(event), Some(row)) = (step.event, &step.write) {
            let rec = Record::Lease(LeaseRecord {
                target: op.target().to_string(),
                holder: row.holder.clone(),
                token: row.token,
                expires_ms: row.expires_ms,
                event,
            });
            let body = rec.body_json().map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            insert(tx, cur, job, RecordKind::Lease, &body).await?;
        }
        role = Some(step.role);
    }
    let receipt = match &job.body {
        Some((kind, body)) => Some(insert(tx, cur, job, *kind, body).await?),
        None => None,
    };
    Ok(Appended { receipt, role, refused: false })
}

async fn read_lease(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    target: &str,
) -> Result<Option<LeaseRow>, sqlx::Error> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT holder, token, expires_ms FROM ledger_leases WHERE target = $1",
        Dialect::Postgres => "SELECT holder, token, expires_ms FROM ledger_leases WHERE target = $1 FOR UPDATE",
    };
    let row = sqlx::query(sql).bind(target).fetch_optional(&mut **tx).await?;
    row.map(|r| {
        Ok(LeaseRow { holder: r.try_get("holder")?, token: r.try_get("token")?, expires_ms: r.try_get("expires_ms")? })
    })
    .transpose()
}

async fn write_lease(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    target: &str,
    row: &LeaseRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger_leases (target, holder, token, expires_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_ms = excluded.expires_ms",
    )
    .bind(target)
    .bind(&row.holder)
    .bind(row.token)
    .bind(row.expires_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    cur: &mut Cursor,
    job: &Job,
    kind: RecordKind,
    body: &str,
) -> Result<Receipt, sqlx::Error> {
    let mut rec = StoredRecord {
        seq: cur.seq + 1,
        record_id: uuid::Uuid::new_v4().to_string(),
        release_id: job.release_id.clone(),
        kind: kind.as_str().to_string(),
        actor: job.actor.clone(),
        at_ms: job.at_ms,
        body: body.to_string(),
        record_version: RECORD_VERSION,
        prev_hash: cur.prev_hash.clone(),
        hash: String::new(),
    };
    rec.hash = record_hash(&rec);
    sqlx::query(
        "INSERT INTO ledger_records (seq, record_id, release_id, kind, actor, at_ms, body, record_version, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(rec.seq)
    .bind(&rec.record_id)
    .bind(&rec.release_id)
    .bind(&rec.kind)
    .bind(&rec.actor)
    .bind(rec.at_ms)
    .bind(&rec.body)
    .bind(rec.record_version)
    .bind(&rec.prev_hash)
    .bind(&rec.hash)
    .execute(&mut **tx)
    .await?;
    cur.seq = rec.seq;
    cur.prev_hash = rec.hash.clone();
    Ok(Receipt { seq: rec.seq, hash: rec.hash })
}
