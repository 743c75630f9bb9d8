-- Housekeeping deletes ended sessions, spent refresh tokens and expired opaque
-- access tokens in batches; these indexes find them without a scan.
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX refresh_tokens_rotated ON refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
CREATE INDEX access_tokens_expires ON access_tokens (expires_at);
