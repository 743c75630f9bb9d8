//! Writes: group-committed when they come thick and fast, committed in
//! place when they come one at a time.
//!
//! SQLite allows one writer at a time, and a commit costs far more than the
//! statements before it. A write that comes alone (no other write under way,
//! none committed in the last [`QUIET`]) is committed by the caller's thread
//! itself: handing it to another thread and back costs two thread wake-ups,
//! more than the write (a login's write comes once per password hash, and
//! in place it costs a tenth less of Sesame's CPU outside hashing). Writes
//! that come close together (refreshes at thousands a second) queue for the
//! writer thread instead: in a batch they share one commit and the pages
//! they all touch, and refreshes cost a sixth less CPU that way. The
//! writer thread takes every write that has queued up while it was busy (up
//! to [`MAX_BATCH`]), runs each inside its own savepoint of one `BEGIN
//! IMMEDIATE` transaction, commits once, and only then answers each caller.
//! A write that fails is rolled back (to its savepoint) and answered with its own error; a batch that fails to commit answers every
//! write in it with that failure, so no caller is ever told a write
//! succeeded that was not committed.
//!
//! A write in place never waits: not for the connection (the writer thread
//! may hold it), and not for SQLite's file lock (another process, such as
//! the CLI, may hold that). Either way the write goes to the queue instead,
//! and only the writer thread waits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::connection::BUSY_TIMEOUT;
use super::db_error;
use crate::store::{StoreError, StoreResult};

/// Most writes in one transaction: enough to amortise a commit, few enough
/// that the first caller in a batch does not wait long for the last.
const MAX_BATCH: usize = 128;

/// How long after a commit a write still counts as coming close behind
/// another one, and queues to be batched.
const QUIET: Duration = Duration::from_millis(1);

/// The handle the store keeps; dropping the last one stops the thread.
#[derive(Debug)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
    shared: Arc<Shared>,
}

/// What the callers and the writer thread share.
#[derive(Debug)]
struct Shared {
    conn: Mutex<Connection>,
    started: Instant,
    /// When the last commit ended, in nanoseconds since `started`
    /// ([`NEVER`] before the first).
    last_commit: AtomicU64,
}

const NEVER: u64 = u64::MAX;

impl Shared {
    fn committed(&self) {
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(NEVER - 1);
        self.last_commit.store(now, Ordering::Relaxed);
    }

    /// Whether a commit ended less than [`QUIET`] ago.
    fn busy_lately(&self) -> bool {
        match self.last_commit.load(Ordering::Relaxed) {
            NEVER => false,
            last => {
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(last))
                    < QUIET
            }
        }
    }
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(super) fn spawn(conn: Connection) -> StoreResult<Self> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            started: Instant::now(),
            last_commit: AtomicU64::new(NEVER),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("sesame-writer".into())
            .spawn(move || run(&thread_shared, &jobs))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { queue, shared })
    }

    /// Commits `write`: in place when it comes alone, otherwise on the
    /// writer thread with whatever else has queued.
    ///
    /// For short writes (a handful of rows): in place, the calling async
    /// worker is held for the length of the commit.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        if self.shared.busy_lately() {
            return self.queue_write(write).await;
        }
        match self.try_in_place(write) {
            Ok(result) => result,
            Err(write) => self.queue_write(write).await,
        }
    }

    /// [`Self::write`] for a write worth doing only for its caller (a
    /// refresh-token rotation, whose successor nobody else can receive):
    /// queued, it is left out if the caller has gone by its turn.
    pub(super) async fn write_for_caller<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let write = if self.shared.busy_lately() {
            write
        } else {
            match self.try_in_place(write) {
                Ok(result) => return result,
                Err(write) => write,
            }
        };
        self.enqueue(write, true).await
    }

    /// Commits `write` on the writer thread, never on the calling thread:
    /// for writes that may take long (a batch of imports or purges).
    pub(super) async fn queue_write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.enqueue(write, false).await
    }

    /// Queues `write` for the writer thread and waits for its answer;
    /// `for_caller`: left out if the caller has gone by its turn.
    async fn enqueue<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        for_caller: bool,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job = Write {
            work: Some(write),
            result: None,
            reply,
            for_caller,
        };
        self.queue
            .send(Box::new(job))
            .map_err(|_| StoreError::Database("the writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Database("the writer thread has stopped".into()))?
    }

    /// Runs a short read on the writer's connection if it is idle right
    /// now; hands `read` back, not run, if it is not.
    ///
    /// A pooled reader starts every read after a write with an empty page
    /// cache (SQLite resets a connection's cache when another connection
    /// has changed the file) and reads the pages back in; the writer's own
    /// cache stays current through its writes.
    pub(super) fn try_read<F, T>(&self, read: F) -> Result<StoreResult<T>, F>
    where
        F: FnOnce(&Connection) -> StoreResult<T>,
    {
        let conn = match self.shared.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(read),
        };
        // Never inside a transaction a failed write left open: the read
        // would see its uncommitted rows.
        if !out_of_transaction(&conn) {
            return Err(read);
        }
        Ok(read(&conn))
    }

    /// Runs and commits `write` on this thread if that needs no waiting;
    /// hands `write` back, not run, if it would.
    fn try_in_place<F, T>(&self, write: F) -> Result<StoreResult<T>, F>
    where
        F: FnOnce(&Connection) -> StoreResult<T>,
    {
        let conn = match self.shared.conn.try_lock() {
            Ok(conn) => conn,
            // A read panicked while holding it (a write's panic is caught
            // and rolled back); no transaction was open.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(write),
        };
        if !out_of_transaction(&conn) || !begin_without_waiting(&conn) {
            return Err(write);
        }
        let result = match run_caught(write, &conn) {
            Ok(value) => match statement(&conn, "COMMIT") {
                Ok(()) => Ok(value),
                Err(error) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    tracing::error!(%error, "a write failed to commit");
                    Err(error)
                }
            },
            Err(error) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(error)
            }
        };
        self.shared.committed();
        Ok(result)
    }
}

