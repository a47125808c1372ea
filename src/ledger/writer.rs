//! The one writer task per process: group commit of whatever appends have
//! queued, each batch one transaction that holds the head (and so the chain)
//! for its duration, retried whole when the database says to try again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::chain::{GENESIS, StoredRecord, record_hash};
use super::lease::{LeaseOp, LeaseRow, apply};
use super::record::{ApprovalResolved, LeaseRecord, LeaseRole, RECORD_VERSION, Record, RecordKind};
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
    pub approvals: super::ApprovalOps,
    pub admit: Option<super::Admission>,
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
pub(super) fn retryable(e: &sqlx::Error) -> bool {
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
            Err(f)
                if tries < MAX_TRIES
                    && (retryable(&f.error) || ended(&f.error) || (!f.committing && lost(&f.error))) =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tries.min(20)))).await;
            }
            Ok(done) => return Ok(done),
            Err(f) => return Err(f.error),
        }
    }
}

/// The server ended the transaction because this process stalled inside
/// it (see `STALLED_TRANSACTION_MS`): nothing of it was committed.
fn ended(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("25P03"))
}

/// The connection was lost: nothing of the transaction was committed,
/// unless it was lost during the commit itself — never retried, as it may have landed.
fn lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("57P01" | "08006" | "08003")),
        _ => false,
    }
}

/// A batch that failed, and whether it failed at its commit.
struct Failed {
    error: sqlx::Error,
    committing: bool,
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Self {
        Self { error, committing: false }
    }
}

/// The chain's position inside one transaction.
pub(super) struct Cursor {
    pub seq: i64,
    pub prev_hash: String,
}

/// Rows per multi-row statement (10 columns each; well under every driver's bind limit).
const ROWS_PER_INSERT: usize = 100;

/// One batch's work in memory: the chain's position, the leases it read and
/// changed, and the rows it will insert.
struct Batch {
    cur: Cursor,
    leases: BTreeMap<String, LeaseRow>,
    changed: BTreeMap<String, LeaseRow>,
    rows: Vec<StoredRecord>,
    /// Committed approval records of the releases whose jobs look at them.
    approvals: BTreeMap<String, Vec<StoredRecord>>,
}

impl Batch {
    /// Append `job`'s body (and what it implies) to the rows.
    fn push(&mut self, job: &Job, kind: RecordKind, body: &str) -> Receipt {
        let rec = next_record(&mut self.cur, job, kind, body);
        let receipt = Receipt { seq: rec.seq, hash: rec.hash.clone() };
        self.rows.push(rec);
        receipt
    }

    /// Apply `job`'s lease operation.
    fn lease(&mut self, job: &Job) -> Result<LeaseOutcome, sqlx::Error> {
        let Some(op) = &job.lease else { return Ok(LeaseOutcome::NoOp) };
        let step = apply(op, self.leases.get(op.target()), job.at_ms);
        if step.refuse {
            return Ok(LeaseOutcome::Refused(step.role));
        }
        if let Some(row) = step.write {
            if let Some(event) = step.event {
                let rec = Record::Lease(LeaseRecord {
                    target: op.target().to_string(),
                    holder: row.holder.clone(),
                    token: row.token,
                    expires_ms: row.expires_ms,
                    event,
                });
                let body = rec.body_json().map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                self.push(job, RecordKind::Lease, &body);
            }
            self.leases.insert(op.target().to_string(), row.clone());
            self.changed.insert(op.target().to_string(), row);
        }
        Ok(LeaseOutcome::Role(step.role))
    }
}

/// What a job's lease operation came to.
enum LeaseOutcome {
    /// The job had none.
    NoOp,
    /// The caller's role afterwards.
    Role(LeaseRole),
    /// The op refuses the job (a fenced intent): the caller's role.
    Refused(LeaseRole),
}

/// One batch is a fixed number of round trips whatever its size: lock the
/// head, read every lease the batch touches, decide in memory, write the
/// changed leases, insert the records, move the head, commit.
async fn write_batch(pool: &AnyPool, dialect: Dialect, batch: &[Job]) -> Result<Vec<Appended>, Failed> {
    let (mut tx, cur) = begin_at_head(pool, dialect).await?;
    let start_seq = cur.seq;
    let leases = read_leases(&mut tx, dialect, batch).await?;
    let approvals = read_approvals(&mut tx, batch).await?;
    let mut b = Batch { cur, leases, changed: BTreeMap::new(), rows: Vec::new(), approvals };
    let mut out = Vec::with_capacity(batch.len());
    for job in batch {
        out.push(write_job(&mut tx, &mut b, job).await?);
    }
    write_leases(&mut tx, &b.changed).await?;
    insert_records(&mut tx, &b.rows).await?;
    if b.cur.seq != start_seq {
        move_head(&mut tx, &b.cur).await?;
    }
    tx.commit().await.map_err(|error| Failed { error, committing: true })?;
    Ok(out)
}

