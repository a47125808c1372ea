//! The audit ledger: append-only, hash-chained records in SQL (SQLite by
//! default, PostgreSQL when agents share it), through one `AnyPool` code path.
//!
//! Every tick's decision, every action's intent (before it runs) and outcome
//! (after) is a [`Record`]. An action needs an [`ExecutionPermit`], which only
//! [`Ledger::record_intent`] issues once the intent is committed: no ledger
//! write, no action.
//!
//! Appends go through one writer task per process, which writes whatever
//! has queued up in one transaction (group commit, chain order kept). Across
//! processes the transaction serialises on the head row (`SELECT … FOR
//! UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite in WAL mode), and the
//! per-target lease is read and changed inside that same transaction.

mod chain;
mod compact;
mod derived;
pub mod lease;
pub mod record;
pub mod roster;
mod writer;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

pub use crate::secret::redact_url;
pub use chain::{
    ChainVerifier, Checkpoint, CheckpointParseError, GENESIS, Problem, StoredRecord, record_hash, verify_chain,
};
pub use compact::{Choice, Compaction, choose};
pub use lease::{LeaseOp, LeaseRow};
pub use record::{
    ActionResult, Actor, ApprovalAnswer, ApprovalRequested, ApprovalResolved, ChatAction, ChatMessage, ChatOpsRecord,
    CompactedRecord, IntentRecord, LeaseEvent, LeaseRecord, LeaseRole, OperatorAction, OperatorRecord, OutcomeRecord,
    PersonAction, PersonRequestRecord, RECORD_VERSION, Record, RecordError, RecordKind, ReleaseFinished, ReleasePaused,
    ReleaseStarted, RevisionRecord, TickRecord, TickSummary,
};
pub use roster::{Member, Roster, SHARING};

use crate::policy::memory::{RevisionFact, ServiceRevisions};

use crate::executor::{ActionKind, ActionPlan, ExecutionPermit, Guarded, Planner};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows read per query while streaming the whole ledger (`verify`).
const PAGE: i64 = 5_000;

/// Records at the tail of the chain checked before an agent appends, when it
/// has no checkpoint of its own (about a second on SQLite).
pub const TAIL_CHECK: i64 = 100_000;

/// The ledger failed. Callers must not act after this.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// Could not open or migrate the database.
    #[error("cannot open ledger at {url}")]
    Open {
        /// Database URL (credentials removed).
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A query failed.
    #[error("ledger query failed")]
    Query(#[from] sqlx::Error),
    /// A body could not be serialised.
    #[error("cannot serialise ledger record")]
    Encode(#[from] serde_json::Error),
    /// A stored record is not the shape its kind requires.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The writer task is gone (the runtime is shutting down).
    #[error("ledger writer stopped")]
    WriterGone,
    /// The intent was refused: this agent no longer holds the target's lease.
    #[error("intent refused: the lease on `{target}` is held by `{holder}` with token {token}, newer than ours")]
    Fenced {
        /// Target.
        target: String,
        /// Current holder.
        holder: String,
        /// Current token.
        token: i64,
    },
    /// Compaction found a record whose content does not match its hash, and
    /// removed nothing: the evidence stays for `audit verify`.
    #[error(
        "not compacting: record {seq} does not match its hash (run `backstop audit verify`; a tampered ledger is left as it is)"
    )]
    Tampered {
        /// The record.
        seq: i64,
    },
    /// A live agent on this ledger shares releases another way (another
    /// version): its leases and this agent's would not exclude each other.
    #[error(
        "agent `{instance}`, last heard {age_ms} ms ago, is of another backstop version (it names leases \
         another way, so the two could both act on one target): stop or upgrade it, then start this one"
    )]
    OtherAgentKind {
        /// Its instance id.
        instance: String,
        /// Ms since its last heartbeat.
        age_ms: i64,
    },
    /// Another live process writes this one's heartbeat: two processes
    /// under one instance id would both hold its leases, token and all.
    #[error(
        "another process is running as agent `{instance}` (its heartbeat moved {waited_ms} ms after this \
         one first read it): two processes under one `agent.instance_id` would both hold its leases and \
         could both act on one target; give each its own id (or leave it unset), or stop the other first"
    )]
    SameInstance {
        /// The instance id both were given.
        instance: String,
        /// Ms from this process's first read of the heartbeat to the read that found it moved.
        waited_ms: i64,
    },
    /// The plan names a target the acting executor is not for.
    #[error("intent refused: the plan targets `{plan}` but this run acts on `{acting}`")]
    ForeignTarget {
        /// Target in the plan.
        plan: String,
        /// Target of the executor behind the guard.
        acting: String,
    },
}

