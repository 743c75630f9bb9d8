-- sesame: outside a transaction
-- The account an operator's or administrator's change was made to (the
-- acting account is account_id), so that an account's audit trail holds
-- what was done to it. The index is built CONCURRENTLY: audit_events is the
-- largest table, and nodes still serving keep writing to it meanwhile.
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS target_id BIGINT;
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_events_target ON audit_events (target_id, id) WHERE target_id IS NOT NULL;
