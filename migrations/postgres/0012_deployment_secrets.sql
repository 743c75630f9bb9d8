-- Secrets every node of a deployment shares and none is configured with:
-- the key under which login names that match no account are kept in the
-- failure limiter (Redis). Made by the first node to need one (nodes
-- starting together agree on the first stored); never changed.
CREATE TABLE IF NOT EXISTS deployment_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
