-- Agents sharing the ledger: each writes its row every few seconds, so the
-- others know who is alive and how many releases it may hold. Mutable state,
-- outside the chain (who acted is in the chain's lease records).
CREATE TABLE ledger_agents (
    instance TEXT PRIMARY KEY,
    capacity BIGINT,
    seen_ms BIGINT NOT NULL
);