/// A write transaction holding the head (and so the chain), and where the chain ends.
pub(super) async fn begin_at_head(
    pool: &AnyPool,
    dialect: Dialect,
) -> Result<(sqlx::Transaction<'static, sqlx::Any>, Cursor), sqlx::Error> {
    let mut tx = match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Dialect::Postgres => pool.begin().await?,
    };
    let head_sql = match dialect {
        Dialect::Sqlite => "SELECT seq, hash FROM ledger_head WHERE id = 1",
        Dialect::Postgres => "SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE",
    };
    let head = sqlx::query(head_sql).fetch_optional(&mut *tx).await?;
    let cur = match head {
        Some(r) => Cursor { seq: r.try_get("seq")?, prev_hash: r.try_get("hash")? },
        None => Cursor { seq: 0, prev_hash: GENESIS.to_string() },
    };
    Ok((tx, cur))
}

/// Move the head to where the chain now ends, in the same transaction.
pub(super) async fn move_head(tx: &mut sqlx::Transaction<'static, sqlx::Any>, cur: &Cursor) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ledger_head (id, seq, hash) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(cur.seq)
    .bind(&cur.prev_hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One job in the batch's transaction: its lease op (which may refuse it),
/// its approval conditions (which may refuse it), its record, and the
/// approval closures it implies.
async fn write_job(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    b: &mut Batch,
    job: &Job,
) -> Result<Appended, sqlx::Error> {
    let refused = |role| Appended { receipt: None, role, refused: true, in_canary: vec![] };
    if let Some(admit) = &job.admit {
        let in_canary = canaries(tx, admit, &b.rows).await?;
        if in_canary.len() >= admit.max_targets as usize {
            return Ok(Appended { receipt: None, role: None, refused: true, in_canary });
        }
    }
    let role = match b.lease(job)? {
        LeaseOutcome::NoOp => None,
        LeaseOutcome::Role(r) => Some(r),
        LeaseOutcome::Refused(r) => return Ok(refused(Some(r))),
    };
    let approvals = &job.approvals;
    if let Some(id) = &approvals.only_if_open
        && !b.open_approvals(&job.release_id).contains(id)
    {
        return Ok(refused(role));
    }
    let receipt = job.body.as_ref().map(|(kind, body)| b.push(job, *kind, body));
    if let Some(closure) = approvals.close_open {
        for id in b.open_approvals(&job.release_id) {
            let rec = Record::ApprovalResolved(ApprovalResolved::closure(&id, closure));
            let body = rec.body_json().map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            b.push(job, RecordKind::ApprovalResolved, &body);
        }
    }
    Ok(Appended { receipt, role, refused: false, in_canary: vec![] })
}

/// Targets of `admit.service` other than its own with a canary running: a
/// release started in acting mode (committed, or earlier in this batch) and
/// not finished. A release paused or cut short by a crash still has its
/// canary, so it counts until it finishes.
async fn canaries(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    admit: &super::Admission,
    pending: &[StoredRecord],
) -> Result<Vec<String>, sqlx::Error> {
    let mut running = super::derived::running(tx, &admit.service).await?;
    for row in pending {
        match Record::from_stored(row) {
            Ok(Record::ReleaseStarted(s))
                if s.mode == crate::policy::RunMode::Act && s.facts.service == admit.service =>
            {
                running.insert(row.release_id.clone(), s.facts.target);
            }
            Ok(Record::ReleaseFinished(f)) if f.status.is_final() => {
                running.remove(&row.release_id);
            }
            _ => {}
        }
    }
    let targets: BTreeSet<String> = running.into_values().filter(|t| *t != admit.target).collect();
    Ok(targets.into_iter().collect())
}

impl Batch {
    /// Ids of `release`'s approval requests still open, in the order they
    /// were opened: the committed records, then this batch's rows.
    fn open_approvals(&self, release: &str) -> Vec<String> {
        let committed = self.approvals.get(release).map(Vec::as_slice).unwrap_or_default();
        let mut open: Vec<String> = Vec::new();
        for row in committed.iter().chain(self.rows.iter().filter(|r| r.release_id == release)) {
            match Record::from_stored(row) {
                Ok(Record::ApprovalRequested(a)) => open.push(a.request.id),
                Ok(Record::ApprovalResolved(r)) if r.closes() => open.retain(|id| *id != r.id),
                _ => {}
            }
        }
        open
    }
}

/// The committed approval records of every release whose job in `batch`
/// looks at its open requests, in a few queries whatever the batch's size
/// (10,000 releases stopping at once close theirs in one batch).
async fn read_approvals(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    batch: &[Job],
) -> Result<BTreeMap<String, Vec<StoredRecord>>, sqlx::Error> {
    let looks = |j: &&Job| j.approvals.only_if_open.is_some() || j.approvals.close_open.is_some();
    let releases: BTreeSet<&str> = batch.iter().filter(looks).map(|j| j.release_id.as_str()).collect();
    let releases: Vec<&str> = releases.into_iter().collect();
    let mut found: BTreeMap<String, Vec<StoredRecord>> = BTreeMap::new();
    for chunk in releases.chunks(ROWS_PER_INSERT * 5) {
        let sql = format!(
            "SELECT seq, record_id, release_id, kind, actor, at_ms, body, record_version, prev_hash, hash \
             FROM ledger_records WHERE kind IN ('approval_requested', 'approval_resolved') \
             AND release_id IN ({}) ORDER BY seq",
            placeholders(0, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q.bind(*r);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let s = super::stored(&row)?;
            found.entry(s.release_id.clone()).or_default().push(s);
        }
    }
    Ok(found)
}

/// `$1, $2, ...` for `n` values starting after `offset`.
pub(super) fn placeholders(offset: usize, n: usize) -> String {
    (1..=n).map(|i| format!("${}", offset + i)).collect::<Vec<_>>().join(", ")
}

async fn read_leases(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    batch: &[Job],
) -> Result<BTreeMap<String, LeaseRow>, sqlx::Error> {
    let targets: BTreeSet<&str> = batch.iter().filter_map(|j| j.lease.as_ref().map(LeaseOp::target)).collect();
    let mut found = BTreeMap::new();
    let targets: Vec<&str> = targets.into_iter().collect();
    for chunk in targets.chunks(ROWS_PER_INSERT * 5) {
        let lock = if dialect == Dialect::Postgres { " ORDER BY target FOR UPDATE" } else { "" };
        let sql = format!(
            "SELECT target, holder, token, expires_ms FROM ledger_leases WHERE target IN ({}){lock}",
            placeholders(0, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in chunk {
            q = q.bind(*t);
        }
        for r in q.fetch_all(&mut **tx).await? {
            found.insert(r.try_get::<String, _>("target")?, super::roster::lease_row(&r)?);
        }
    }
    Ok(found)
}

async fn write_leases(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    changed: &BTreeMap<String, LeaseRow>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(&String, &LeaseRow)> = changed.iter().collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let values = (0..chunk.len()).map(|i| format!("({})", placeholders(i * 4, 4))).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "INSERT INTO ledger_leases (target, holder, token, expires_ms) VALUES {values} \
             ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_ms = excluded.expires_ms"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (target, row) in chunk {
            q = q.bind(target.as_str()).bind(row.holder.as_str()).bind(row.token).bind(row.expires_ms);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The next record of the chain, hashed.
fn next_record(cur: &mut Cursor, job: &Job, kind: RecordKind, body: &str) -> StoredRecord {
    chain_next(cur, (&job.release_id, &job.actor, job.at_ms), kind, body)
}

/// The record after `cur` for (release, actor, at_ms), hashed; `cur` moves to it.
pub(super) fn chain_next(
    cur: &mut Cursor,
    (release_id, actor, at_ms): (&str, &str, i64),
    kind: RecordKind,
    body: &str,
) -> StoredRecord {
    let mut rec = StoredRecord {
        seq: cur.seq + 1,
        record_id: uuid::Uuid::new_v4().to_string(),
        release_id: release_id.to_string(),
        kind: kind.as_str().to_string(),
        actor: actor.to_string(),
        at_ms,
        body: body.to_string(),
        record_version: RECORD_VERSION,
        prev_hash: cur.prev_hash.clone(),
        hash: String::new(),
    };
    rec.hash = record_hash(&rec);
    cur.seq = rec.seq;
    cur.prev_hash = rec.hash.clone();
    rec
}

pub(super) async fn insert_records(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    rows: &[StoredRecord],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let values = (0..chunk.len()).map(|i| format!("({})", placeholders(i * 10, 10))).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "INSERT INTO ledger_records (seq, record_id, release_id, kind, actor, at_ms, body, record_version, prev_hash, hash) \
             VALUES {values}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.seq)
                .bind(r.record_id.as_str())
                .bind(r.release_id.as_str())
                .bind(r.kind.as_str())
                .bind(r.actor.as_str())
                .bind(r.at_ms)
                .bind(r.body.as_str())
                .bind(r.record_version)
                .bind(r.prev_hash.as_str())
                .bind(r.hash.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    // What the records open or close, in the same transaction.
    super::derived::apply(tx, rows).await?;
    Ok(())
}
