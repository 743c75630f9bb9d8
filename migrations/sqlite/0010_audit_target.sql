-- The account an operator's or administrator's change was made to (the
-- acting account is account_id), so that an account's audit trail holds
-- what was done to it.
ALTER TABLE audit_events ADD COLUMN target_id INTEGER;
CREATE INDEX audit_events_target ON audit_events (target_id, id) WHERE target_id IS NOT NULL;
