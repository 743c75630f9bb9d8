-- A successful login's bookkeeping and its session in one call: one round
-- trip instead of seven. The function runs as one transaction (the caller's
-- statement); under READ COMMITTED each statement inside it takes a fresh
-- snapshot, so the order of the statements keeps the guarantees of the
-- transaction it replaces (see record_login in src/store/postgres/sessions.rs).
CREATE FUNCTION sesame_record_login(
    p_account BIGINT, p_at BIGINT, p_ip TEXT,
    p_kinds TEXT[], p_values TEXT[], p_keep BIGINT,
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
        last_login_ip = p_ip, consecutive_failures = 0
    WHERE id = p_account;
    IF cardinality(p_kinds) > 0 THEN
        INSERT INTO known_clients (account_id, kind, value, first_seen, last_seen)
        SELECT p_account, c.k, c.v, p_at, p_at FROM UNNEST(p_kinds, p_values) AS c(k, v)
        ON CONFLICT (account_id, kind, value) DO UPDATE SET last_seen = excluded.last_seen;
        DELETE FROM known_clients k USING (
            SELECT kind, value, ROW_NUMBER() OVER (
                PARTITION BY kind ORDER BY last_seen DESC, seq DESC) AS newest
            FROM known_clients WHERE account_id = p_account) o
        WHERE k.account_id = p_account AND k.kind = o.kind AND k.value = o.value
          AND o.newest > p_keep;
    END IF;
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
