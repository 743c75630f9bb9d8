//! Refresh rotations, group-committed: concurrent rotations become one
//! statement and one commit.
//!
//! A refresh is one statement (read the token and its session, mark the
//! token rotated, insert its successor), but at thousands a second the
//! per-statement and per-commit work of the server and the driver is most
//! of the cost. So rotations queue here; a task takes whatever has queued
//! and runs it as one statement over arrays, one batch in flight at a time:
//! while it commits, the next one gathers, so a batch is as large as the
//! load. Under light load a batch is a single rotation, sent at once.
//!
//! The statement keeps every guarantee of the single rotation: the update
//! locks each token's row and re-checks `rotated_at IS NULL` after any wait,
//! so one rotation of a token wins across batches and nodes. A token
//! appears at most once per batch (a second presentation waits for the next
//! batch), or both would "win" with different successors. Two batches
//! locking two tokens in opposite orders could deadlock; PostgreSQL then
//! aborts one, which is run again.

use std::collections::VecDeque;
use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::db_error;
use super::sessions::{refresh_from_row, session_columns, session_from_row};
use crate::clock::UnixTime;
use crate::store::{RefreshToken, Session, StoreError, StoreResult, SuccessorHashes, TokenHash};

/// Most rotations in one statement.
const MAX_BATCH: usize = 128;
/// Batches in flight at once per node. One: measured on two cores shared
/// with PostgreSQL (bench/README.md), 16 chains refreshed 9.6k/s with one,
/// 7.9k/s with two and 6.8k/s with four: smaller batches, more statements
/// and commits, and the server's work is per statement more than per row. A
/// node then rotates at most `MAX_BATCH` tokens per round trip and commit,
/// tens of thousands a second even with a remote database.
const IN_FLIGHT: usize = 1;
/// Rotations waiting for a batch before callers wait to queue.
const QUEUE: usize = 4096;
/// Times a batch aborted by a deadlock is run again.
const DEADLOCK_RETRIES: u32 = 3;

/// What a rotation answers: the token as found, its session, whether rotated.
pub(super) type Rotated = Option<(RefreshToken, Session, bool)>;

struct Job {
    hash: TokenHash,
    salt: Vec<u8>,
    successors: SuccessorHashes,
    now: UnixTime,
    reply: oneshot::Sender<StoreResult<Rotated>>,
}

/// The queue of rotations of one store.
#[derive(Debug, Clone)]
pub(super) struct Rotations {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job(..)")
    }
}

