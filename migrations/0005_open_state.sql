-- What is open, derived from the records and kept in the same transaction as
-- every write (src/ledger/derived.rs): admission and recovery read these
-- instead of every start, end, intent and outcome the ledger ever held.
-- Neither is part of the chain. A ledger written before this migration has
-- no `open_state` row in ledger_derived; its first open derives both tables
-- from the records and adds the row.
CREATE TABLE ledger_running (
    release_id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    target TEXT NOT NULL
);

CREATE INDEX ledger_running_service ON ledger_running (service);

CREATE TABLE ledger_open_intents (
    plan_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    seq BIGINT NOT NULL
);

CREATE INDEX ledger_open_intents_target ON ledger_open_intents (target, seq);

CREATE TABLE ledger_derived (
    name TEXT PRIMARY KEY
);