/// Where a release that may be continued stands, as its records say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Its first `release_started` record's time, ms since the epoch.
    pub started_ms: i64,
    /// Time 0 of its canary's samples, ms since the epoch: the newest
    /// `release_started` record's `canary_from_ms`, else `started_ms`.
    pub canary_from_ms: i64,
    /// Release seconds it reached: its newest tick's clock (0 before any).
    pub reached_s: u64,
    /// When it was last observed (its newest tick or start), ms since the epoch.
    pub seen_ms: i64,
    /// It is over (its newest end is final): a run again judges nothing.
    pub ended: bool,
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
    pub records: u64,
    /// Records compacted into summaries, of which only the hash is left (checked as links).
    pub compacted: u64,
    /// Everything wrong, in ledger order; empty means intact.
    pub problems: Vec<Problem>,
}

/// An intent whose outcome is not settled.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenIntent {
    /// Its sequence number.
    pub seq: i64,
    /// The release that wrote it.
    pub release_id: String,
    /// The intent.
    pub intent: IntentRecord,
}

/// One append: a record, a lease operation, or both in one transaction.
#[derive(Debug, Clone)]
pub struct Append {
    /// Release the record belongs to.
    pub release_id: String,
    /// Who writes it.
    pub actor: Actor,
    /// Unix ms, from the caller's clock (also the lease's "now").
    pub at_ms: i64,
    /// The record, if any (a lease renewal during an action has none).
    pub record: Option<Record>,
    /// The lease operation, if any.
    pub lease: Option<LeaseOp>,
    /// What the append does to the release's approval requests, in the same transaction.
    pub approvals: ApprovalOps,
    /// Admit the record only while the service has room for one more canary (policy's blast radius).
    pub admit: Option<Admission>,
}

/// A release starting its canary, admitted only while fewer than
/// `max_targets` other targets of its service have a canary running — a
/// release started in acting mode and not finished — decided inside the
/// append's transaction, which holds the ledger's head, so two agents can
/// never both take the last place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The service.
    pub service: String,
    /// The release's own target (a canary there already is this one, continued).
    pub target: String,
    /// Policy's `blast_radius.max_targets`.
    pub max_targets: u32,
}

/// An append's effect on its release's approval requests, decided inside
/// the append's transaction (so on every agent sharing the ledger at once:
/// a request closed by one can never be executed by another).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApprovalOps {
    /// Refuse the append unless request `id` is still open (an answer that
    /// executes must find its request open).
    pub only_if_open: Option<String>,
    /// Close every request of the release still open after the record, with
    /// this closure (an operator's hold or abort, the judge acting on its own).
    pub close_open: Option<crate::policy::approval::Closure>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// Where the record landed (none when there was no record, or it was refused).
    pub receipt: Option<Receipt>,
    /// The caller's lease role afterwards, when a lease op was given.
    pub role: Option<LeaseRole>,
    /// The record was refused by its lease op (a fenced intent) or its admission.
    pub refused: bool,
    /// Refused by its admission: the other targets of the service in canary, sorted.
    pub in_canary: Vec<String>,
}

/// Which SQL dialect the URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A handle on the ledger database.
pub struct Ledger {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    jobs: mpsc::Sender<writer::Job>,
    /// Told how long each committed append took (a service's metrics).
    on_append: std::sync::OnceLock<AppendLatency>,
    /// The newest record this handle appended (an anchor for the next start).
    newest: std::sync::Mutex<Option<Checkpoint>>,
    /// The hash of the ledger's first record, when this handle wrote it.
    first: std::sync::Mutex<Option<String>>,
    /// Appends that found the writer's queue full and waited for room.
    queue_waits: std::sync::atomic::AtomicU64,
    /// The longest such wait, µs.
    queue_wait_max_us: std::sync::atomic::AtomicU64,
}

/// Back-pressure on the writer's queue so far: appends are never dropped;
/// when the queue is full they wait for room, and this says how often and how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueuePressure {
    /// Appends that waited for room.
    pub waits: u64,
    /// The longest wait.
    pub max_wait: Duration,
}

/// Receives the end-to-end latency of each committed append.
pub type AppendLatency = Box<dyn Fn(Duration) + Send + Sync>;

/// `sqlite://` URL for a file path, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

const COLUMNS: &str = "seq, record_id, release_id, kind, actor, at_ms, body, record_version, prev_hash, hash";

