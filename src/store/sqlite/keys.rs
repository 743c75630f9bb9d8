//! Token signing keys in SQLite.

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteStore, db_error};
use crate::store::{KeyStore, SigningKey, StoreResult};

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
}
