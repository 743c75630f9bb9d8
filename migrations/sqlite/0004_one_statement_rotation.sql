-- Refresh rotation in one statement: the successor row names its parent, and
-- inserting it marks the parent rotated (a statement and its triggers are
-- atomic in SQLite, even outside an explicit transaction).
ALTER TABLE refresh_tokens ADD COLUMN parent_hash BLOB;
ALTER TABLE refresh_tokens ADD COLUMN parent_salt BLOB;

CREATE TRIGGER refresh_tokens_rotate AFTER INSERT ON refresh_tokens
WHEN NEW.parent_hash IS NOT NULL
BEGIN
    UPDATE refresh_tokens SET rotated_at = NEW.issued_at, successor_salt = NEW.parent_salt
    WHERE token_hash = NEW.parent_hash;
END;

-- A session's last use is its newest refresh; no write per refresh for it.
ALTER TABLE sessions DROP COLUMN last_used_at;

-- So that the newest refresh of a session is one index seek, however long its chain.
DROP INDEX refresh_tokens_session;
CREATE INDEX refresh_tokens_session_issued ON refresh_tokens (session_id, issued_at);
