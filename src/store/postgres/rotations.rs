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
//! so one rotation of a token wins across batches and nodes. A token is one
//! row of a statement, or two presentations would both "win" with different
//! successors: further presentations of a token in the same batch are not
//! run but answered with what they would have found right after the first
//! (the token rotated by it, with its time and salt), as if they had come
//! next. So a flood of one string, valid or not, costs one row per batch
//! and never holds up other tokens. Each batch's rows are in the tokens'
//! order, so that two batches sharing tokens lock them in one order; should
//! a plan still lock them otherwise and deadlock, PostgreSQL aborts one,
//! which is run again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use sqlx::Row;
use sqlx::postgres::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::sessions::{refresh_from_row, session_columns, session_from_row};
use super::{DEADLOCK_RETRIES, db_error, is_deadlock};
use crate::clock::{Clock, UnixTime};
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

/// What a rotation answers: the token as found, its session, whether rotated.
pub(super) type Rotated = Option<(RefreshToken, Session, bool)>;

struct Job {
    hash: TokenHash,
    salt: Vec<u8>,
    successors: SuccessorHashes,
    /// The caller's time: the session's expiry is judged by it, as the
    /// caller judged it.
    now: UnixTime,
    /// When the rotation is dated: the caller's time, or when its batch is
    /// sent if the store has the core's clock and that is later (see
    /// [`Rotations::set_clock`]).
    at: UnixTime,
    reply: oneshot::Sender<StoreResult<Rotated>>,
}

/// The queue of rotations of one store.
#[derive(Clone)]
pub(super) struct Rotations {
    jobs: mpsc::Sender<Job>,
    clock: Arc<OnceLock<Arc<dyn Clock>>>,
}

impl std::fmt::Debug for Rotations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rotations(..)")
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job(..)")
    }
}

impl Rotations {
    /// Starts the batching task on `pool`; it ends when the store is dropped.
    /// A batch not answered within `patience` fails (its callers get a
    /// 503), so that one statement on a connection to a server that went
    /// silent does not hold up every later refresh of the node.
    pub(super) fn start(pool: PgPool, patience: std::time::Duration) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let clock = Arc::new(OnceLock::new());
        tokio::spawn(run(pool, queue, patience, Arc::clone(&clock)));
        Self { jobs, clock }
    }

    /// Gives the queue the core's clock (once): a rotation is then dated
    /// when its batch is sent, not when its request came. Run after a
    /// database stall, a rotation dated by its request would put the
    /// client's retry outside the reuse grace window, and end its session
    /// as if the token were stolen. (A wait for a row lock inside the
    /// statement is not counted: it is bounded by the statement timeout.)
    pub(super) fn set_clock(&self, clock: Arc<dyn Clock>) {
        let _ = self.clock.set(clock);
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
            at: now,
            reply,
        };
        let gone = || StoreError::Unavailable("the rotation queue stopped".into());
        self.jobs.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Gathers batches and runs up to [`IN_FLIGHT`] of them at once.
async fn run(
    pool: PgPool,
    mut queue: mpsc::Receiver<Job>,
    patience: std::time::Duration,
    clock: Arc<OnceLock<Arc<dyn Clock>>>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Wait for a free slot first: jobs pile up meanwhile, and the
        // batch that then leaves is as large as the load.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A rotation whose caller has gone (its request timed out while the
        // database stalled) is not run: nobody could receive its successor,
        // and the client's retry would find its token spent.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let pool = pool.clone();
        let clock = clock.get().cloned();
        tokio::spawn(async move {
            execute(&pool, Batch::of(jobs), patience, clock.as_deref()).await;
            drop(slot);
        });
    }
}

/// The rotations of one statement: one per token, and the further
/// presentations of those tokens that came with them.
struct Batch {
    /// One job per token (its first presentation), in the tokens' order:
    /// the statement's rows.
    firsts: Vec<Job>,
    /// Each further presentation, with the index of its token's first.
    copies: Vec<(usize, Job)>,
}

