//! Compaction: a finished release's tick records — the bulk of the ledger,
//! one per release per tick — are removed once the release has been over
//! for `ledger.compact_after_days`, and summed up in one `compacted` record
//! appended at the head of the chain. Everything else stays whole: the
//! release's start, leases, intents, outcomes, people's records, its end,
//! its last tick and its last tick with a consultation (what `advise` reports).
//!
//! Each removed record's sequence number and hash stay in `ledger_compacted`,
//! so `audit verify` still checks the next record's link across the gap and
//! a checkpoint taken at a removed record; the summary records a digest of
//! those rows, so one added there (a kept record deleted and passed off as
//! compacted), removed or changed shows too. Records are checked against
//! their hashes before they are removed: a tampered ledger is not compacted.
//!
//! [`choose`] is pure; [`Ledger::compact`] reads and writes, one group of
//! releases per transaction, holding the head like any append (agents
//! compacting at once skip what another already did).

use sqlx::Row;

use super::chain::{RemovedDigest, StoredRecord, record_hash};
use super::record::{Actor, CompactedRecord, Record, RecordKind, TickRecord, TickSummary};
use super::writer::{self, Cursor};
use super::{COLUMNS, Ledger, LedgerError, Problem, typed};

/// Releases compacted in one transaction (about 180 ticks each at a 10-s tick
/// over half an hour: some 1,800 rows deleted per commit), small enough that
/// appends waiting behind it wait a fraction of a second (`bench --compact`).
const GROUP: i64 = 10;

/// Rows per `DELETE … IN` / multi-row `INSERT` statement.
const ROWS_PER_STATEMENT: usize = 500;

/// Summaries checked per read in `audit verify` (with their kept hashes:
/// about 180 rows each, so some 18,000 rows a read).
const SUMMARIES_PER_READ: i64 = 100;

/// Tries of one group's transaction when another writer holds the database.
const MAX_TRIES: u32 = 20;

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compaction {
    /// Releases summed up (one `compacted` record each).
    pub releases: u64,
    /// Tick records removed.
    pub removed: u64,
    /// The longest transaction, which other writers waited behind.
    pub longest_group: std::time::Duration,
}

/// Which of one finished release's tick records to remove, and what they said.
#[derive(Debug)]
pub struct Choice<'a> {
    /// To remove, in ledger order.
    pub remove: Vec<&'a StoredRecord>,
    /// Counts over the removed ticks.
    pub summary: TickSummary,
}

/// The ticks (ledger order) to remove: all but the last, and the last that
/// carries a consultation (the model's last word, which a report shows).
pub fn choose(ticks: &[(StoredRecord, TickRecord)]) -> Choice<'_> {
    let last = ticks.len().checked_sub(1);
    let last_consulted = ticks.iter().rposition(|(_, t)| t.consultation.is_some());
    let mut choice = Choice { remove: Vec::new(), summary: TickSummary::default() };
    for (i, (stored, tick)) in ticks.iter().enumerate() {
        if Some(i) == last || Some(i) == last_consulted {
            continue;
        }
        choice.remove.push(stored);
        choice.summary.add(tick);
    }
    choice
}

/// A finished release that may have ticks to compact.
struct Candidate {
    release_id: String,
    finished_seq: i64,
}

/// One page of ends read for compaction.
struct Candidates {
    /// The final ones.
    found: Vec<Candidate>,
    /// The last end read (final or not).
    through: i64,
    /// More ends may follow.
    more: bool,
}

/// What one group's transaction writes.
#[derive(Default)]
struct Pending {
    summaries: Vec<StoredRecord>,
    /// (seq, hash, summary seq) of each removed record.
    removed: Vec<(i64, String, i64)>,
}

impl Ledger {
    /// Compact the tick records of releases whose final end was recorded
    /// before `finished_before_ms`, at most `limit` releases, oldest end
    /// first. `at_ms` and `actor` stamp the summaries.
    pub async fn compact(
        &self,
        finished_before_ms: i64,
        (at_ms, actor): (i64, &Actor),
        limit: u64,
    ) -> Result<Compaction, LedgerError> {
        let mut after = self.compacted_through().await?;
        let mut done = Compaction::default();
        while done.releases < limit {
            let page = self.candidates(after, finished_before_ms).await?;
            if page.through == after {
                break;
            }
            after = page.through;
            if !page.found.is_empty() {
                let started = std::time::Instant::now();
                let got = self.compact_group_with_retry(&page.found, at_ms, &actor.to_string()).await?;
                done.longest_group = done.longest_group.max(started.elapsed());
                done.releases += got.releases;
                done.removed += got.removed;
            }
            if !page.more {
                break;
            }
        }
        Ok(done)
    }

    /// The `finished_seq` of the newest summary: releases that ended before
    /// it were all looked at by an earlier compaction.
    async fn compacted_through(&self) -> Result<i64, LedgerError> {
        let newest = self.of_kind(RecordKind::Compacted, None, 0, 1).await?;
        Ok(match newest.last() {
            Some((_, Record::Compacted(c))) => c.finished_seq,
            _ => 0,
        })
    }

