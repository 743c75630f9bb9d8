-- Known clients move onto the account's row, as on PostgreSQL (its 0003):
-- two JSON arrays, newest first, at most abuse.known_clients_kept long. As
-- rows of their own table, every login of a client that does not send its
-- device token back (the contract faces' clients, for one) inserted a row
-- and an index entry and deleted the oldest pair: four more pages written
-- to the WAL per login, and two more reads to recognise the client. On the
-- account's row they ride on the update every login makes anyway.
ALTER TABLE accounts ADD COLUMN known_devices TEXT NOT NULL DEFAULT '[]';
ALTER TABLE accounts ADD COLUMN known_addresses TEXT NOT NULL DEFAULT '[]';

UPDATE accounts SET
    known_devices = (SELECT json_group_array(value ORDER BY last_seen DESC, rowid DESC)
        FROM known_clients k WHERE k.account_id = accounts.id AND k.kind = 'device'),
    known_addresses = (SELECT json_group_array(value ORDER BY last_seen DESC, rowid DESC)
        FROM known_clients k WHERE k.account_id = accounts.id AND k.kind = 'ip')
WHERE EXISTS (SELECT 1 FROM known_clients k WHERE k.account_id = accounts.id);

DROP TABLE known_clients;
