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
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record (content and `prev_hash`).
    pub hash: String,
}

/// Hash of a record's content and its link to the previous record. The
/// sequence number is deliberately left out: order is carried by the links,
/// so a moved record shows up as a broken link, not as an edit.
pub fn record_hash(r: &StoredRecord) -> String {
    let mut h = Sha256::new();
    for part in [&r.prev_hash, &r.record_id, &r.release_id, &r.kind, &r.actor, &r.at_ms.to_string(), &r.body] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// SHA-256 of arbitrary bytes, hex: used for input digests.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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
            Problem::Truncated { head_seq, last_seq } => write!(
                f,
                "the head records {head_seq} records but the ledger ends at {last_seq}: records were removed from the end or the head was changed"
            ),
        }
    }
}

/// Check a whole ledger (rows in `seq` order) against its head.
pub fn verify_chain(rows: &[StoredRecord], head: Option<(i64, String)>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS.to_string();
    for r in rows {
        let gap = r.seq > expected_seq;
        if gap {
            problems.push(Problem::Deleted { from_seq: expected_seq, to_seq: r.seq - 1 });
        }
        if record_hash(r) != r.hash {
            problems.push(Problem::Edited { seq: r.seq });
        } else if r.prev_hash != prev_hash && !gap {
            problems.push(Problem::Reordered { seq: r.seq });
        }
        expected_seq = r.seq + 1;
        prev_hash = r.hash.clone();
    }
    let last = rows.last().map(|r| (r.seq, r.hash.clone()));
    match (head, last) {
        (Some((hs, hh)), Some((ls, lh))) if hs != ls || hh != lh => {
            problems.push(Problem::Truncated { head_seq: hs, last_seq: ls })
        }
        (Some((hs, _)), None) if hs > 0 => problems.push(Problem::Truncated { head_seq: hs, last_seq: 0 }),
        (None, Some((ls, _))) => problems.push(Problem::Truncated { head_seq: 0, last_seq: ls }),
        _ => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<StoredRecord> {
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
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = record_hash(&r);
                prev = r.hash.clone();
                r
            })
            .collect()
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
        let mut rows = chain(5);
        let h = head(&rows);
        // Swap the contents of positions 2 and 3, keeping sequence numbers in place.
        let (a, b) = (rows[1].clone(), rows[2].clone());
        rows[1] = StoredRecord { seq: 2, ..b };
        rows[2] = StoredRecord { seq: 3, ..a };
        let p = verify_chain(&rows, h);
        assert!(p.contains(&Problem::Reordered { seq: 2 }), "{p:?}");
    }

    #[test]
    fn tail_truncation_is_named() {
        let mut rows = chain(5);
        let h = head(&rows);
        rows.pop();
        assert_eq!(verify_chain(&rows, h), vec![Problem::Truncated { head_seq: 5, last_seq: 4 }]);
    }
}