    /// Final ends after `after_seq`, in ledger order, up to the first
    /// recorded at or after `before_ms`. A page of ends that may continue
    /// (`interrupted`) holds none, yet still moves the reading on.
    async fn candidates(&self, after_seq: i64, before_ms: i64) -> Result<Candidates, LedgerError> {
        let page = self.of_kind_from(RecordKind::ReleaseFinished, after_seq, GROUP).await?;
        let mut out = Candidates { found: Vec::new(), through: after_seq, more: page.len() as i64 == GROUP };
        for (stored, record) in page {
            if stored.at_ms >= before_ms {
                out.more = false;
                break;
            }
            out.through = stored.seq;
            if let Record::ReleaseFinished(f) = record
                && f.status.is_final()
            {
                out.found.push(Candidate { release_id: stored.release_id, finished_seq: stored.seq });
            }
        }
        Ok(out)
    }

    async fn compact_group_with_retry(
        &self,
        group: &[Candidate],
        at_ms: i64,
        actor: &str,
    ) -> Result<Compaction, LedgerError> {
        let mut tries = 0;
        loop {
            match self.compact_group(group, at_ms, actor).await {
                Err(LedgerError::Query(e)) if tries < MAX_TRIES && writer::retryable(&e) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }

    /// One transaction: sum up each release of `group` not compacted yet,
    /// remove its ticks, keep their hashes, move the head.
    async fn compact_group(&self, group: &[Candidate], at_ms: i64, actor: &str) -> Result<Compaction, LedgerError> {
        let (mut tx, mut cur) = writer::begin_at_head(self.pool(), self.dialect).await?;
        let mut pending = Pending::default();
        for c in group {
            summarise(&mut tx, c, &mut cur, (at_ms, actor), &mut pending).await?;
        }
        if pending.summaries.is_empty() {
            tx.rollback().await?;
            return Ok(Compaction::default());
        }
        for chunk in pending.removed.chunks(ROWS_PER_STATEMENT) {
            let sql = format!("DELETE FROM ledger_records WHERE seq IN ({})", writer::placeholders(0, chunk.len()));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, _, _) in chunk {
                q = q.bind(*seq);
            }
            q.execute(&mut *tx).await?;
            let values = (0..chunk.len())
                .map(|i| format!("({})", writer::placeholders(i * 3, 3)))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO ledger_compacted (seq, hash, summary_seq) VALUES {values}");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, hash, summary) in chunk {
                q = q.bind(*seq).bind(hash.as_str()).bind(*summary);
            }
            q.execute(&mut *tx).await?;
        }
        writer::insert_records(&mut tx, &pending.summaries).await?;
        writer::move_head(&mut tx, &cur).await?;
        tx.commit().await?;
        let (releases, removed) = (pending.summaries.len() as u64, pending.removed.len() as u64);
        Ok(Compaction { releases, removed, ..Compaction::default() })
    }

    /// Check every summary against the hashes `ledger_compacted` keeps for
    /// it, and that every row there belongs to a summary.
    pub(super) async fn verify_compactions(&self) -> Result<Vec<Problem>, LedgerError> {
        let mut problems = Vec::new();
        let orphans = sqlx::query(
            "SELECT DISTINCT summary_seq FROM ledger_compacted WHERE summary_seq NOT IN \
             (SELECT seq FROM ledger_records WHERE kind = 'compacted') ORDER BY summary_seq",
        )
        .fetch_all(self.pool())
        .await?;
        for row in orphans {
            problems.push(Problem::CompactionMismatch { summary_seq: row.try_get("summary_seq")? });
        }
        let mut after = 0;
        loop {
            let page = self.of_kind_from(RecordKind::Compacted, after, SUMMARIES_PER_READ).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.seq;
            let digests = self.kept_digests(page[0].0.seq, last.seq).await?;
            for (stored, record) in &page {
                let Record::Compacted(c) = record else { continue };
                let kept = digests.get(&stored.seq);
                if kept.is_none_or(|(n, d)| *n != c.removed || *d != c.removed_digest) {
                    problems.push(Problem::CompactionMismatch { summary_seq: stored.seq });
                }
            }
        }
        problems.sort_by_key(|p| match p {
            Problem::CompactionMismatch { summary_seq } => *summary_seq,
            _ => 0,
        });
        Ok(problems)
    }

    /// Count and digest of the hashes kept for each summary from `first` to
    /// `last`, in one read (a page of summaries, not a query each).
    async fn kept_digests(
        &self,
        first: i64,
        last: i64,
    ) -> Result<std::collections::BTreeMap<i64, (u64, String)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT seq, hash, summary_seq FROM ledger_compacted WHERE summary_seq >= $1 AND summary_seq <= $2 \
             ORDER BY summary_seq, seq",
        )
        .bind(first)
        .bind(last)
        .fetch_all(self.pool())
        .await?;
        let mut out = std::collections::BTreeMap::new();
        let mut open: Option<(i64, u64, RemovedDigest)> = None;
        for row in &rows {
            let summary: i64 = row.try_get("summary_seq")?;
            if open.as_ref().is_some_and(|(s, _, _)| *s != summary)
                && let Some((s, n, d)) = open.take()
            {
                out.insert(s, (n, d.finish()));
            }
            let (_, n, d) = open.get_or_insert_with(|| (summary, 0, RemovedDigest::default()));
            *n += 1;
            d.add(row.try_get("seq")?, &row.try_get::<String, _>("hash")?);
        }
        if let Some((s, n, d)) = open {
            out.insert(s, (n, d.finish()));
        }
        Ok(out)
    }
}

