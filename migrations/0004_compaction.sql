-- Compaction: a finished release's tick records, once old enough, are removed
-- and summed up in a `compacted` record. Each removed record's hash stays here,
-- so the next record's link to it and a checkpoint at it still verify; the
-- summary records a digest of its rows, so a row added, removed or changed
-- here shows in `audit verify`.
CREATE TABLE ledger_compacted (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    summary_seq BIGINT NOT NULL
);

CREATE INDEX ledger_compacted_summary ON ledger_compacted (summary_seq, seq);