impl Batch {
    fn of(jobs: Vec<Job>) -> Self {
        let mut firsts: Vec<Job> = Vec::with_capacity(jobs.len());
        let mut later = Vec::new();
        let mut seen: HashSet<TokenHash> = HashSet::with_capacity(jobs.len());
        for job in jobs {
            if seen.insert(job.hash) {
                firsts.push(job);
            } else {
                later.push(job);
            }
        }
        // Rows in the tokens' order, the same for every batch on every
        // node, so that batches sharing tokens lock them in one order and
        // wait for each other rather than deadlock (whatever the plan, the
        // rows come in the input's order when it drives the join).
        firsts.sort_by_key(|job| job.hash);
        let index: HashMap<TokenHash, usize> = firsts
            .iter()
            .enumerate()
            .map(|(i, job)| (job.hash, i))
            .collect();
        let copies = later
            .into_iter()
            .filter_map(|job| index.get(&job.hash).map(|&first| (first, job)))
            .collect();
        Self { firsts, copies }
    }
}

/// What a further presentation of a token finds, given what the first one
/// in its batch found: what it would have found in the next batch, the
/// token rotated by that first one (with its time and salt) if it was.
fn copy_answer(first: &Job, answer: &StoreResult<Rotated>) -> StoreResult<Rotated> {
    match answer {
        Ok(Some((token, session, rotated))) => {
            let mut token = token.clone();
            if *rotated {
                token.rotated_at = Some(first.at);
                token.successor_salt = Some(first.salt.clone());
            }
            Ok(Some((token, session.clone(), false)))
        }
        Ok(None) => Ok(None),
        Err(error) => Err(error.clone()),
    }
}

/// Runs one batch and answers each of its callers.
async fn execute(
    pool: &PgPool,
    batch: Batch,
    patience: std::time::Duration,
    clock: Option<&dyn Clock>,
) {
    let Batch { mut firsts, copies } = batch;
    let mut attempt = 0;
    let rows = loop {
        let answered = tokio::time::timeout(patience, async {
            let mut connection = pool.acquire().await?;
            // Dated once the batch has its connection, just before it is sent.
            if let Some(clock) = clock {
                let sent = clock.now();
                for job in &mut firsts {
                    job.at = job.now.max(sent);
                }
            }
            statement(&mut connection, &firsts).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the database did not answer a batch of refreshes in time",
            )))
        });
        match answered {
            Err(error) if is_deadlock(&error) && attempt < DEADLOCK_RETRIES => {
                attempt += 1;
            }
            other => break other,
        }
    };
    let mut answers: Vec<StoreResult<Rotated>> = firsts.iter().map(|_| Ok(None)).collect();
    match rows {
        Ok(rows) => {
            for row in &rows {
                // The job the row answers (1-based); a row that does not
                // say cannot be anyone's answer.
                let Some(slot) = row
                    .try_get::<i64, _>("n")
                    .ok()
                    .and_then(|n| usize::try_from(n - 1).ok())
                    .and_then(|i| answers.get_mut(i))
                else {
                    tracing::error!("refresh rotation row without its job's index");
                    continue;
                };
                *slot = (|| -> StoreResult<Rotated> {
                    let session = session_from_row(row)?;
                    let token = refresh_from_row(row, session.id.clone())?;
                    let rotated: bool = row.try_get("rotated").map_err(db_error)?;
                    Ok(Some((token, session, rotated)))
                })();
            }
        }
        Err(error) => {
            // Each caller gets the same kind of error (an outage stays a
            // 503 worth retrying).
            let error = db_error(error);
            for answer in &mut answers {
                *answer = Err(error.clone());
            }
        }
    }
    for (first, job) in copies {
        if let (Some(first_job), Some(answer)) = (firsts.get(first), answers.get(first)) {
            let _ = job.reply.send(copy_answer(first_job, answer));
        }
    }
    for (job, answer) in firsts.into_iter().zip(answers) {
        let _ = job.reply.send(answer);
    }
}

