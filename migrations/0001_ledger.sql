-- The audit ledger: append-only records, each hash-chained to the one before.
-- Portable DDL (SQLite and PostgreSQL); time is unix ms in BIGINT, bodies are JSON text.
CREATE TABLE ledger_records (
    seq BIGINT PRIMARY KEY,
    record_id TEXT NOT NULL UNIQUE,
    release_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE INDEX ledger_records_release ON ledger_records (release_id, seq);
CREATE INDEX ledger_records_kind ON ledger_records (kind, seq);

-- The head: last sequence number and hash, updated in the same transaction
-- as each append, so records removed from the end are detected too.
CREATE TABLE ledger_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
