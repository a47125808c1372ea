//! The audit ledger: append-only, hash-chained records in SQL (SQLite by
//! default, PostgreSQL when agents share it), through one `AnyPool` code path.
//!
//! Every tick's decision, every action's intent (before it runs) and outcome
//! (after) is a record. An action needs an [`ExecutionPermit`], which only
//! [`Ledger::record_intent`] issues once the intent is committed: no ledger
//! write, no action.

mod chain;

use std::path::Path;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use thiserror::Error;
use tokio::sync::Mutex;

pub use chain::{GENESIS, Problem, StoredRecord, digest, record_hash, verify_chain};

use crate::executor::{ActionPlan, ExecutionPermit};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The ledger failed. Callers must not act after this.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// Could not open or migrate the database.
    #[error("cannot open ledger at {url}: {reason}")]
    Open {
        /// Database URL (credentials removed).
        url: String,
        /// Driver error text.
        reason: String,
    },
    /// A query failed.
    #[error("ledger query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A body could not be serialised.
    #[error("cannot serialise ledger record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A release began: its facts and configuration digest.
    ReleaseStarted,
    /// One analysis tick: inputs digest, findings, decision, rules.
    Tick,
    /// An action is about to run.
    Intent,
    /// What the action did and whether it verified.
    Outcome,
    /// The release ended.
    ReleaseFinished,
}

impl RecordKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::ReleaseStarted => "release_started",
            RecordKind::Tick => "tick",
            RecordKind::Intent => "intent",
            RecordKind::Outcome => "outcome",
            RecordKind::ReleaseFinished => "release_finished",
        }
    }
}

/// Where an appended record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence number.
    pub seq: i64,
    /// Record hash.
    pub hash: String,
}

/// Result of [`Ledger::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records checked.
    pub records: usize,
    /// Everything wrong, in ledger order; empty means intact.
    pub problems: Vec<Problem>,
}

/// A handle on the ledger database.
pub struct Ledger {
    pool: AnyPool,
    url: String,
    // Appends within one process are serialised so the chain never forks.
    append_lock: Mutex<()>,
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// `sqlite://` URL for a file path, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn stored(row: &AnyRow) -> Result<StoredRecord, sqlx::Error> {
    Ok(StoredRecord {
        seq: row.try_get("seq")?,
        record_id: row.try_get("record_id")?,
        release_id: row.try_get("release_id")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        at_ms: row.try_get("at_ms")?,
        body: row.try_get("body")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

impl Ledger {
    /// Open (creating and migrating if needed) the ledger at `url`.
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        sqlx::any::install_default_drivers();
        let open_err = |e: &dyn std::fmt::Display| LedgerError::Open { url: redact(url), reason: e.to_string() };
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let file = rest.split('?').next().unwrap_or(rest);
            if let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
            }
        }
        let pool = AnyPoolOptions::new().max_connections(4).connect(url).await.map_err(|e| open_err(&e))?;
        MIGRATOR.run(&pool).await.map_err(|e| open_err(&e))?;
        Ok(Self { pool, url: redact(url), append_lock: Mutex::new(()) })
    }

    /// The database URL with credentials removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Append one record; returns once it is committed.
    pub async fn append(
        &self,
        release_id: &str,
        kind: RecordKind,
        actor: &str,
        body: &impl Serialize,
    ) -> Result<Receipt, LedgerError> {
        let body = serde_json::to_string(body)?;
        let _guard = self.append_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1").fetch_optional(&mut *tx).await?;
        let (prev_seq, prev_hash) = match head {
            Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?),
            None => (0, GENESIS.to_string()),
        };
        let mut rec = StoredRecord {
            seq: prev_seq + 1,
            record_id: uuid::Uuid::new_v4().to_string(),
            release_id: release_id.to_string(),
            kind: kind.as_str().to_string(),
            actor: actor.to_string(),
            at_ms: now_ms(),
            body,
            prev_hash,
            hash: String::new(),
        };
        rec.hash = record_hash(&rec);
        sqlx::query(
            "INSERT INTO ledger_records (seq, record_id, release_id, kind, actor, at_ms, body, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(rec.seq)
        .bind(&rec.record_id)
        .bind(&rec.release_id)
        .bind(&rec.kind)
        .bind(&rec.actor)
        .bind(rec.at_ms)
        .bind(&rec.body)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ledger_head (id, seq, hash) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .bind(rec.seq)
        .bind(&rec.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Receipt { seq: rec.seq, hash: rec.hash })
    }

    /// Record the intent to run `plan` and, once committed, issue the permit
    /// the executor needs.
    pub async fn record_intent(
        &self,
        release_id: &str,
        actor: &str,
        plan: &ActionPlan,
    ) -> Result<ExecutionPermit, LedgerError> {
        let receipt = self.append(release_id, RecordKind::Intent, actor, plan).await?;
        Ok(ExecutionPermit::issued_by_ledger(&plan.id, receipt.seq))
    }

    /// Records in ledger order, optionally for one release, at most `limit` (newest last).
    pub async fn list(&self, release_id: Option<&str>, limit: i64) -> Result<Vec<StoredRecord>, LedgerError> {
        let rows =
            match release_id {
                Some(r) => sqlx::query(
                    "SELECT seq, record_id, release_id, kind, actor, at_ms, body, prev_hash, hash FROM ledger_records \
                     WHERE release_id = $1 ORDER BY seq DESC LIMIT $2",
                )
                .bind(r)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
                None => sqlx::query(
                    "SELECT seq, record_id, release_id, kind, actor, at_ms, body, prev_hash, hash FROM ledger_records \
                     ORDER BY seq DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            };
        let mut out = rows.iter().map(stored).collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// One record by sequence number.
    pub async fn get(&self, seq: i64) -> Result<Option<StoredRecord>, LedgerError> {
        let row = sqlx::query(
            "SELECT seq, record_id, release_id, kind, actor, at_ms, body, prev_hash, hash FROM ledger_records WHERE seq = $1",
        )
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(stored).transpose()?)
    }

    /// Check every record's hash and link, and the head.
    pub async fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let rows = sqlx::query(
            "SELECT seq, record_id, release_id, kind, actor, at_ms, body, prev_hash, hash FROM ledger_records ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        let rows = rows.iter().map(stored).collect::<Result<Vec<_>, _>>()?;
        let head = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1").fetch_optional(&self.pool).await?;
        let head = match head {
            Some(r) => Some((r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?)),
            None => None,
        };
        Ok(VerifyReport { records: rows.len(), problems: verify_chain(&rows, head) })
    }

    /// Unix ms of verified automated rollbacks of `target` at or after `since_ms`.
    pub async fn automated_rollbacks(&self, target: &str, since_ms: i64) -> Result<Vec<i64>, LedgerError> {
        let rows = sqlx::query(
            "SELECT at_ms, body FROM ledger_records WHERE kind = 'intent' AND actor = 'agent' AND at_ms >= $1 ORDER BY seq",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let body: String = r.try_get("body")?;
            let plan: serde_json::Value = serde_json::from_str(&body)?;
            if plan["kind"] == "rollback" && plan["target"] == target {
                out.push(r.try_get::<i64, _>("at_ms")?);
            }
        }
        Ok(out)
    }

    /// The pool, for tests that tamper with records as an attacker would.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
