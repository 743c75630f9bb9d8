-- OpenID Connect / OAuth 2.0: registered clients, authorization codes and the
-- sessions opened for clients. Client secrets and codes are stored only as
-- SHA-256 hashes (both are 256 random bits; a slow hash would add nothing).
CREATE TABLE oauth_clients (
    id                        TEXT PRIMARY KEY NOT NULL,
    name                      TEXT NOT NULL,
    secret_hash               BLOB,
    redirect_uris             TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    grants                    TEXT NOT NULL,
    scopes                    TEXT NOT NULL,
    created_at                INTEGER NOT NULL
);

-- A code is spent (used_at) by its first exchange, which records the session
-- it opened; a second exchange ends that session.
CREATE TABLE oauth_codes (
    code_hash       BLOB PRIMARY KEY NOT NULL,
    client_id       TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    account_id      INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    browser_session TEXT NOT NULL,
    scope           TEXT NOT NULL,
    nonce           TEXT,
    auth_time       INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER,
    session_id      TEXT
);
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_at);

-- What a session opened for a client was granted, and the browser session
-- (single sign-on) it came from, if any: ending that one ends this one.
CREATE TABLE oauth_sessions (
    session_id      TEXT PRIMARY KEY NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    client_id       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    browser_session TEXT,
    auth_time       INTEGER NOT NULL,
    nonce           TEXT
);
CREATE INDEX oauth_sessions_browser ON oauth_sessions (browser_session);
