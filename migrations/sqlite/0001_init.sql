-- Sesame schema, version 1. Times are Unix seconds (INTEGER); tokens are stored
-- only as SHA-256 hashes (BLOB). Kept to portable SQL where possible.

CREATE TABLE roles (
    name        TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL DEFAULT ''
);

CREATE TABLE role_permissions (
    role       TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    permission TEXT NOT NULL,
    PRIMARY KEY (role, permission)
);

INSERT INTO roles (name, description) VALUES
    ('administrator', 'Full access, including the admin API'),
    ('user', 'A normal account');
INSERT INTO role_permissions (role, permission) VALUES
    ('administrator', 'read'), ('administrator', 'write'), ('administrator', 'admin'),
    ('user', 'read');

CREATE TABLE accounts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    username            TEXT NOT NULL,
    username_key        TEXT NOT NULL,
    email               TEXT,
    email_key           TEXT,
    email_verified      INTEGER NOT NULL DEFAULT 0,
    mobile              TEXT,
    mobile_verified     INTEGER NOT NULL DEFAULT 0,
    display_name        TEXT NOT NULL DEFAULT '',
    avatar_url          TEXT NOT NULL DEFAULT '',
    status              TEXT NOT NULL DEFAULT 'active',
    password_hash       TEXT NOT NULL,
    md5_verifier        TEXT,
    password_changed_at INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_login_at       INTEGER,
    last_login_ip       TEXT,
    login_count         INTEGER NOT NULL DEFAULT 0,
    failed_login_count  INTEGER NOT NULL DEFAULT 0,
    api_calls_count     INTEGER NOT NULL DEFAULT 0,
    max_api_calls       INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX accounts_username_key ON accounts (username_key);
CREATE UNIQUE INDEX accounts_email_key ON accounts (email_key);
CREATE UNIQUE INDEX accounts_mobile ON accounts (mobile);

CREATE TABLE account_roles (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    role       TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    PRIMARY KEY (account_id, role)
);
CREATE INDEX account_roles_role ON account_roles (role);

CREATE TABLE profile_attributes (
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    account_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    platform     TEXT NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    token_style  TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    revoked_reason TEXT
);
CREATE INDEX sessions_account_platform ON sessions (account_id, platform);

CREATE TABLE refresh_tokens (
    token_hash     BLOB PRIMARY KEY NOT NULL,
    session_id     TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    issued_at      INTEGER NOT NULL,
    rotated_at     INTEGER,
    successor_salt BLOB
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    private_der BLOB NOT NULL,
    public_jwk  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