fn stored(row: &AnyRow) -> Result<StoredRecord, sqlx::Error> {
    Ok(StoredRecord {
        seq: row.try_get("seq")?,
        record_id: row.try_get("record_id")?,
        release_id: row.try_get("release_id")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        at_ms: row.try_get("at_ms")?,
        body: row.try_get("body")?,
        record_version: row.try_get("record_version")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Whether a failed open is worth another try: several processes creating
/// and migrating one fresh SQLite file at once trip over each other once.
/// Errors another process opening the same new ledger at the same moment
/// causes (its migration created the table or added the column first; the
/// loser's migration rolled back): open again and the migrator finds it done.
fn transient_open(e: &(dyn std::error::Error + 'static)) -> bool {
    let text = e.to_string();
    ["locked", "already exists", "busy", "duplicate column"].iter().any(|t| text.contains(t))
}

/// The ledger was migrated by a newer backstop: this one must not write to it
/// (agents of two versions on one ledger may not exclude each other; see
/// [`roster::SHARING`]).
#[derive(Debug, Error)]
#[error(
    "it was set up by a newer backstop (its migration {migration} is not one this version knows): \
     run the version the agents sharing it run"
)]
pub struct NewerLedger {
    /// The applied migration this version does not have.
    pub migration: i64,
    /// The migrator's refusal.
    #[source]
    pub source: sqlx::migrate::MigrateError,
}

fn newer_ledger(e: sqlx::migrate::MigrateError) -> Box<dyn std::error::Error + Send + Sync> {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(migration) => {
            Box::new(NewerLedger { migration, source: sqlx::migrate::MigrateError::VersionMissing(migration) })
        }
        e => Box::new(e),
    }
}

/// A SQLite ledger named in a folder that does not exist.
#[derive(Debug, Error)]
#[error("the folder {} does not exist (create it, or name another ledger)", .0.display())]
pub struct MissingFolder(pub std::path::PathBuf);

/// `ledger.db` under the user's data directory, else `./backstop.db`.
pub fn default_path() -> std::path::PathBuf {
    dirs::data_dir().map(|d| d.join("backstop").join("ledger.db")).unwrap_or_else(|| "backstop.db".into())
}

async fn connect(url: &str, dialect: Dialect) -> Result<AnyPool, Box<dyn std::error::Error + Send + Sync>> {
    if dialect == Dialect::Sqlite
        && let Some(rest) = url.strip_prefix("sqlite://")
    {
        let file = rest.split('?').next().unwrap_or(rest);
        if let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            // Only the default folder is made: a missing folder elsewhere is a
            // typo more often than a wish, and a ledger there would be lost.
            if default_path().parent() != Some(dir) {
                return Err(
                    format!("the folder {} does not exist (create it, or name another ledger)", dir.display()).into()
                );
            }
            std::fs::create_dir_all(dir)?;
        }
    }
    let pool = pool_of(url, dialect, READERS).await?;
    if dialect == Dialect::Sqlite {
        // WAL lets readers run beside the one writer; it is a property of the
        // file, set once (changing it needs a lock busy_timeout cannot wait for).
        sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
    }
    MIGRATOR.run(&pool).await.map_err(newer_ledger)?;
    derive_once(&pool, dialect).await?;
    Ok(pool)
}

/// Derive the open-state tables when the marker says they never were (a
/// ledger written before migration 0005): once, holding the head like a
/// write; a second agent opening the same ledger at once finds the marker
/// under the head and does nothing.
async fn derive_once(pool: &AnyPool, dialect: Dialect) -> Result<(), sqlx::Error> {
    if derived::marked(pool).await? {
        return Ok(());
    }
    let (mut tx, _) = writer::begin_at_head(pool, dialect).await?;
    if !derived::marked(&mut *tx).await? {
        derived::derive(&mut tx).await?;
    }
    tx.commit().await
}

/// Ms a PostgreSQL transaction may wait on its client before the server ends
/// it: far above a batch's gaps between statements (a few ms), far below a lease.
const STALLED_TRANSACTION_MS: u32 = 1_000;

/// Connections for reads. The writer has its own (see [`Ledger::open`]).
const READERS: u32 = 4;

