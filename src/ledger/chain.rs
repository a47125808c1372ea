//! Hash chaining and verification, pure functions over stored rows.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A stored record as the chain sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Position in the ledger, from 1.
    pub seq: i64,
    /// Unique id.
    pub record_id: String,
    /// Release it belongs to.
    pub release_id: String,
    /// Record kind (`tick`, `intent`, ...).
    pub kind: String,
    /// Who acted: `agent` or a named human.
    pub actor: String,
    /// Wall-clock unix ms.
    pub at_ms: i64,
    /// JSON body.
    pub body: String,
    /// Record format and hash version (1: untyped bodies, hash without `seq`).
    pub record_version: i64,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record (content and `prev_hash`).
    pub hash: String,
}

/// Hash of a record's content and its link to the previous record. Version 2
/// also covers `seq` and the version itself, so a record cannot be renumbered
/// or downgraded without changing its hash; version 1 (older ledgers) left
/// `seq` out and still verifies as it was written.
pub fn record_hash(r: &StoredRecord) -> String {
    let mut h = Sha256::new();
    let mut part = |p: &str| {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    };
    if r.record_version >= 2 {
        part(&r.record_version.to_string());
        part(&r.seq.to_string());
    }
    for p in [&r.prev_hash, &r.record_id, &r.release_id, &r.kind, &r.actor, &r.at_ms.to_string(), &r.body] {
        part(p);
    }
    hex::encode(h.finalize())
}

/// One thing wrong with the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The record's content no longer matches its hash.
    Edited {
        /// Sequence number.
        seq: i64,
    },
    /// Sequence numbers are missing: records were deleted.
    Deleted {
        /// First missing.
        from_seq: i64,
        /// Last missing.
        to_seq: i64,
    },
    /// The record does not link to the record before it: moved or reordered.
    Reordered {
        /// Sequence number.
        seq: i64,
    },
    /// A version-1 record after a version-2 one: rewritten to dodge the newer hash.
    Downgraded {
        /// Sequence number.
        seq: i64,
    },
    /// The checkpoint's record is gone: records at or before it were removed.
    CheckpointMissing {
        /// The checkpoint's sequence number.
        seq: i64,
    },
    /// The checkpoint's record has another hash now: history up to it was rewritten.
    CheckpointMismatch {
        /// The checkpoint's sequence number.
        seq: i64,
        /// Hash stored outside the database.
        expected: String,
        /// Hash found.
        found: String,
    },
    /// What `ledger_compacted` holds for a summary no longer matches the
    /// digest the summary recorded: entries were added, removed or changed
    /// (a kept record deleted and passed off as compacted, say).
    CompactionMismatch {
        /// The summary's sequence number.
        summary_seq: i64,
    },
    /// The head disagrees with the last record: records removed from the end (or the head edited).
    Truncated {
        /// What the head says.
        head_seq: i64,
        /// Last record found.
        last_seq: i64,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Edited { seq } => write!(f, "record {seq} was edited: its content does not match its hash"),
            Problem::Deleted { from_seq, to_seq } if from_seq == to_seq => write!(f, "record {from_seq} was deleted"),
            Problem::Deleted { from_seq, to_seq } => write!(f, "records {from_seq}..={to_seq} were deleted"),
            Problem::Reordered { seq } => {
                write!(f, "record {seq} does not follow the record before it: records were reordered")
            }
            Problem::Downgraded { seq } => {
                write!(f, "record {seq} claims the old format after newer records: it was rewritten")
            }
            Problem::CheckpointMissing { seq } => {
                write!(f, "checkpoint record {seq} is missing: records up to the checkpoint were removed")
            }
            Problem::CheckpointMismatch { seq, expected, found } => write!(
                f,
                "checkpoint record {seq} has hash {found}, not {expected}: the ledger up to the checkpoint was rewritten"
            ),
            Problem::CompactionMismatch { summary_seq } => write!(
                f,
                "the records compacted into summary {summary_seq} are not the ones it recorded: entries of ledger_compacted were added, removed or changed"
            ),
            Problem::Truncated { head_seq, last_seq } => write!(
                f,
                "the head records {head_seq} records but the ledger ends at {last_seq}: records were removed from the end or the head was changed"
            ),
        }
    }
}

