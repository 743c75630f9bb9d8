//! Group commit for refresh rotations.
//!
//! Each rotation is one statement, but every statement on the single
//! writer costs a round trip to its connection thread that dwarfs the SQL
//! itself. Rotations arriving while one is in flight are queued, and each
//! batch runs as one `INSERT … SELECT … UNION ALL … RETURNING` statement:
//! the `refresh_tokens_rotate` trigger marks each parent rotated, and the
//! returned parent hashes say which rotations won. A token appearing twice
//! in one batch takes part once; the other request is told it lost the race
//! (it then follows the grace-window path and gets the same successor).

use std::collections::HashSet;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::db_error;
use crate::core::clock::UnixTime;
use crate::store::{NewRefreshToken, StoreError, StoreResult, TokenHash};

/// Most rotations in one statement (5 bound values each).
const MAX_BATCH: usize = 64;

struct Rotation {
    old: TokenHash,
    salt: Vec<u8>,
    successor: NewRefreshToken,
    now: UnixTime,
    reply: oneshot::Sender<StoreResult<bool>>,
}

/// The queue in front of the batching task.
#[derive(Debug, Clone)]
pub(super) struct Rotations {
    queue: mpsc::UnboundedSender<Rotation>,
}

impl Rotations {
    /// Starts the batching task on the writer pool.
    pub(super) fn spawn(writer: SqlitePool) -> Self {
        let (queue, mut incoming) = mpsc::unbounded_channel::<Rotation>();
        tokio::spawn(async move {
            while let Some(first) = incoming.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match incoming.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                apply(&writer, batch).await;
            }
        });
        Self { queue }
    }

    /// Rotates `old` to `successor`; false if `old` was already rotated.
    pub(super) async fn rotate(
        &self,
        old: &TokenHash,
        salt: &[u8],
        successor: &NewRefreshToken,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        let rotation = Rotation {
            old: *old,
            salt: salt.to_vec(),
            successor: successor.clone(),
            now,
            reply,
        };
        self.queue
            .send(rotation)
            .map_err(|_| StoreError::Database("rotation queue closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Database("rotation task stopped".into()))?
    }
}

async fn apply(writer: &SqlitePool, batch: Vec<Rotation>) {
    let mut seen = HashSet::new();
    let (runs, duplicates): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| seen.insert(r.old));
    for duplicate in duplicates {
        let _ = duplicate.reply.send(Ok(false));
    }
    let select = "SELECT ?, session_id, ?, token_hash, ? FROM refresh_tokens \
                  WHERE token_hash = ? AND session_id = ? AND rotated_at IS NULL";
    let sql = format!(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, parent_hash, parent_salt) {} \
         RETURNING parent_hash",
        vec![select; runs.len()].join(" UNION ALL ")
    );
    let mut query = sqlx::query_scalar::<_, Vec<u8>>(&sql);
    for r in &runs {
        query = query
            .bind(&r.successor.hash[..])
            .bind(r.now)
            .bind(&r.salt)
            .bind(&r.old[..])
            .bind(&r.successor.session_id);
    }
    match query.fetch_all(writer).await {
        Ok(rotated) => {
            let rotated: HashSet<Vec<u8>> = rotated.into_iter().collect();
            for r in runs {
                let won = rotated.contains(&r.old[..]);
                let _ = r.reply.send(Ok(won));
            }
        }
        Err(error) => {
            let message = db_error(error).to_string();
            for r in runs {
                let _ = r.reply.send(Err(StoreError::Database(message.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::sqlite::SqliteStore;
    use crate::store::{
        AccountStore, LoginRecord, NewAccount, NewRefreshToken, NewSession, PasswordVerifiers,
        SessionStore, TokenStyle,
    };

    async fn store_with_sessions(n: usize) -> (tempfile::TempDir, Arc<SqliteStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::connect(&SqliteStore::url_for_data_dir(dir.path()))
            .await
            .unwrap();
        let account = store
            .create_account(NewAccount {
                username: "a".into(),
                username_key: "a".into(),
                email: None,
                email_key: None,
                mobile: None,
                display_name: String::new(),
                verifiers: PasswordVerifiers {
                    password_hash: "x".into(),
                    md5_verifier: None,
                },
                roles: vec!["user".into()],
                max_api_calls: 0,
                created_at: 0,
            })
            .await
            .unwrap();
        for i in 0..n {
            let session = NewSession {
                id: format!("s{i}"),
                account_id: account.id,
                platform: "web".into(),
                user_agent: None,
                ip: None,
                token_style: TokenStyle::Jwt,
                created_at: 0,
                expires_at: 1000,
            };
            let first = NewRefreshToken {
                hash: [i as u8; 32],
                session_id: session.id.clone(),
                issued_at: 0,
            };
            store
                .record_login(
                    &LoginRecord {
                        account_id: account.id,
                        at: 0,
                        ip: None,
                        clients: vec![],
                        keep: 1,
                    },
                    &session,
                    &first,
                    false,
                )
                .await
                .unwrap();
        }
        (dir, Arc::new(store))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_rotations_of_one_token_have_exactly_one_winner() {
        let (_dir, store) = store_with_sessions(1).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..32u8 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let successor = NewRefreshToken {
                    hash: [100 + i; 32],
                    session_id: "s0".into(),
                    issued_at: 5,
                };
                store
                    .rotate_refresh_token(&[0; 32], &[i; 32], &successor, 5)
                    .await
                    .unwrap()
            });
        }
        let wins = tasks
            .join_all()
            .await
            .into_iter()
            .filter(|won| *won)
            .count();
        assert_eq!(wins, 1);
        let parent = store.find_refresh_token(&[0; 32]).await.unwrap().unwrap();
        assert_eq!(parent.rotated_at, Some(5));
        let salt = parent.successor_salt.unwrap();
        let winner = 100 + salt[0];
        assert!(
            store
                .find_refresh_token(&[winner; 32])
                .await
                .unwrap()
                .is_some(),
            "the winner's successor exists"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn independent_rotations_in_one_batch_all_win() {
        let (_dir, store) = store_with_sessions(20).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20u8 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let successor = NewRefreshToken {
                    hash: [200 - i; 32],
                    session_id: format!("s{i}"),
                    issued_at: 7,
                };
                store
                    .rotate_refresh_token(&[i; 32], &[1; 32], &successor, 7)
                    .await
                    .unwrap()
            });
        }
        assert!(tasks.join_all().await.into_iter().all(|won| won));
        let wrong_session = NewRefreshToken {
            hash: [250; 32],
            session_id: "s1".into(),
            issued_at: 8,
        };
        let parent_of_s0 = [0u8; 32];
        assert!(
            !store
                .rotate_refresh_token(&parent_of_s0, &[1; 32], &wrong_session, 8)
                .await
                .unwrap()
        );
    }
}