async fn statement(
    connection: &mut sqlx::postgres::PgConnection,
    batch: &[Job],
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    let hashes: Vec<&[u8]> = batch.iter().map(|j| &j.hash[..]).collect();
    let salts: Vec<&[u8]> = batch.iter().map(|j| &j.salt[..]).collect();
    let jwt: Vec<&[u8]> = batch.iter().map(|j| &j.successors.jwt[..]).collect();
    let opaque: Vec<&[u8]> = batch.iter().map(|j| &j.successors.opaque[..]).collect();
    let now: Vec<UnixTime> = batch.iter().map(|j| j.now).collect();
    let at: Vec<UnixTime> = batch.iter().map(|j| j.at).collect();
    sqlx::query(concat!(
        // `= ANY($1)` on the primary key in both the read and the update,
        // so that every plan (generic ones too) finds the rows by index.
        "WITH input AS (SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], \
           $5::bigint[], $6::bigint[]) WITH ORDINALITY AS i(hash, salt, jwt, opaque, now, at, n)), \
         found AS MATERIALIZED (SELECT i.n, i.salt, i.jwt, i.opaque, i.now, i.at, ",
        session_columns!(),
        ", t.token_hash, t.issued_at, t.rotated_at, t.successor_salt \
           FROM refresh_tokens t JOIN input i ON i.hash = t.token_hash \
           JOIN sessions s ON s.id = t.session_id JOIN accounts a ON a.id = s.account_id \
           WHERE t.token_hash = ANY($1::bytea[])), \
         parent AS (UPDATE refresh_tokens r SET rotated_at = f.at, successor_salt = f.salt \
           FROM found f WHERE r.token_hash = ANY($1::bytea[]) AND r.token_hash = f.token_hash \
           AND r.rotated_at IS NULL \
           AND f.revoked_at IS NULL AND f.account_active AND f.expires_at > f.now \
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
    .bind(at)
    .fetch_all(connection)
    .await
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::{Batch, Job, copy_answer};
    use crate::store::{RefreshToken, Session, SuccessorHashes, TokenStyle};

    fn job(hash: u8, n: u8) -> Job {
        let (reply, _) = oneshot::channel();
        Job {
            hash: [hash; 32],
            salt: vec![hash, n],
            successors: SuccessorHashes {
                jwt: [0; 32],
                opaque: [0; 32],
            },
            now: i64::from(n),
            at: i64::from(n),
            reply,
        }
    }

    /// A flood of one token (40 copies among 60 others) is one row of the
    /// statement: the others are not held up behind its copies.
    #[test]
    fn each_token_is_one_row_of_its_batch() {
        let jobs = (0..100u8)
            .rev()
            .map(|n| if n % 5 == 0 { job(0, n) } else { job(n, n) })
            .collect();
        let batch = Batch::of(jobs);
        assert_eq!(batch.firsts.len(), 81);
        assert_eq!(batch.copies.len(), 19);
        assert_eq!(
            batch.firsts[0].salt,
            [0, 95],
            "the token's first presentation is its row"
        );
        assert!(
            batch.firsts.windows(2).all(|w| w[0].hash < w[1].hash),
            "rows in the tokens' order, whatever the order they came in"
        );
        assert!(
            batch
                .copies
                .iter()
                .all(|(first, job)| *first == 0 && job.hash == [0; 32])
        );
    }

    /// A copy finds what it would have found after the first: the token
    /// rotated at the first's time with the first's salt, and not rotated
    /// by itself, so that the grace window answers it with the same
    /// successor.
    #[test]
    fn a_copy_finds_the_token_as_its_first_left_it() {
        let first = job(7, 3);
        let token = RefreshToken {
            hash: [7; 32],
            session_id: "s".into(),
            issued_at: 1,
            rotated_at: None,
            successor_salt: None,
        };
        let session = Session {
            id: "s".into(),
            account_id: 1,
            platform: "web".into(),
            user_agent: None,
            ip: None,
            token_style: TokenStyle::Jwt,
            created_at: 0,
            last_used_at: 0,
            expires_at: 100,
            revoked_at: None,
            account_active: true,
        };
        let won = Ok(Some((token.clone(), session.clone(), true)));
        let Ok(Some((seen, _, rotated))) = copy_answer(&first, &won) else {
            panic!("a copy of a rotated token finds it");
        };
        assert!(!rotated);
        assert_eq!(seen.rotated_at, Some(3));
        assert_eq!(seen.successor_salt, Some(vec![7, 3]));
        let lost = Ok(Some((token, session, false)));
        let Ok(Some((seen, _, rotated))) = copy_answer(&first, &lost) else {
            panic!("a copy of a token rotated earlier finds it");
        };
        assert!(!rotated);
        assert_eq!(seen.rotated_at, None, "as the first found it");
        assert!(matches!(copy_answer(&first, &Ok(None)), Ok(None)));
    }
}