/// Sum up one release's ticks into `pending`, unless a summary after its end exists.
async fn summarise(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    c: &Candidate,
    cur: &mut Cursor,
    (at_ms, actor): (i64, &str),
    pending: &mut Pending,
) -> Result<(), LedgerError> {
    let done =
        sqlx::query("SELECT seq FROM ledger_records WHERE release_id = $1 AND kind = 'compacted' AND seq > $2 LIMIT 1")
            .bind(&c.release_id)
            .bind(c.finished_seq)
            .fetch_optional(&mut **tx)
            .await?;
    if done.is_some() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM ledger_records WHERE release_id = $1 AND kind = 'tick' AND seq < $2 ORDER BY seq"
    );
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&c.release_id).bind(c.finished_seq).fetch_all(&mut **tx).await?;
    let mut ticks = Vec::with_capacity(rows.len());
    for (stored, record) in typed(&rows)? {
        if record_hash(&stored) != stored.hash {
            return Err(LedgerError::Tampered { seq: stored.seq });
        }
        if let Record::Tick(t) = record {
            ticks.push((stored, *t));
        }
    }
    let choice = choose(&ticks);
    let (Some(first), Some(last)) = (choice.remove.first(), choice.remove.last()) else { return Ok(()) };
    let mut digest = RemovedDigest::default();
    for r in &choice.remove {
        digest.add(r.seq, &r.hash);
    }
    let record = Record::Compacted(CompactedRecord {
        finished_seq: c.finished_seq,
        removed: choice.remove.len() as u64,
        removed_seqs: (first.seq, last.seq),
        removed_digest: digest.finish(),
        ticks: choice.summary,
    });
    let body = record.body_json()?;
    let summary = writer::chain_next(cur, (&c.release_id, actor, at_ms), RecordKind::Compacted, &body);
    pending.removed.extend(choice.remove.iter().map(|r| (r.seq, r.hash.clone(), summary.seq)));
    pending.summaries.push(summary);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{JudgeResult, Verdict};
    use crate::policy::{Decision, ModelInput, RunMode};

    fn tick(n: u64, verdict: Verdict, consulted: bool) -> (StoredRecord, TickRecord) {
        let judge = JudgeResult::without_findings(verdict, n * 10, String::new());
        let consultation = consulted
            .then(|| crate::assessor::Consultation::failed("t".into(), "m".into(), n * 10, "budget spent".into()));
        let t = TickRecord {
            tick: n,
            now_s: n * 10,
            mode: RunMode::Act,
            inputs_digest: if n == 2 { "none".into() } else { "d".into() },
            judge,
            model: ModelInput::NotConfigured,
            consultation,
            prompt_version: None,
            tool_calls: vec![],
            decision: if verdict == Verdict::Fail { Decision::Hold { reason: "r".into() } } else { Decision::Continue },
            rules: vec![],
            lease: None,
            rehearsed_raise: None,
        };
        let s = StoredRecord {
            seq: n as i64 * 3,
            record_id: format!("r{n}"),
            release_id: "rel".into(),
            kind: "tick".into(),
            actor: "agent:a".into(),
            at_ms: 0,
            body: String::new(),
            record_version: 2,
            prev_hash: String::new(),
            hash: format!("h{n}"),
        };
        (s, t)
    }

    #[test]
    fn all_but_the_last_tick_and_the_last_consultation_go_and_are_counted() {
        let ticks: Vec<_> = (1..=6)
            .map(|n| tick(n, if n == 4 { Verdict::Fail } else { Verdict::Inconclusive }, n == 1 || n == 3))
            .collect();
        let c = choose(&ticks);
        assert_eq!(c.remove.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 6, 12, 15]);
        let s = &c.summary;
        assert_eq!((s.count, s.ticks, s.now_s), (4, (1, 5), (10, 50)));
        assert_eq!(s.verdicts.get(&Verdict::Fail), Some(&1));
        assert_eq!(s.verdicts.get(&Verdict::Inconclusive), Some(&3));
        assert_eq!((s.decisions.get("hold"), s.decisions.get("continue")), (Some(&1), Some(&3)));
        assert_eq!((s.source_failures, s.consultations), (1, 1));
    }

    #[test]
    fn one_tick_or_none_leaves_nothing_to_remove() {
        assert!(choose(&[]).remove.is_empty());
        assert!(choose(&[tick(1, Verdict::Pass, false)]).remove.is_empty());
        assert!(choose(&[tick(1, Verdict::Pass, true), tick(2, Verdict::Pass, false)]).remove.is_empty());
    }
}
