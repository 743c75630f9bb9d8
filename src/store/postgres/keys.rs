//! Token signing keys in PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::{PostgresStore, db_error};
use crate::clock::UnixTime;
use crate::store::{KeyStore, SigningKey, StoreError, StoreResult};

#[async_trait]
impl KeyStore for PostgresStore {
    /// Read by each node's key reloader too, which has no request: bounded
    /// (see [`PostgresStore::within`]).
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        let rows = self
            .within(async {
                sqlx::query(
            "SELECT kid, algorithm, private_der, public_jwk, created_at, signs_from FROM signing_keys \
             ORDER BY created_at DESC, kid",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)
            })
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SigningKey {
                    kid: row.try_get(0).map_err(db_error)?,
                    algorithm: row.try_get(1).map_err(db_error)?,
                    private_der: row.try_get(2).map_err(db_error)?,
                    public_jwk: row.try_get(3).map_err(db_error)?,
                    created_at: row.try_get(4).map_err(db_error)?,
                    signs_from: row.try_get(5).map_err(db_error)?,
                })
            })
            .collect()
    }

    /// Nodes starting together on an empty database may each generate a
    /// key; every one is kept (all verify), and all nodes sign with the
    /// newest, so a duplicate costs nothing. Written by the key rotation
    /// too, which has no request: bounded (see [`PostgresStore::within`]).
    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        self.within(async {
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, private_der, public_jwk, created_at, \
                 signs_from) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.private_der)
            .bind(&key.public_jwk)
            .bind(key.created_at)
            .bind(key.signs_from)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    /// The key rotation's too: bounded.
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        self.within(async {
            sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                .bind(kid)
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected() > 0)
                .map_err(db_error)
        })
        .await
    }

    /// Read first, so that a node on a read-only server (a standby) starts
    /// when the secret exists. Two nodes storing at once: the second's
    /// insert waits for the first's commit and does nothing, and its
    /// second read (a statement of its own, so a fresh snapshot under READ
    /// COMMITTED) sees the first's value. Run at start: bounded.
    async fn deployment_secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: UnixTime,
    ) -> StoreResult<Vec<u8>> {
        const SELECT: &str = "SELECT value FROM deployment_secrets WHERE name = $1";
        self.within(async {
            let stored: Option<Vec<u8>> = sqlx::query_scalar(SELECT)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
            if let Some(value) = stored {
                return Ok(value);
            }
            sqlx::query(
                "INSERT INTO deployment_secrets (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
            sqlx::query_scalar(SELECT)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?
                .ok_or_else(|| StoreError::Corrupt(format!("deployment secret {name} vanished")))
        })
        .await
    }
}