/// A head as stored outside the database: `SEQ:HASH` (`backstop audit checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the record.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// A checkpoint that is not `SEQ:HASH`.
#[derive(Debug, thiserror::Error)]
#[error(
    "checkpoint `{0}`: expected SEQ:HASH as printed by `backstop audit checkpoint` (a number, a colon, 64 hex digits)"
)]
pub struct CheckpointParseError(String);

impl std::str::FromStr for Checkpoint {
    type Err = CheckpointParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CheckpointParseError(s.to_string());
        let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.trim().parse().map_err(|_| bad())?;
        let hash = hash.trim().to_ascii_lowercase();
        if seq < 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checkpoint { seq, hash })
    }
}

/// Walks a ledger in `seq` order one record at a time, so a ledger of any
/// size verifies in constant memory.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    newest_version: i64,
    last: Option<(i64, String)>,
    checkpoint: Option<Checkpoint>,
    checkpoint_seen: bool,
    records: u64,
    compacted: u64,
    problems: Vec<Problem>,
}

impl ChainVerifier {
    /// A verifier from genesis, optionally holding the chain to a checkpoint.
    pub fn new(checkpoint: Option<Checkpoint>) -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS.to_string(),
            newest_version: 1,
            last: None,
            checkpoint: checkpoint.filter(|c| c.seq > 0),
            checkpoint_seen: false,
            records: 0,
            compacted: 0,
            problems: Vec::new(),
        }
    }

    /// A verifier that starts after record `after` (whose hash is `prev_hash`):
    /// the tail of a chain, checked without reading what came before.
    pub fn after(after: i64, prev_hash: String, checkpoint: Option<Checkpoint>) -> Self {
        Self { expected_seq: after + 1, prev_hash, ..Self::new(checkpoint) }
    }

    /// Check the next record.
    pub fn feed(&mut self, r: &StoredRecord) {
        self.records += 1;
        let gap = r.seq > self.expected_seq;
        if gap {
            self.problems.push(Problem::Deleted { from_seq: self.expected_seq, to_seq: r.seq - 1 });
        }
        if r.record_version < self.newest_version {
            self.problems.push(Problem::Downgraded { seq: r.seq });
        }
        self.newest_version = self.newest_version.max(r.record_version);
        if record_hash(r) != r.hash {
            self.problems.push(Problem::Edited { seq: r.seq });
        } else if r.prev_hash != self.prev_hash && !gap {
            self.problems.push(Problem::Reordered { seq: r.seq });
        }
        self.check_checkpoint(r.seq, &r.hash);
        self.expected_seq = r.seq + 1;
        self.prev_hash = r.hash.clone();
        self.last = Some((r.seq, r.hash.clone()));
    }

    /// Take the place of a record compacted away, of which only its hash is
    /// kept: its content and its own link cannot be checked any more, but
    /// the next record's link to it, and a checkpoint at it, still are.
    pub fn feed_compacted(&mut self, seq: i64, hash: &str) {
        self.compacted += 1;
        if seq > self.expected_seq {
            self.problems.push(Problem::Deleted { from_seq: self.expected_seq, to_seq: seq - 1 });
        }
        self.check_checkpoint(seq, hash);
        self.expected_seq = seq + 1;
        self.prev_hash = hash.to_string();
        self.last = Some((seq, hash.to_string()));
    }

    fn check_checkpoint(&mut self, seq: i64, hash: &str) {
        if let Some(c) = &self.checkpoint
            && c.seq == seq
        {
            self.checkpoint_seen = true;
            if c.hash != hash {
                self.problems.push(Problem::CheckpointMismatch {
                    seq: c.seq,
                    expected: c.hash.clone(),
                    found: hash.to_string(),
                });
            }
        }
    }

    /// Records compacted away so far (fed with [`Self::feed_compacted`]).
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Compare with the stored head and finish: records checked and every problem.
    pub fn finish(mut self, head: Option<(i64, String)>) -> (u64, Vec<Problem>) {
        match (head, &self.last) {
            (Some((hs, hh)), Some((ls, lh))) if hs != *ls || hh != *lh => {
                self.problems.push(Problem::Truncated { head_seq: hs, last_seq: *ls })
            }
            (Some((hs, _)), None) if hs > 0 => self.problems.push(Problem::Truncated { head_seq: hs, last_seq: 0 }),
            (None, Some((ls, _))) => self.problems.push(Problem::Truncated { head_seq: 0, last_seq: *ls }),
            _ => {}
        }
        if let Some(c) = &self.checkpoint
            && !self.checkpoint_seen
        {
            self.problems.push(Problem::CheckpointMissing { seq: c.seq });
        }
        (self.records, self.problems)
    }
}

