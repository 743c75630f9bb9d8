//! The writer thread: every write, group-committed.
//!
//! SQLite allows one writer at a time, and a commit costs far more than the
//! statements before it. The writer takes every write that has queued up
//! while it was busy (up to [`MAX_BATCH`]), runs each inside its own
//! savepoint of one `BEGIN IMMEDIATE` transaction, commits once, and only
//! then answers each caller. A write that fails is rolled back to its
//! savepoint and answered with its own error; a batch that fails to commit
//! answers every write in it with that failure, so no caller is ever told
//! a write succeeded that was not committed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::db_error;
use crate::store::{StoreError, StoreResult};

/// Most writes in one transaction: enough to amortise a commit, few enough
/// that the first caller in a batch does not wait long for the last.
const MAX_BATCH: usize = 128;

/// The handle the store keeps; dropping the last one stops the thread.
#[derive(Debug)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn spawn(conn: Connection) -> StoreResult<Self> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("sesame-writer".into())
            .spawn(move || run(&conn, &jobs))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { queue })
    }

    /// Runs `write` on the writer thread and waits for its batch to commit.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job = Write {
            work: Some(write),
            result: None,
            reply,
        };
        self.queue
            .send(Box::new(job))
            .map_err(|_| StoreError::Database("the writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Database("the writer thread has stopped".into()))?
    }
}

/// One queued write, its result type erased so that one queue holds them all.
trait Job: Send {
    /// Runs the write on the writer's connection; whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller, once the batch has committed or failed.
    fn answer(self: Box<Self>, batch: Result<(), &StoreError>);
}

struct Write<F, T> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<F, T> Job for Write<F, T>
where
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Database("a write panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, batch: Result<(), &StoreError>) {
        let result = match (self.result, batch) {
            // Its own failure, already rolled back to its savepoint.
            (Some(Err(error)), _) => Err(error),
            (Some(Ok(value)), Ok(())) => Ok(value),
            // Never ran, or ran but its batch did not commit.
            (_, Err(error)) => Err(StoreError::Database(error.to_string())),
            (None, Ok(())) => Err(StoreError::Database("the write was not run".into())),
        };
        // The caller may have gone away (a dropped request); nothing to do then.
        let _ = self.reply.send(result);
    }
}

fn run(conn: &Connection, jobs: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit(conn, &mut batch);
        if let Err(error) = &outcome {
            tracing::error!(%error, writes = batch.len(), "a batch of writes failed");
        }
        for job in batch {
            job.answer(outcome.as_ref().map(|_| ()));
        }
    }
}

/// Runs a batch in one transaction, each write in its own savepoint.
fn commit(conn: &Connection, batch: &mut [Box<dyn Job>]) -> StoreResult<()> {
    statement(conn, "BEGIN IMMEDIATE")?;
    let applied = batch.iter_mut().try_for_each(|job| {
        statement(conn, "SAVEPOINT write")?;
        if !job.run(conn) {
            statement(conn, "ROLLBACK TO write")?;
        }
        statement(conn, "RELEASE write")
    });
    match applied.and_then(|()| statement(conn, "COMMIT")) {
        Ok(()) => Ok(()),
        Err(error) => {
            // Leaves the connection usable for the next batch; an automatic
            // rollback by SQLite itself makes this fail harmlessly.
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

fn statement(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::Writer;
    use crate::store::StoreError;

    fn insert(writer: &Writer, id: i64) -> impl Future<Output = Result<(), StoreError>> + '_ {
        writer.write(move |conn| {
            conn.execute("INSERT INTO t (id) VALUES (?)", [id])
                .map(|_| ())
                .map_err(super::db_error)
        })
    }

    #[tokio::test]
    async fn a_failing_write_in_a_batch_leaves_its_neighbours_committed() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .unwrap();
        let writer = Writer::spawn(conn).unwrap();
        // 1 is inserted twice: exactly one of the two fails, whatever the
        // batching (`join!` queues all four before the first is answered).
        let (a, b, c, d) = tokio::join!(
            insert(&writer, 1),
            insert(&writer, 2),
            insert(&writer, 1),
            insert(&writer, 3)
        );
        assert!(a.is_err() != c.is_err(), "one of the duplicates fails");
        assert!(b.is_ok() && d.is_ok());
        let count = writer
            .write(|conn| {
                conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0))
                    .map_err(super::db_error)
            })
            .await
            .unwrap();
        assert_eq!(count, 3);
    }
}
