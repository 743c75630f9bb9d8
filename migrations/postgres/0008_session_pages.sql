-- sesame: outside a transaction
-- An account's live sessions in page order (GET /v1/me/sessions, the admin
-- API): without it a page sorted every session the account had. Built
-- CONCURRENTLY, so that nodes still serving keep writing sessions while it
-- is built. Run again after an interruption, the runner first drops an
-- index the cut-short build left invalid, and keeps a valid one.
CREATE INDEX CONCURRENTLY IF NOT EXISTS sessions_account_live ON sessions (account_id, created_at, id) WHERE revoked_at IS NULL;