/// Whether the connection is outside any transaction, after rolling back
/// one that a write left open (its `COMMIT` and then its `ROLLBACK` failed,
/// say on an I/O error): otherwise every later `BEGIN` would fail, and reads
/// would see what was never committed.
fn out_of_transaction(conn: &Connection) -> bool {
    if conn.is_autocommit() {
        return true;
    }
    let rolled_back = conn.execute_batch("ROLLBACK");
    if let Err(error) = &rolled_back {
        tracing::error!(%error, "cannot end a transaction left open");
    }
    conn.is_autocommit()
}

/// `BEGIN IMMEDIATE` if SQLite's write lock is free right now; whether the
/// transaction began.
fn begin_without_waiting(conn: &Connection) -> bool {
    if conn.busy_timeout(Duration::ZERO).is_err() {
        return false;
    }
    let began = statement(conn, "BEGIN IMMEDIATE").is_ok();
    if conn.busy_timeout(BUSY_TIMEOUT).is_err() {
        // Without its usual patience the connection would fail writes
        // that should wait; better to give up this one.
        if began {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return false;
    }
    began
}

/// Runs `write`; a panic in it becomes that write's error.
fn run_caught<T>(
    write: impl FnOnce(&Connection) -> StoreResult<T>,
    conn: &Connection,
) -> StoreResult<T> {
    catch_unwind(AssertUnwindSafe(|| write(conn)))
        .unwrap_or_else(|_| Err(StoreError::Database("a write panicked".into())))
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
    /// Not run if the caller has gone.
    for_caller: bool,
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
        if self.for_caller && self.reply.is_closed() {
            // Nothing written, nothing to roll back.
            return true;
        }
        let result = run_caught(work, conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, batch: Result<(), &StoreError>) {
        let result = match (self.result, batch) {
            // Its own failure, already rolled back to its savepoint.
            (Some(Err(error)), Ok(())) => Err(error),
            (Some(Ok(value)), Ok(())) => Ok(value),
            // Never ran, or ran but its batch did not commit: even its own
            // refusal ("taken", "the last administrator") may rest on a
            // neighbour's write that was not committed either.
            (_, Err(error)) => Err(match error {
                StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
                other => StoreError::Database(other.to_string()),
            }),
            (None, Ok(())) => Err(StoreError::Database("the write was not run".into())),
        };
        // The caller may have gone away (a dropped request); nothing to do then.
        let _ = self.reply.send(result);
    }
}

fn run(shared: &Shared, jobs: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        // Waits for a write in place to finish; those that queue meanwhile
        // join this batch.
        let conn: MutexGuard<'_, Connection> =
            shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit(&conn, &mut batch);
        drop(conn);
        shared.committed();
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
    if !out_of_transaction(conn) {
        return Err(StoreError::Database(
            "the database connection is stuck in a transaction".into(),
        ));
    }
    // The writer thread waits for another process's lock (in case a write
    // in place failed to restore the patience it took away).
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
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

    fn queued_insert(
        writer: &Writer,
        id: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + '_ {
        writer.queue_write(move |conn| {
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
            queued_insert(&writer, 1),
            queued_insert(&writer, 2),
            queued_insert(&writer, 1),
            queued_insert(&writer, 3)
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

    fn table(dir: &tempfile::TempDir) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .unwrap();
        conn
    }

    fn count(dir: &tempfile::TempDir) -> i64 {
        rusqlite::Connection::open(dir.path().join("w.db"))
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap()
    }

    /// A transaction left open on the writer's connection (as a `COMMIT`
    /// and then a `ROLLBACK` that both failed would leave it) is rolled
    /// back before the next read or write: the read does not see its rows,
    /// and writes, in place or queued, go on.
    #[tokio::test]
    async fn a_transaction_left_open_is_ended_before_the_next_use() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::spawn(table(&dir)).unwrap();
        let read = |writer: &Writer| {
            writer
                .try_read(|conn| {
                    conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0))
                        .map_err(super::db_error)
                })
                .unwrap_or_else(|_| panic!("the writer is idle"))
                .unwrap()
        };
        let leave_open = |writer: &Writer| {
            writer
                .try_read(|conn| {
                    conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (id) VALUES (99)")
                        .map_err(super::db_error)
                })
                .unwrap_or_else(|_| panic!("the writer is idle"))
                .unwrap();
        };
        leave_open(&writer);
        assert_eq!(read(&writer), 0, "the uncommitted row is not seen");
        leave_open(&writer);
        insert(&writer, 1).await.unwrap();
        leave_open(&writer);
        queued_insert(&writer, 2).await.unwrap();
        assert_eq!(read(&writer), 2);
        assert_eq!(count(&dir), 2, "99 was never committed");
    }

    // A new writer has never committed: its first write goes in place.
    #[tokio::test]
    async fn a_failing_write_in_place_is_rolled_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::spawn(table(&dir)).unwrap();
        let failed = writer
            .write(|conn| {
                conn.execute("INSERT INTO t (id) VALUES (1)", []).unwrap();
                conn.execute("INSERT INTO t (id) VALUES (1)", [])
                    .map(|_| ())
                    .map_err(super::db_error)
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(count(&dir), 0, "the first insert went with the failure");
        insert(&writer, 1).await.unwrap();
        assert_eq!(count(&dir), 1, "and the connection is usable");
    }

    /// Another process holding SQLite's write lock must not hold up the
    /// caller's thread: the write waits on the writer thread instead.
    #[tokio::test]
    async fn a_write_behind_another_process_waits_off_the_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::spawn(table(&dir)).unwrap();
        let other = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        // A single-threaded runtime: had the write blocked this thread in
        // SQLite's busy wait, the timeout could not fire.
        let write = insert(&writer, 7);
        tokio::pin!(write);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut write).await;
        assert!(waited.is_err(), "still waiting for the lock");
        other.execute_batch("COMMIT").unwrap();
        write.await.unwrap();
        assert_eq!(count(&dir), 1);
    }

    #[tokio::test]
    async fn reads_use_the_writers_connection_only_when_it_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::spawn(table(&dir)).unwrap();
        insert(&writer, 5).await.unwrap();
        let read = |conn: &rusqlite::Connection| {
            conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0))
                .map_err(super::db_error)
        };
        assert_eq!(writer.try_read(read).ok().unwrap().unwrap(), 1);
        let busy = writer.shared.conn.lock().unwrap();
        assert!(
            writer.try_read(read).is_err(),
            "handed back, not waited for"
        );
        drop(busy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_all_commit_in_place_or_queued() {
        let dir = tempfile::tempdir().unwrap();
        let writer = std::sync::Arc::new(Writer::spawn(table(&dir)).unwrap());
        let tasks: Vec<_> = (0..400)
            .map(|id| {
                let writer = std::sync::Arc::clone(&writer);
                tokio::spawn(async move { insert(&writer, id).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(count(&dir), 400);
    }
}
