-- How each agent shares releases with the others (`ledger::roster::SHARING`):
-- 1 names a release's lease by the resource its executor changes. NULL: an
-- agent of a version before this column, which named every lease by the
-- release's target, so its leases and a newer agent's do not exclude each
-- other. An agent refuses to start while one of another kind is alive, and
-- an agent older than this migration refuses to open the ledger at all.
ALTER TABLE ledger_agents ADD COLUMN sharing BIGINT;
