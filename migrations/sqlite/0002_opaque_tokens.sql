-- Opaque access tokens (the careyshop contract's 32-hex `token`), stored only as SHA-256.
-- A session holds at most one: issuing a new one deletes the previous.
CREATE TABLE access_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE INDEX access_tokens_session ON access_tokens (session_id);