/// The digest a compaction summary records of the records it removed:
/// SHA-256 over each one's sequence number and hash, fed in sequence order.
#[derive(Default)]
pub struct RemovedDigest(Sha256);

impl RemovedDigest {
    /// Add the next removed record.
    pub fn add(&mut self, seq: i64, hash: &str) {
        self.0.update(seq.to_le_bytes());
        self.0.update((hash.len() as u64).to_le_bytes());
        self.0.update(hash.as_bytes());
    }

    /// The digest, hex.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// Check a whole ledger (rows in `seq` order) against its head.
pub fn verify_chain(rows: &[StoredRecord], head: Option<(i64, String)>) -> Vec<Problem> {
    let mut v = ChainVerifier::new(None);
    for r in rows {
        v.feed(r);
    }
    v.finish(head).1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` chained records of format `version`.
    pub(super) fn build(n: i64, version: i64) -> Vec<StoredRecord> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let mut r = StoredRecord {
                    seq,
                    record_id: format!("r{seq}"),
                    release_id: "rel".into(),
                    kind: "tick".into(),
                    actor: "agent".into(),
                    at_ms: seq * 1000,
                    body: format!("{{\"tick\":{seq}}}"),
                    record_version: version,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = record_hash(&r);
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn chain(n: i64) -> Vec<StoredRecord> {
        build(n, 2)
    }

    fn head(rows: &[StoredRecord]) -> Option<(i64, String)> {
        rows.last().map(|r| (r.seq, r.hash.clone()))
    }

    #[test]
    fn intact_chain_verifies() {
        let rows = chain(5);
        assert!(verify_chain(&rows, head(&rows)).is_empty());
    }

    #[test]
    fn edit_is_named() {
        let mut rows = chain(5);
        let h = head(&rows);
        rows[2].body = "{\"tick\":99}".into();
        assert_eq!(verify_chain(&rows, h), vec![Problem::Edited { seq: 3 }]);
    }

    #[test]
    fn delete_is_named() {
        let mut rows = chain(5);
        let h = head(&rows);
        rows.remove(1);
        assert_eq!(verify_chain(&rows, h), vec![Problem::Deleted { from_seq: 2, to_seq: 2 }]);
    }

    #[test]
    fn reorder_is_named() {
        // Swap the contents of positions 2 and 3, keeping sequence numbers in place.
        let swap = |rows: &mut Vec<StoredRecord>| {
            let (a, b) = (rows[1].clone(), rows[2].clone());
            rows[1] = StoredRecord { seq: 2, ..b };
            rows[2] = StoredRecord { seq: 3, ..a };
        };
        // Version 1 left seq out of the hash: only the links show the move.
        let mut rows: Vec<StoredRecord> =
            chain(5).into_iter().map(|r| StoredRecord { record_version: 1, ..r }).collect();
        let mut prev = GENESIS.to_string();
        for r in &mut rows {
            r.prev_hash = prev.clone();
            r.hash = record_hash(r);
            prev = r.hash.clone();
        }
        let h = head(&rows);
        swap(&mut rows);
        let p = verify_chain(&rows, h);
        assert!(p.contains(&Problem::Reordered { seq: 2 }), "{p:?}");
        // Version 2 hashes seq too: a moved record no longer matches its hash.
        let mut rows = chain(5);
        let h = head(&rows);
        swap(&mut rows);
        let p = verify_chain(&rows, h);
        assert!(p.contains(&Problem::Edited { seq: 2 }) && p.contains(&Problem::Edited { seq: 3 }), "{p:?}");
    }

    #[test]
    fn tail_truncation_is_named() {
        let mut rows = chain(5);
        let h = head(&rows);
        rows.pop();
        assert_eq!(verify_chain(&rows, h), vec![Problem::Truncated { head_seq: 5, last_seq: 4 }]);
    }
}

#[cfg(test)]
mod anchor_tests {
    use super::tests::build;
    use super::*;

    fn rehash_from(rows: &mut [StoredRecord], from: usize) {
        for i in from..rows.len() {
            rows[i].prev_hash = if i == 0 { GENESIS.to_string() } else { rows[i - 1].hash.clone() };
            rows[i].hash = record_hash(&rows[i]);
        }
    }

    fn verify(rows: &[StoredRecord], head: Option<(i64, String)>, c: Option<Checkpoint>) -> Vec<Problem> {
        let mut v = ChainVerifier::new(c);
        rows.iter().for_each(|r| v.feed(r));
        v.finish(head).1
    }

    #[test]
    fn seq_is_in_the_v2_hash_but_not_the_v1_hash() {
        let v2 = build(1, 2);
        let mut moved = v2[0].clone();
        moved.seq = 7;
        assert_ne!(record_hash(&moved), v2[0].hash);
        let v1 = build(1, 1);
        let mut moved = v1[0].clone();
        moved.seq = 7;
        assert_eq!(record_hash(&moved), v1[0].hash);
    }

    #[test]
    fn a_rewrite_rehashed_to_the_head_passes_alone_and_fails_against_a_checkpoint() {
        let mut rows = build(6, 2);
        let cp = Checkpoint { seq: 6, hash: rows[5].hash.clone() };
        rows[2].body = "{\"n\":99}".into();
        rehash_from(&mut rows, 2);
        let head = Some((6, rows[5].hash.clone()));
        assert!(verify(&rows, head.clone(), None).is_empty(), "self-consistent rewrite");
        assert!(matches!(verify(&rows, head, Some(cp)).as_slice(), [Problem::CheckpointMismatch { seq: 6, .. }]));
    }

    #[test]
    fn tail_truncation_with_the_head_moved_fails_against_a_checkpoint() {
        let mut rows = build(6, 2);
        let cp = Checkpoint { seq: 6, hash: rows[5].hash.clone() };
        rows.truncate(4);
        let head = Some((4, rows[3].hash.clone()));
        assert!(verify(&rows, head.clone(), None).is_empty());
        assert_eq!(verify(&rows, head, Some(cp)), vec![Problem::CheckpointMissing { seq: 6 }]);
    }

    #[test]
    fn a_downgrade_to_the_old_hash_is_named() {
        let mut rows = build(3, 2);
        rows[2].record_version = 1;
        rehash_from(&mut rows, 2);
        let head = Some((3, rows[2].hash.clone()));
        assert_eq!(verify(&rows, head, None), vec![Problem::Downgraded { seq: 3 }]);
    }

    /// Rows 2..=4 compacted: only their hashes are fed.
    fn compacted_walk(rows: &[StoredRecord], keep: impl Fn(i64) -> bool, c: Option<Checkpoint>) -> Vec<Problem> {
        let mut v = ChainVerifier::new(c);
        for r in rows {
            if keep(r.seq) {
                v.feed(r);
            } else {
                v.feed_compacted(r.seq, &r.hash);
            }
        }
        v.finish(rows.last().map(|r| (r.seq, r.hash.clone()))).1
    }

    #[test]
    fn compacted_records_keep_the_links_and_checkpoints_checkable() {
        let rows = build(6, 2);
        let kept = |s: i64| !(2..=4).contains(&s);
        assert!(compacted_walk(&rows, kept, None).is_empty());
        let cp = Checkpoint { seq: 3, hash: rows[2].hash.clone() };
        assert!(compacted_walk(&rows, kept, Some(cp)).is_empty(), "a checkpoint at a compacted record");
        let wrong = Checkpoint { seq: 3, hash: rows[1].hash.clone() };
        assert!(matches!(
            compacted_walk(&rows, kept, Some(wrong)).as_slice(),
            [Problem::CheckpointMismatch { seq: 3, .. }]
        ));
        // A kept hash changed: the next record no longer links to it.
        let mut forged = rows.clone();
        forged[3].hash = "f".repeat(64);
        assert_eq!(compacted_walk(&forged, kept, None), vec![Problem::Reordered { seq: 5 }]);
        // A compacted position missing altogether is a deletion.
        let mut v = ChainVerifier::new(None);
        v.feed(&rows[0]);
        v.feed_compacted(2, &rows[1].hash);
        v.feed(&rows[3]);
        assert_eq!(v.finish(None).1[0], Problem::Deleted { from_seq: 3, to_seq: 3 });
    }

    #[test]
    fn checkpoints_parse_strictly() {
        let h = "a".repeat(64);
        assert_eq!(format!("12:{h}").parse::<Checkpoint>().unwrap(), Checkpoint { seq: 12, hash: h.clone() });
        for bad in ["12", "x:abc", &format!("-1:{h}"), "3:zz"] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad}");
        }
    }
}
