-- Brute-force protection and the audit log.

-- Failures since the last success that came from clients the account did not
-- know; reaching the lockout threshold locks the account for unknown clients.
ALTER TABLE accounts ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;

-- Clients that signed in to an account successfully before: their address,
-- or the SHA-256 (hex) of a device token Sesame issued them.
CREATE TABLE known_clients (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (account_id, kind, value)
);

-- Who did what, when, from where. Never a password or token.
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    event      TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    face       TEXT NOT NULL,
    account_id INTEGER,
    username   TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_account ON audit_events (account_id, id);
