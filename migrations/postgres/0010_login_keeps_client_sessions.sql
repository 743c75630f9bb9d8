-- A login on a `single` platform replaces the account's live sessions on
-- that platform, but not the sessions opened for OAuth clients (platform
-- `oauth`, or whatever a face names its platform): those belong to the
-- client and end with their browser session, a logout or a revocation.
-- Same signature: nodes of the previous version call the new body.
CREATE OR REPLACE FUNCTION sesame_record_login(
    p_account BIGINT, p_at BIGINT, p_ip TEXT,
    p_device TEXT, p_address TEXT, p_keep BIGINT,
    p_replace BOOLEAN,
    p_session TEXT, p_platform TEXT, p_user_agent TEXT, p_session_ip TEXT, p_style TEXT,
    p_created BIGINT, p_expires BIGINT,
    p_refresh BYTEA, p_issued BIGINT,
    p_password_hash TEXT
) RETURNS SETOF TEXT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    replaced RECORD;
BEGIN
    UPDATE accounts SET login_count = login_count + 1, last_login_at = p_at,
        last_login_ip = p_ip, consecutive_failures = 0,
        known_devices = sesame_remember(known_devices, p_device, p_keep),
        known_addresses = sesame_remember(known_addresses, p_address, p_keep)
    WHERE id = p_account AND status <> 'disabled'
        AND (p_password_hash IS NULL OR password_hash = p_password_hash);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the account cannot sign in' USING ERRCODE = 'no_data_found';
    END IF;
    IF p_replace THEN
        FOR replaced IN
            UPDATE sessions SET revoked_at = p_created, revoked_reason = 'replaced'
            WHERE account_id = p_account AND platform = p_platform AND revoked_at IS NULL
                AND NOT EXISTS (SELECT 1 FROM oauth_sessions o WHERE o.session_id = sessions.id)
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