impl Rotations {
    /// Starts the batching task on `pool`; it ends when the store is dropped.
    pub(super) fn start(pool: PgPool) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue));
        Self { jobs }
    }

    /// Queues one rotation and waits for its batch to commit.
    pub(super) async fn rotate(
        &self,
        hash: &TokenHash,
        salt: &[u8],
        successors: &SuccessorHashes,
        now: UnixTime,
    ) -> StoreResult<Rotated> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            hash: *hash,
            salt: salt.to_vec(),
            successors: *successors,
            now,
            reply,
        };
        let gone = || StoreError::Unavailable("the rotation queue stopped".into());
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Gathers batches and runs up to [`IN_FLIGHT`] of them at once.
async fn run(pool: PgPool, mut queue: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        // Wait for a free slot first: jobs pile up meanwhile, and the
        // batch that then leaves is as large as the load.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        if deferred.is_empty() {
            match queue.recv().await {
                Some(job) => deferred.push_back(job),
                None => return,
            }
        }
        while deferred.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => deferred.push_back(job),
                Err(_) => break,
            }
        }
        let mut batch: Vec<Job> = Vec::with_capacity(deferred.len().min(MAX_BATCH));
        let mut later = VecDeque::new();
        while let Some(job) = deferred.pop_front() {
            if batch.len() < MAX_BATCH && batch.iter().all(|b| b.hash != job.hash) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        }
        deferred = later;
        let pool = pool.clone();
        tokio::spawn(async move {
            execute(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Runs one batch and answers each of its callers.
async fn execute(pool: &PgPool, batch: Vec<Job>) {
    let mut attempt = 0;
    let rows = loop {
        match statement(pool, &batch).await {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("40P01") && attempt < DEADLOCK_RETRIES =>
            {
                attempt += 1;
            }
            other => break other,
        }
    };
    let mut answers: Vec<StoreResult<Rotated>> = batch.iter().map(|_| Ok(None)).collect();
    match rows {
        Ok(rows) => {
            for row in &rows {
                let answer = (|| -> StoreResult<(i64, (RefreshToken, Session, bool))> {
                    let index: i64 = row.try_get("n").map_err(db_error)?;
                    let session = session_from_row(row)?;
                    let token = refresh_from_row(row, session.id.clone())?;
                    let rotated: bool = row.try_get("rotated").map_err(db_error)?;
                    Ok((index, (token, session, rotated)))
                })();
                match answer {
                    Ok((index, found)) => {
                        if let Some(slot) = usize::try_from(index - 1)
                            .ok()
                            .and_then(|i| answers.get_mut(i))
                        {
                            *slot = Ok(Some(found));
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "unreadable refresh rotation row");
                    }
                }
            }
        }
        Err(error) => {
            let message = db_error(error).to_string();
            for answer in &mut answers {
                *answer = Err(StoreError::Database(message.clone()));
            }
        }
    }
    for (job, answer) in batch.into_iter().zip(answers) {
        let _ = job.reply.send(answer);
    }
}

async fn statement(
    pool: &PgPool,
    batch: &[Job],
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    let hashes: Vec<&[u8]> = batch.iter().map(|j| &j.hash[..]).collect();
    let salts: Vec<&[u8]> = batch.iter().map(|j| &j.salt[..]).collect();
    let jwt: Vec<&[u8]> = batch.iter().map(|j| &j.successors.jwt[..]).collect();
    let opaque: Vec<&[u8]> = batch.iter().map(|j| &j.successors.opaque[..]).collect();
    let now: Vec<UnixTime> = batch.iter().map(|j| j.now).collect();
    sqlx::query(concat!(
        // `= ANY($1)` on the primary key in both the read and the update,
        // so that every plan (generic ones too) finds the rows by index.
        "WITH input AS (SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], \
           $5::bigint[]) WITH ORDINALITY AS i(hash, salt, jwt, opaque, at, n)), \
         found AS MATERIALIZED (SELECT i.n, i.salt, i.jwt, i.opaque, i.at, ",
        session_columns!(),
        ", t.token_hash, t.issued_at, t.rotated_at, t.successor_salt \
           FROM refresh_tokens t JOIN input i ON i.hash = t.token_hash \
           JOIN sessions s ON s.id = t.session_id JOIN accounts a ON a.id = s.account_id \
           WHERE t.token_hash = ANY($1::bytea[])), \
         parent AS (UPDATE refresh_tokens r SET rotated_at = f.at, successor_salt = f.salt \
           FROM found f WHERE r.token_hash = ANY($1::bytea[]) AND r.token_hash = f.token_hash \
           AND r.rotated_at IS NULL \
           AND f.revoked_at IS NULL AND f.account_active AND f.expires_at > f.at \
           RETURNING r.token_hash, r.session_id, f.token_style, f.jwt, f.opaque, f.at), \
         successor AS (INSERT INTO refresh_tokens (token_hash, session_id, issued_at) \
           SELECT CASE WHEN p.token_style = 'opaque' THEN p.opaque ELSE p.jwt END, p.session_id, p.at \
           FROM parent p RETURNING 1) \
         SELECT f.*, EXISTS (SELECT 1 FROM parent p WHERE p.token_hash = f.token_hash) AS rotated, \
           (SELECT COUNT(*) FROM successor) AS inserted \
         FROM found f"
    ))
    .bind(hashes)
    .bind(salts)
    .bind(jwt)
    .bind(opaque)
    .bind(now)
    .fetch_all(pool)
    .await
}
