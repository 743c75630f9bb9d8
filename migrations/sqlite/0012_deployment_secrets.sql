-- Secrets every node of a deployment shares and none is configured with:
-- the key under which login names that match no account are kept in the
-- failure limiter (Redis, with several nodes). Made by the first server to
-- need one; never changed.
CREATE TABLE deployment_secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
