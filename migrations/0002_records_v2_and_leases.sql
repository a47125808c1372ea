-- Record format 2: typed bodies, and a hash that covers seq and the version.
-- Existing rows keep version 1 and verify with the hash they were written with.
ALTER TABLE ledger_records ADD COLUMN record_version BIGINT NOT NULL DEFAULT 1;

-- The head always exists, so every append can lock it (SELECT ... FOR UPDATE on
-- PostgreSQL) instead of racing to insert it.
INSERT INTO ledger_head (id, seq, hash)
SELECT 1, 0, '0000000000000000000000000000000000000000000000000000000000000000'
WHERE NOT EXISTS (SELECT 1 FROM ledger_head WHERE id = 1);

-- One row per target: who may act on it, until when, and the fencing token
-- every intent must carry. Mutable state, so outside the chain; each change of
-- holder is also a `lease` record in the chain.
CREATE TABLE ledger_leases (
    target TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
