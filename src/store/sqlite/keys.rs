//! Token signing keys in SQLite.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqliteStore, db_error};
use crate::store::{KeyStore, SigningKey, StoreResult};

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_der, public_jwk, created_at FROM signing_keys \
             ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(SigningKey {
                    kid: row.try_get("kid").map_err(db_error)?,
                    algorithm: row.try_get("algorithm").map_err(db_error)?,
                    private_der: row.try_get("private_der").map_err(db_error)?,
                    public_jwk: row.try_get("public_jwk").map_err(db_error)?,
                    created_at: row.try_get("created_at").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_der, public_jwk, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_der)
        .bind(&key.public_jwk)
        .bind(key.created_at)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
