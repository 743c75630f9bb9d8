//! Token signing keys in SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, db_error};
use crate::clock::UnixTime;
use crate::store::{KeyStore, SigningKey, StoreError, StoreResult};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT kid, algorithm, private_der, public_jwk, created_at, signs_from FROM signing_keys \
                 ORDER BY created_at DESC, kid",
            )
            .and_then(|mut select| {
                select
                    .query_map([], |row| {
                        Ok(SigningKey {
                            kid: row.get(0)?,
                            algorithm: row.get(1)?,
                            private_der: row.get(2)?,
                            public_jwk: row.get(3)?,
                            created_at: row.get(4)?,
                            signs_from: row.get(5)?,
                        })
                    })?
                    .collect()
            })
            .map_err(db_error)
        })
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        let key = key.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO signing_keys (kid, algorithm, private_der, public_jwk, created_at, \
                 signs_from) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    key.kid,
                    key.algorithm,
                    key.private_der,
                    key.public_jwk,
                    key.created_at,
                    key.signs_from
                ])
            })
            .map(|_| ())
            .map_err(db_error)
        })
        .await
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        let kid = kid.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM signing_keys WHERE kid = ?")
                .and_then(|mut delete| delete.execute([&kid]))
                .map(|deleted| deleted > 0)
                .map_err(db_error)
        })
        .await
    }

    /// Read first, so that a process that only reads (on a database where
    /// the secret exists) never waits for the writer.
    async fn deployment_secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: UnixTime,
    ) -> StoreResult<Vec<u8>> {
        const SELECT: &str = "SELECT value FROM deployment_secrets WHERE name = ?";
        let key = name.to_owned();
        let stored = self.read(move |conn| {
            conn.query_row(SELECT, [&key], |row| row.get(0))
                .optional()
                .map_err(db_error)
        })?;
        if let Some(value) = stored {
            return Ok(value);
        }
        let (key, fresh) = (name.to_owned(), fresh.to_vec());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO deployment_secrets (name, value, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
                params![key, fresh, now],
            )
            .and_then(|_| conn.query_row(SELECT, [&key], |row| row.get(0)).optional())
            .map_err(db_error)?
            .ok_or_else(|| StoreError::Corrupt(format!("deployment secret {key} vanished")))
        })
        .await
    }
}
