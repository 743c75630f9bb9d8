-- sesame: outside a transaction
-- An account's live sessions in page order (GET /v1/me/sessions, the admin
-- API): without it a page sorted every session the account had. Built
-- CONCURRENTLY, so that nodes still serving keep writing sessions while it
-- is built; an index left invalid by an interrupted build is dropped and
-- built again.
DROP INDEX CONCURRENTLY IF EXISTS sessions_account_live;
CREATE INDEX CONCURRENTLY sessions_account_live ON sessions (account_id, created_at, id) WHERE revoked_at IS NULL;