/// A pool of `n` connections to `url`.
async fn pool_of(url: &str, dialect: Dialect, n: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(n)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                match dialect {
                    // Wait for another process's write instead of failing with "database is locked".
                    Dialect::Sqlite => {
                        sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut *conn).await?;
                    }
                    // A process stopped mid-commit (SIGSTOP, a frozen VM) would hold the
                    // head's row lock, and so every agent's writes, for as long as it
                    // stays stopped: the server ends such a transaction after this long
                    // (nothing of it is committed; the writer tries the batch again).
                    Dialect::Postgres => {
                        let sql = format!("SET idle_in_transaction_session_timeout = {STALLED_TRANSACTION_MS}");
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// Rows as stored records with their typed bodies, in the order given.
fn typed(rows: &[AnyRow]) -> Result<Vec<(StoredRecord, Record)>, LedgerError> {
    rows.iter()
        .map(|r| {
            let s = stored(r)?;
            let rec = Record::from_stored(&s)?;
            Ok((s, rec))
        })
        .collect()
}

impl Ledger {
    /// Open (creating and migrating if needed) the ledger at `url`.
    pub async fn open(url: &str) -> Result<Self, LedgerError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") { Dialect::Sqlite } else { Dialect::Postgres };
        let mut attempt = 0;
        let pool = loop {
            match connect(url, dialect).await {
                Ok(p) => break p,
                Err(e) if attempt < 20 && transient_open(e.as_ref()) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(source) => return Err(LedgerError::Open { url: redact_url(url), source }),
            }
        };
        // The writer's own connection: group commits never queue behind reads
        // (10,000 releases starting at once read their history through the
        // readers' pool; sharing it held appends back for seconds).
        let write_pool = pool_of(url, dialect, 1)
            .await
            .map_err(|source| LedgerError::Open { url: redact_url(url), source: Box::new(source) })?;
        let jobs = writer::spawn(write_pool, dialect);
        Ok(Self {
            pool,
            dialect,
            url: redact_url(url),
            jobs,
            on_append: std::sync::OnceLock::new(),
            newest: std::sync::Mutex::new(None),
            first: std::sync::Mutex::new(None),
            queue_waits: Default::default(),
            queue_wait_max_us: Default::default(),
        })
    }

    /// Report every committed append's latency to `f` (set once; later calls are ignored).
    pub fn observe_appends(&self, f: AppendLatency) {
        let _ = self.on_append.set(f);
    }

    /// The newest record appended through this handle, if any.
    pub fn newest_appended(&self) -> Option<Checkpoint> {
        self.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The hash of the ledger's first record, when this handle appended it.
    pub fn first_appended(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The database URL with credentials removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Append a record and/or apply a lease op, in one transaction; returns once committed.
    pub async fn submit(&self, append: Append) -> Result<Appended, LedgerError> {
        let (reply, answer) = oneshot::channel();
        // Any echo of a secret this process read (a server quoting the key it
        // refused) is masked before it is hashed into the chain.
        let body = append
            .record
            .as_ref()
            .map(|r| r.body_json().map(|b| (r.kind(), crate::secret::mask(&b).into_owned())))
            .transpose()?;
        let job = writer::Job {
            release_id: append.release_id,
            actor: append.actor.to_string(),
            at_ms: append.at_ms,
            body,
            lease: append.lease,
            approvals: append.approvals,
            admit: append.admit,
            reply,
        };
        let started = tokio::time::Instant::now();
        self.enqueue(job).await?;
        let done = answer.await.map_err(|_| LedgerError::WriterGone)?;
        if let (Ok(_), Some(f)) = (&done, self.on_append.get()) {
            f(started.elapsed());
        }
        if let Ok(Appended { receipt: Some(r), .. }) = &done {
            let mut newest = self.newest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if newest.as_ref().is_none_or(|c| c.seq < r.seq) {
                *newest = Some(Checkpoint { seq: r.seq, hash: r.hash.clone() });
            }
            if r.seq == 1 {
                *self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r.hash.clone());
            }
        }
        done
    }

    /// Hand `job` to the writer, waiting for room (and counting the wait) when its queue is full.
    async fn enqueue(&self, job: writer::Job) -> Result<(), LedgerError> {
        use std::sync::atomic::Ordering::Relaxed;
        let job = match self.jobs.try_send(job) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(LedgerError::WriterGone),
            Err(mpsc::error::TrySendError::Full(job)) => job,
        };
        let waited = tokio::time::Instant::now();
        self.jobs.send(job).await.map_err(|_| LedgerError::WriterGone)?;
        self.queue_waits.fetch_add(1, Relaxed);
        self.queue_wait_max_us.fetch_max(waited.elapsed().as_micros() as u64, Relaxed);
        Ok(())
    }

    /// Back-pressure on the writer's queue since this handle opened.
    pub fn queue_pressure(&self) -> QueuePressure {
        use std::sync::atomic::Ordering::Relaxed;
        QueuePressure {
            waits: self.queue_waits.load(Relaxed),
            max_wait: Duration::from_micros(self.queue_wait_max_us.load(Relaxed)),
        }
    }

    /// Append one record; returns once it is committed.
    pub async fn append(
        &self,
        release_id: &str,
        actor: &Actor,
        at_ms: i64,
        record: Record,
    ) -> Result<Receipt, LedgerError> {
        let append = Append {
            release_id: release_id.into(),
            actor: actor.clone(),
            at_ms,
            record: Some(record),
            lease: None,
            approvals: ApprovalOps::default(),
            admit: None,
        };
        self.submit(append).await?.receipt.ok_or(LedgerError::WriterGone)
    }

    /// Record the intent to run `plan` and, once committed, issue the permit
    /// the executor needs. With `fence`, the database refuses the intent
    /// unless that lease is still ours. `acting` is the executor behind its
    /// guard: only an acting run holds one (an advisory run has planners
    /// only), so an advisory run cannot reach this at all, and a plan for
    /// any other target is refused before anything is written.
    pub async fn record_intent(
        &self,
        acting: &Guarded,
        release_id: &str,
        actor: &Actor,
        at_ms: i64,
        plan: &ActionPlan,
        (fence, approvals): (Option<LeaseOp>, ApprovalOps),
    ) -> Result<ExecutionPermit, LedgerError> {
        if plan.target != acting.target() {
            return Err(LedgerError::ForeignTarget { plan: plan.target.clone(), acting: acting.target().into() });
        }
        let token = match &fence {
            Some(LeaseOp::Fence { token, .. }) => Some(*token),
            _ => None,
        };
        let record = Record::Intent(IntentRecord { plan: plan.clone(), fence: token });
        let append = Append {
            release_id: release_id.into(),
            actor: actor.clone(),
            at_ms,
            record: Some(record),
            lease: fence,
            approvals,
            admit: None,
        };
        let done = self.submit(append).await?;
        match (done.refused, done.receipt) {
            (false, Some(r)) => Ok(ExecutionPermit::issued_by_ledger(&plan.id, r.seq)),
            (_, _) => {
                let (holder, token) = match done.role {
                    Some(LeaseRole::Follower { holder, token }) => (holder, token),
                    _ => (String::new(), 0),
                };
                Err(LedgerError::Fenced { target: plan.target.clone(), holder, token })
            }
        }
    }

    /// Records in ledger order, optionally for one release, at most `limit` (newest last).
    pub async fn list(&self, release_id: Option<&str>, limit: i64) -> Result<Vec<StoredRecord>, LedgerError> {
        let rows = match release_id {
            Some(r) => {
                let sql =
                    format!("SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 ORDER BY seq DESC LIMIT $2");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(r).bind(limit).fetch_all(&self.pool).await?
            }
            None => {
                let sql = format!("SELECT {COLUMNS} FROM ledger_records ORDER BY seq DESC LIMIT $1");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit).fetch_all(&self.pool).await?
            }
        };
        let mut out = rows.iter().map(stored).collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Records of `kind` (of one release, or of all), after `after_seq`, typed, in ledger order;
    /// at most `limit`, the newest when there are more.
    pub async fn of_kind(
        &self,
        kind: RecordKind,
        release_id: Option<&str>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(StoredRecord, Record)>, LedgerError> {
        let rows = match release_id {
            Some(r) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 AND kind = $2 AND seq > $3 \
                     ORDER BY seq DESC LIMIT $4"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(r).bind(kind.as_str()).bind(after_seq).bind(limit)
            }
            None => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM ledger_records WHERE kind = $1 AND seq > $2 ORDER BY seq DESC LIMIT $3"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kind.as_str()).bind(after_seq).bind(limit)
            }
        }
        .fetch_all(&self.pool)
        .await?;
        let mut out = typed(&rows)?;
        out.reverse();
        Ok(out)
    }

    /// Records of `kind` (of every release) after `after_seq`, typed, in
    /// ledger order: the oldest `limit` of them, so a reader that pages on
    /// from the last seq it got reads every one, however many there are.
    pub async fn of_kind_from(
        &self,
        kind: RecordKind,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(StoredRecord, Record)>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM ledger_records WHERE kind = $1 AND seq > $2 ORDER BY seq LIMIT $3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(kind.as_str())
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        typed(&rows)
    }

    /// Every record of one release, typed, in ledger order.
    pub async fn release_records(&self, release_id: &str) -> Result<Vec<(StoredRecord, Record)>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(release_id).fetch_all(&self.pool).await?;
        typed(&rows)
    }

    /// What people did to one release — operator records, approval
    /// requests, answers and rulings — typed, in ledger order, without
    /// reading its tick records (the bulk of a release's rows).
    pub async fn people_records(&self, release_id: &str) -> Result<Vec<(StoredRecord, Record)>, LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 \
             AND kind IN ('operator', 'approval_requested', 'approval_answer', 'approval_resolved', 'person_request') ORDER BY seq"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(release_id).fetch_all(&self.pool).await?;
        typed(&rows)
    }

    /// Answers and rulings of one release's approval requests after
    /// `after_seq`, typed, in ledger order (what a loop with a request open reads).
    pub async fn approval_records_after(
        &self,
        release_id: &str,
        after_seq: i64,
    ) -> Result<Vec<(StoredRecord, Record)>, LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 AND seq > $2 \
             AND kind IN ('approval_resolved', 'approval_answer') ORDER BY seq"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(release_id).bind(after_seq).fetch_all(&self.pool).await?;
        typed(&rows)
    }

    /// Whether a ruling under request `id` is recorded for `release_id`
    /// (the holder's loop and every relaying agent ask the same question).
    pub async fn ruled_on(&self, release_id: &str, id: &str) -> Result<bool, LedgerError> {
        let rows = self.approval_records_after(release_id, 0).await?;
        Ok(rows.iter().any(|(_, rec)| matches!(rec, Record::ApprovalResolved(a) if a.id == id)))
    }

    /// When release `release_id` first started (its oldest `release_started`
    /// record's time, ms since the epoch); `None` when it never did. A
    /// continued release reads its window from there, not from its restart.
    pub async fn first_started_ms(&self, release_id: &str) -> Result<Option<i64>, LedgerError> {
        let row = sqlx::query(
            "SELECT at_ms FROM ledger_records WHERE release_id = $1 AND kind = 'release_started' ORDER BY seq LIMIT 1",
        )
        .bind(release_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<i64, _>("at_ms")?),
            None => None,
        })
    }

    /// Where release `release_id` stands for a run that would continue it;
    /// `None` when it never started.
    pub async fn resume_point(&self, release_id: &str) -> Result<Option<ResumePoint>, LedgerError> {
        let Some(started_ms) = self.first_started_ms(release_id).await? else { return Ok(None) };
        let canary_from_ms = match self.newest_of(release_id, "'release_started'").await? {
            Some((_, Record::ReleaseStarted(s))) => s.canary_from_ms.unwrap_or(started_ms),
            _ => started_ms,
        };
        let (reached_s, seen_ms) = match self.newest_of(release_id, "'release_started', 'tick'").await? {
            Some((row, Record::Tick(t))) => (t.now_s, row.at_ms),
            Some((row, Record::ReleaseStarted(s))) => (s.continued_from_s.unwrap_or(0), row.at_ms),
            _ => (0, started_ms),
        };
        let ended = self.finished(release_id).await?.is_some_and(|f| f.status.is_final());
        Ok(Some(ResumePoint { started_ms, canary_from_ms, reached_s, seen_ms, ended }))
    }

    /// The release's newest record of one of `kinds` (SQL string literals, from code only).
    async fn newest_of(
        &self,
        release_id: &str,
        kinds: &'static str,
    ) -> Result<Option<(StoredRecord, Record)>, LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 AND kind IN ({kinds}) ORDER BY seq DESC LIMIT 1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(release_id).fetch_all(&self.pool).await?;
        Ok(typed(&rows)?.into_iter().next())
    }

    /// The release's final record, if it has finished (in any run, by any agent).
    pub async fn finished(&self, release_id: &str) -> Result<Option<ReleaseFinished>, LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 AND kind = 'release_finished' ORDER BY seq DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(release_id).fetch_optional(&self.pool).await?;
        match row.as_ref().map(stored).transpose()? {
            Some(s) => match Record::from_stored(&s)? {
                Record::ReleaseFinished(f) => Ok(Some(f)),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Finished releases whose id starts with `prefix`, newest first, at most
    /// `limit`: earlier analyses of one release and candidate made from
    /// other settings (see `release::release_id_prefix`).
    pub async fn finished_with_prefix(
        &self,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<(String, ReleaseFinished)>, LedgerError> {
        // LIKE narrows the rows; the exact prefix is checked here (`_` and `%` are LIKE's own).
        let sql = format!(
            "SELECT {COLUMNS} FROM ledger_records WHERE kind = 'release_finished' AND release_id LIKE $1 \
             ORDER BY seq DESC LIMIT $2"
        );
        let pattern = format!("{prefix}%");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(pattern).bind(limit).fetch_all(&self.pool).await?;
        Ok(typed(&rows)?
            .into_iter()
            .filter_map(|(s, rec)| match rec {
                Record::ReleaseFinished(f) if s.release_id.starts_with(prefix) => Some((s.release_id, f)),
                _ => None,
            })
            .collect())
    }

    /// Intents on `target` whose outcome is missing or unresolved, oldest
    /// first: the few the derived table names, not every intent ever recorded.
    pub async fn open_intents(&self, target: &str) -> Result<Vec<OpenIntent>, LedgerError> {
        let mut open = Vec::new();
        for s in derived::open_intent_records(&self.pool, target).await? {
            if let Record::Intent(i) = Record::from_stored(&s)? {
                open.push(OpenIntent { seq: s.seq, release_id: s.release_id, intent: i });
            }
        }
        Ok(open)
    }

    /// The intent of plan `plan_id`, if one was recorded. An open one (what
    /// `audit resolve` is for) is found by its key; only a settled or unknown
    /// plan id reads every intent.
    pub async fn intent(&self, plan_id: &str) -> Result<Option<OpenIntent>, LedgerError> {
        if let Some(s) = derived::open_intent_record(&self.pool, plan_id).await?
            && let Record::Intent(i) = Record::from_stored(&s)?
        {
            return Ok(Some(OpenIntent { seq: s.seq, release_id: s.release_id.clone(), intent: i }));
        }
        let sql = format!("SELECT {COLUMNS} FROM ledger_records WHERE kind = 'intent' ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        for row in &rows {
            let s = stored(row)?;
            if let Record::Intent(i) = Record::from_stored(&s)?
                && i.plan.id == plan_id
            {
                return Ok(Some(OpenIntent { seq: s.seq, release_id: s.release_id.clone(), intent: i }));
            }
        }
        Ok(None)
    }

    /// One record by sequence number.
    pub async fn get(&self, seq: i64) -> Result<Option<StoredRecord>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM ledger_records WHERE seq = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(seq).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(stored).transpose()?)
    }

    /// The head: the last record's sequence number and hash, to keep outside the database.
    pub async fn checkpoint(&self) -> Result<Checkpoint, LedgerError> {
        let head = self.head().await?;
        let (seq, hash) = head.unwrap_or((0, GENESIS.to_string()));
        Ok(Checkpoint { seq, hash })
    }

    async fn head(&self) -> Result<Option<(i64, String)>, LedgerError> {
        let head = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(match head {
            Some(r) => Some((r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?)),
            None => None,
        })
    }

    /// Check every hash, link and the head, page by page (constant memory),
    /// every compaction summary against the hashes kept for it, and, given a
    /// checkpoint kept outside the database, that the history up to it is
    /// the one that was checkpointed.
    pub async fn verify(&self, checkpoint: Option<Checkpoint>) -> Result<VerifyReport, LedgerError> {
        let head = self.head().await?;
        let mut v = ChainVerifier::new(checkpoint);
        let upto = self.last_seq().await?.max(head.as_ref().map_or(0, |h| h.0));
        self.feed_chain(&mut v, 0, upto).await?;
        let compacted = v.compacted();
        let (records, mut problems) = v.finish(head);
        problems.extend(self.verify_compactions().await?);
        Ok(VerifyReport { records, compacted, problems })
    }

    /// The highest sequence number stored, whatever the head says.
    async fn last_seq(&self) -> Result<i64, LedgerError> {
        let row = sqlx::query("SELECT MAX(seq) AS seq FROM ledger_records").fetch_one(&self.pool).await?;
        Ok(row.try_get::<Option<i64>, _>("seq")?.unwrap_or(0))
    }

    /// Feed `v` every position with `after < seq <= upto` in order: a
    /// record, or the hash a compacted one left. Pages by ranges of
    /// sequence numbers (each holds one record or one hash), so neither
    /// database sorts more than a page.
    async fn feed_chain(&self, v: &mut ChainVerifier, after: i64, upto: i64) -> Result<(), LedgerError> {
        let sql = format!(
            "SELECT {COLUMNS}, CAST(0 AS BIGINT) AS compacted FROM ledger_records WHERE seq > $1 AND seq <= $2 \
             UNION ALL SELECT seq, '' AS record_id, '' AS release_id, '' AS kind, '' AS actor, \
             CAST(0 AS BIGINT) AS at_ms, '' AS body, CAST(0 AS BIGINT) AS record_version, '' AS prev_hash, hash, \
             CAST(1 AS BIGINT) AS compacted FROM ledger_compacted WHERE seq > $1 AND seq <= $2 ORDER BY seq"
        );
        let mut from = after;
        while from < upto {
            let to = from.saturating_add(PAGE).min(upto);
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(from).bind(to).fetch_all(&self.pool).await?;
            for row in &rows {
                if row.try_get::<i64, _>("compacted")? == 1 {
                    v.feed_compacted(row.try_get("seq")?, &row.try_get::<String, _>("hash")?);
                } else {
                    v.feed(&stored(row)?);
                }
            }
            from = to;
        }
        Ok(())
    }

    /// The hash at `seq`: its record's, or the one kept when it was compacted.
    async fn hash_at(&self, seq: i64) -> Result<Option<String>, LedgerError> {
        if let Some(r) = self.get(seq).await? {
            return Ok(Some(r.hash));
        }
        let row = sqlx::query("SELECT hash FROM ledger_compacted WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>("hash")).transpose()?)
    }

    /// Check the chain's recent history before appending to it: every record
    /// after `anchor` (a checkpoint this agent kept outside the database; the
    /// record there must still have its hash) or, without one, the last
    /// [`TAIL_CHECK`] records, and the head. A ledger edited there (rehashed or
    /// not after the anchor) shows problems; `audit verify` checks all of it.
    pub async fn verify_recent(&self, anchor: Option<Checkpoint>) -> Result<VerifyReport, LedgerError> {
        let head = self.head().await?;
        let head_seq = head.as_ref().map_or(0, |h| h.0);
        let tail_from = (head_seq - TAIL_CHECK).max(0);
        let mut early = Vec::new();
        let (from, anchor) = match anchor.filter(|c| c.seq > 0) {
            None => (tail_from, None),
            Some(c) if c.seq > head_seq => {
                early.push(Problem::CheckpointMissing { seq: c.seq });
                (tail_from, None)
            }
            Some(c) if c.seq <= tail_from => (c.seq, Some(c)),
            Some(c) => (tail_from, Some(c)),
        };
        let prev = match from {
            0 => GENESIS.to_string(),
            seq => self.hash_at(seq).await?.unwrap_or_default(),
        };
        // The verifier starts after `from`: an anchor exactly there is compared here.
        let anchor = match anchor {
            Some(c) if c.seq == from => {
                if c.hash != prev {
                    early.push(Problem::CheckpointMismatch { seq: c.seq, expected: c.hash, found: prev.clone() });
                }
                None
            }
            other => other,
        };
        let mut v = ChainVerifier::after(from, prev, anchor);
        // Up to the head as read: other agents may append meanwhile, and what
        // they add after it is checked at their next start, or ours.
        self.feed_chain(&mut v, from, head_seq).await?;
        let compacted = v.compacted();
        let (records, problems) = v.finish(head);
        early.extend(problems);
        Ok(VerifyReport { records, compacted, problems: early })
    }

    /// Automated rollbacks of `target` at or after `since_ms`: intents
    /// written by an agent (a human-approved one is not automated).
    pub async fn automated_rollbacks(
        &self,
        target: &str,
        since_ms: i64,
    ) -> Result<Vec<crate::policy::PastRollback>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM ledger_records WHERE kind = 'intent' AND at_ms >= $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since_ms).fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for row in &rows {
            let s = stored(row)?;
            let by_agent = s.actor.parse::<Actor>().is_ok_and(|a| a.is_agent());
            if let Record::Intent(i) = Record::from_stored(&s)?
                && by_agent
                && i.plan.kind == ActionKind::Rollback
                && i.plan.target == target
            {
                out.push(crate::policy::PastRollback { at_ms: s.at_ms, release_id: s.release_id.clone() });
            }
        }
        Ok(out)
    }

    /// What the ledger remembers of `service`'s revisions: every revision
    /// record of the service, in ledger order, folded (release memory).
    pub async fn service_revisions(&self, service: &str) -> Result<ServiceRevisions, LedgerError> {
        let prefix = RevisionRecord::ledger_id(service, "");
        Ok(self.revision_facts(Some(&prefix)).await?.remove(service).unwrap_or_default())
    }

    /// Every service's revisions, by service.
    pub async fn all_revisions(&self) -> Result<std::collections::BTreeMap<String, ServiceRevisions>, LedgerError> {
        self.revision_facts(None).await
    }

    async fn revision_facts(
        &self,
        prefix: Option<&str>,
    ) -> Result<std::collections::BTreeMap<String, ServiceRevisions>, LedgerError> {
        // LIKE narrows the rows (on the kind index); the exact prefix is checked here.
        let sql =
            format!("SELECT {COLUMNS} FROM ledger_records WHERE kind = 'revision' AND release_id LIKE $1 ORDER BY seq");
        let pattern = format!("{}%", prefix.unwrap_or(record::REVISION_PREFIX));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(pattern).fetch_all(&self.pool).await?;
        let mut by_service: std::collections::BTreeMap<String, Vec<RevisionFact>> = Default::default();
        for (s, rec) in typed(&rows)? {
            let Record::Revision(r) = rec else { continue };
            if prefix.is_some_and(|p| !s.release_id.starts_with(p)) {
                continue;
            }
            let fact = RevisionFact { revision: r.revision, at_ms: s.at_ms, by: s.actor, event: r.event };
            by_service.entry(r.service).or_default().push(fact);
        }
        Ok(by_service.into_iter().map(|(k, v)| (k, ServiceRevisions::fold(v))).collect())
    }

    /// The pool, for tests that tamper with records as an attacker would.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
