-- Known clients move onto the account's row: two arrays, newest first, at
-- most abuse.known_clients_kept long. As rows of their own table, every
-- login of a client that does not send its device token back (the contract
-- faces' clients, for one) inserted a row and deleted the oldest. On
-- PostgreSQL such a queue leaves a dead row and dead index entries per
-- login until a vacuum, and the login's scans of that account's entries
-- read them all: the cost of a login grew with the logins since the last
-- vacuum (bench/README.md). On the account's row they ride on the update
-- every login makes anyway, a heap-only update since no indexed column
-- changes, whose old versions the page prunes by itself.
ALTER TABLE accounts
    ADD COLUMN known_devices TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN known_addresses TEXT[] NOT NULL DEFAULT '{}';

UPDATE accounts a SET
    known_devices = COALESCE((SELECT array_agg(k.value ORDER BY k.last_seen DESC, k.seq DESC)
        FROM known_clients k WHERE k.account_id = a.id AND k.kind = 'device'), '{}'),
    known_addresses = COALESCE((SELECT array_agg(k.value ORDER BY k.last_seen DESC, k.seq DESC)
        FROM known_clients k WHERE k.account_id = a.id AND k.kind = 'ip'), '{}')
WHERE EXISTS (SELECT 1 FROM known_clients k WHERE k.account_id = a.id);

DROP TABLE known_clients;

-- `list` with `seen` moved to its front (or added there), at most `keep`
-- long. A NULL `seen` leaves the list as it is.
CREATE FUNCTION sesame_remember(list TEXT[], seen TEXT, keep BIGINT) RETURNS TEXT[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN seen IS NULL THEN list
        ELSE (ARRAY[seen] || array_remove(list, seen))[1:keep] END
$$;

DROP FUNCTION sesame_record_login(BIGINT, BIGINT, TEXT, TEXT[], TEXT[], BIGINT, BOOLEAN,
    TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, BIGINT, BYTEA, BIGINT);

-- As in 0002, with the known clients remembered in the account's update.
CREATE FUNCTION sesame_record_login(
    p_account BIGINT, p_at BIGINT, p_ip TEXT,
    p_device TEXT, p_address TEXT, p_keep BIGINT,
    p_replace BOOLEAN,
    p_session TEXT, p_platform TEXT, p_user_agent TEXT, p_session_ip TEXT, p_style TEXT,
    p_created BIGINT, p_expires BIGINT,
    p_refresh BYTEA, p_issued BIGINT
) RETURNS SETOF TEXT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    replaced RECORD;
BEGIN
    -- Locks the account's row until commit: concurrent logins of one account
    -- pass here one at a time, and every later statement sees the sessions
    -- committed before the lock was granted.
    UPDATE accounts SET login_count = login_count + 1, last_login_at = p_at,
        last_login_ip = p_ip, consecutive_failures = 0,
        known_devices = sesame_remember(known_devices, p_device, p_keep),
        known_addresses = sesame_remember(known_addresses, p_address, p_keep)
    WHERE id = p_account;
    IF p_replace THEN
        FOR replaced IN
            UPDATE sessions SET revoked_at = p_created, revoked_reason = 'replaced'
            WHERE account_id = p_account AND platform = p_platform AND revoked_at IS NULL
            RETURNING id
        LOOP
            RETURN NEXT replaced.id;
        END LOOP;
    END IF;
    INSERT INTO sessions (id, account_id, platform, user_agent, ip, token_style, created_at,
        expires_at)
    VALUES (p_session, p_account, p_platform, p_user_agent, p_session_ip, p_style, p_created,
        p_expires);
    INSERT INTO refresh_tokens (token_hash, session_id, issued_at)
    VALUES (p_refresh, p_session, p_issued);
END
$$;
