-- An account's live sessions in page order (GET /v1/me/sessions, the admin
-- API): without it a page sorted every session the account had.
CREATE INDEX sessions_account_live ON sessions (account_id, created_at, id) WHERE revoked_at IS NULL;
