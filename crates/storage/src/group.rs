//! Group commit on SQLite: writes that arrive while a write transaction runs are committed
//! together in the next one, each still all-or-nothing and answered with its own result.
//!
//! SQLite runs one writer at a time, and each transaction costs its `BEGIN IMMEDIATE` and
//! `COMMIT` and the hand-over of the writer's turn. One writer takes every queued job, runs
//! them one after another in one transaction and commits once: those costs are paid once
//! per batch. Requests' tokens, sessions and outbox rows, and the outbox worker's claims
//! and delivery marks all go through it.
//!
//! The writer runs on a thread of its own, with two connections of its own:
//! - the hot jobs (a requestToken's session and mail, the outbox's claims and marks, a
//!   login's or refresh's tokens) are [`Group::write_direct`] jobs: they run on a rusqlite
//!   connection (`lite.rs`) right on the writer's thread, so a batch's statements cost no
//!   hand-off at all;
//! - the rest ([`Group::write`]: registration, sign-outs) are sqlx jobs on a connection
//!   taken out of the pool once, where every statement is a round trip to the connection's
//!   own thread. A batch that waits for one is polled again for up to 25 µs ([`SPIN`])
//!   before the thread sleeps: the answer usually comes meanwhile.
//!
//! A batch's direct jobs commit in one transaction and its sqlx jobs in the next, both
//! under the process's writer turn; a job must not depend on another job of its batch.
//! (docs/BENCHMARKS.md has what each step of this design gained.)
//!
//! If any job fails (a database error, not a "no such token" answer, which is a result),
//! its transaction is rolled back and every job of it is run again in a transaction of
//! its own, so one bad job never takes the others down with it; a job must therefore be
//! safe to run twice from the start, which a rolled-back transaction guarantees. Answers
//! are given only after the commit that made them durable.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::{Db, StorageError};

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 64;

/// What a job gives once its transaction committed: the caller's answer.
type Deliver = Box<dyn FnOnce() + Send>;

/// A job's statements, run in the batch's transaction (and again alone, if the batch
/// failed).
type Run = Arc<
    dyn for<'c> Fn(
            &'c mut AnyConnection,
        )
            -> Pin<Box<dyn Future<Output = Result<Deliver, sqlx::Error>> + Send + 'c>>
        + Send
        + Sync,
>;

/// A direct job's statements, run on the writer's own rusqlite connection in the batch's
/// transaction (and again alone, if the batch failed).
type DirectRun = Arc<dyn Fn(&rusqlite::Connection) -> Result<Deliver, StorageError> + Send + Sync>;

/// What a job runs.
enum Work {
    Direct(DirectRun),
    Sqlx(Run),
}

/// A queued write.
struct Job {
    work: Work,
    fail: Box<dyn FnOnce(StorageError) + Send + Sync>,
}

/// A job of one kind, once the batch is split.
struct Split<R> {
    run: R,
    fail: Box<dyn FnOnce(StorageError) + Send + Sync>,
}

/// The queue of the writer task.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    queue: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Group {
    /// Starts the writer for `db` (which must not itself have a group) on a thread of its
    /// own, with a single-threaded runtime for its sqlx jobs; its direct jobs use a
    /// connection of its own to the database file at `file`. If that thread cannot be
    /// made, the writer runs as a task of the current runtime instead.
    pub(crate) fn start(db: Db, file: PathBuf) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel::<Job>();
        // Timers only: the writer needs the pool's timeouts and does no I/O of its own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        let writer_of = Writer {
            db,
            file,
            conn: None,
            lite: None,
        };
        let (writer_of, jobs) = match runtime {
            Ok(runtime) => {
                let (tx, rx) = std::sync::mpsc::channel::<(Writer, mpsc::UnboundedReceiver<Job>)>();
                let spawned = std::thread::Builder::new()
                    .name("vouch-group-writer".into())
                    .spawn(move || {
                        if let Ok((writer_of, jobs)) = rx.recv() {
                            runtime.block_on(writer(writer_of, jobs, SPIN));
                        }
                    });
                match spawned {
                    Ok(_) => {
                        // The thread owns them from here; it ends when every queue handle
                        // is dropped.
                        let _ = tx.send((writer_of, jobs));
                        return Self { queue };
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no thread for the group writer; it runs on the server's runtime");
                        (writer_of, jobs)
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for the group writer; it runs on the server's runtime");
                (writer_of, jobs)
            }
        };
        // On the server's runtime a spinning batch would hold up a worker: no spin there.
        tokio::spawn(writer(writer_of, jobs, Duration::ZERO));
        Self { queue }
    }

    /// Runs `run` on the writer's own connection in the next group transaction and
    /// returns what it made, once committed.
    pub(crate) async fn write_direct<T, F>(&self, run: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: Fn(&rusqlite::Connection) -> Result<T, StorageError> + Send + Sync + 'static,
    {
        let (answer, fail, answered) = answer_slot::<T>();
        let work = Work::Direct(Arc::new(move |conn: &rusqlite::Connection| {
            let value = run(conn)?;
            let answer = answer.clone();
            let deliver: Deliver = Box::new(move || give(&answer, Ok(value)));
            Ok(deliver)
        }));
        self.enqueue(Job { work, fail }, answered).await
    }

    /// Runs `run` in the next group transaction of the writer's sqlx connection and returns
    /// what it made, once committed.
    pub(crate) async fn write<T, F>(&self, run: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: for<'c> Fn(
                &'c mut AnyConnection,
            )
                -> Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>
            + Send
            + Sync
            + 'static,
    {
        let (answer, fail, answered) = answer_slot::<T>();
        let run = Arc::new(run);
        let work = Work::Sqlx(Arc::new(move |conn: &mut AnyConnection| {
            let run = run.clone();
            let answer = answer.clone();
            Box::pin(async move {
                let value = run(conn).await?;
                let deliver: Deliver = Box::new(move || give(&answer, Ok(value)));
                Ok(deliver)
            })
        }));
        self.enqueue(Job { work, fail }, answered).await
    }

    async fn enqueue<T>(
        &self,
        job: Job,
        answered: oneshot::Receiver<Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        self.queue
            .send(job)
            .map_err(|_| StorageError::Database(sqlx::Error::WorkerCrashed))?;
        answered
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::WorkerCrashed))?
    }
}

/// Where a job's answer goes: taken once, by the commit's delivery or by the failure.
type Slot<T> = Arc<std::sync::Mutex<Option<oneshot::Sender<Result<T, StorageError>>>>>;

/// A job's answer slot, its failure callback and the caller's end.
#[allow(clippy::type_complexity)]
fn answer_slot<T: Send + 'static>() -> (
    Slot<T>,
    Box<dyn FnOnce(StorageError) + Send + Sync>,
    oneshot::Receiver<Result<T, StorageError>>,
) {
    let (tx, rx) = oneshot::channel::<Result<T, StorageError>>();
    let slot = Arc::new(std::sync::Mutex::new(Some(tx)));
    let on_fail = slot.clone();
    (slot, Box::new(move |e| give(&on_fail, Err(e))), rx)
}

fn give<T>(slot: &Slot<T>, answer: Result<T, StorageError>) {
    if let Some(tx) = slot.lock().ok().and_then(|mut a| a.take()) {
        let _ = tx.send(answer);
    }
}

/// The writer's state between batches: its two connections, made when first needed.
struct Writer {
    db: Db,
    file: PathBuf,
    conn: Option<AnyConnection>,
    lite: Option<rusqlite::Connection>,
}

/// The writer: takes every queued job, in batches of up to [`MAX_BATCH`], until every
/// queue handle is dropped; a batch that waits is polled again for up to `spin` before the
/// thread sleeps.
async fn writer(mut state: Writer, mut jobs: mpsc::UnboundedReceiver<Job>, spin: Duration) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (db, file) = (state.db.clone(), state.file.clone());
        let (conn, lite) = (state.conn.take(), state.lite.take());
        // A batch runs in a task of its own: a panic in one loses that batch's answers
        // (their callers get an error) and its connections, never the writer.
        let batch = Spin {
            batch: Box::pin(run_batch(db, file, conn, lite, batch)),
            limit: spin,
        };
        match tokio::spawn(batch).await {
            Ok((conn, lite)) => {
                state.conn = conn;
                state.lite = lite;
            }
            Err(e) => {
                tracing::error!(error = %e, "a group-commit batch failed; its writes were not made");
            }
        }
    }
}

/// Runs `batch`: its direct jobs in one transaction, then its sqlx jobs in another; on any
/// failure, each job of the failed transaction alone. Gives the connections back unless
/// they broke.
async fn run_batch(
    db: Db,
    file: PathBuf,
    conn: Option<AnyConnection>,
    lite: Option<rusqlite::Connection>,
    batch: Vec<Job>,
) -> (Option<AnyConnection>, Option<rusqlite::Connection>) {
    let mut direct = Vec::new();
    let mut sqlx_jobs = Vec::new();
    for job in batch {
        match job.work {
            Work::Direct(run) => direct.push(Split {
                run,
                fail: job.fail,
            }),
            Work::Sqlx(run) => sqlx_jobs.push(Split {
                run,
                fail: job.fail,
            }),
        }
    }
    let lite = if direct.is_empty() {
        lite
    } else {
        let lite = match lite {
            Some(lite) => Some(lite),
            None => match crate::lite::open(&file) {
                Ok(lite) => Some(lite),
                Err(e) => {
                    tracing::warn!(error = %e, "the group writer cannot open its database connection");
                    None
                }
            },
        };
        match lite {
            Some(lite) => {
                let _turn = db.write_turn().await;
                run_direct(lite, direct)
            }
            None => {
                for job in direct {
                    (job.fail)(StorageError::Setup(
                        "the group writer has no database connection".into(),
                    ));
                }
                None
            }
        }
    };
    let conn = if sqlx_jobs.is_empty() {
        conn
    } else {
        run_sqlx(&db, conn, sqlx_jobs).await
    };
    (conn, lite)
}

/// Runs direct jobs on `lite`, in one transaction or, if that fails, one by one. Gives the
/// connection back unless it was left inside a transaction it cannot end.
fn run_direct(
    lite: rusqlite::Connection,
    batch: Vec<Split<DirectRun>>,
) -> Option<rusqlite::Connection> {
    if batch.len() > 1 {
        let together = in_transaction(&lite, |conn| {
            batch
                .iter()
                .map(|job| (job.run)(conn))
                .collect::<Result<Vec<_>, _>>()
        });
        match together {
            Ok(delivers) => {
                for deliver in delivers {
                    deliver();
                }
                return Some(lite);
            }
            Err(e) => {
                tracing::debug!(error = %e, jobs = batch.len(), "group commit failed; running its jobs one by one");
            }
        }
    }
    for job in batch {
        match in_transaction(&lite, |conn| (job.run)(conn)) {
            Ok(deliver) => deliver(),
            Err(e) => (job.fail)(e),
        }
    }
    // A connection still in a transaction (its rollback failed too) is not reused.
    lite.is_autocommit().then_some(lite)
}

/// Runs `run` between `BEGIN IMMEDIATE` and `COMMIT` on `lite`, rolling back on any error.
fn in_transaction<T>(
    lite: &rusqlite::Connection,
    run: impl FnOnce(&rusqlite::Connection) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    crate::lite::execute(lite, "BEGIN IMMEDIATE", &[])?;
    let done = run(lite).and_then(|value| {
        crate::lite::execute(lite, "COMMIT", &[])?;
        Ok(value)
    });
    if done.is_err()
        && !lite.is_autocommit()
        && let Err(e) = crate::lite::execute(lite, "ROLLBACK", &[])
    {
        tracing::warn!(error = %e, "the group writer could not roll back");
    }
    done
}

/// Runs sqlx jobs on the writer's sqlx connection (taken out of the pool once, so no batch
/// pays a checkout and the ping sqlx sends when a connection goes back), in one
/// transaction or, if that fails, one by one. Gives the connection back unless it broke.
async fn run_sqlx(
    db: &Db,
    conn: Option<AnyConnection>,
    batch: Vec<Split<Run>>,
) -> Option<AnyConnection> {
    let mut conn = match conn {
        Some(c) => Some(c),
        None => db.pool.acquire().await.ok().map(|c| c.detach()),
    };
    if batch.len() > 1
        && let Some(c) = conn.as_mut()
    {
        match together(db, c, &batch).await {
            Ok(delivers) => {
                for deliver in delivers {
                    deliver();
                }
                return conn;
            }
            Err(e) => {
                tracing::debug!(error = %e, jobs = batch.len(), "group commit failed; running its jobs one by one");
            }
        }
    }
    for job in batch {
        // A connection that failed other than with a database error is replaced.
        if conn.is_none() {
            conn = db.pool.acquire().await.ok().map(|c| c.detach());
        }
        let Some(c) = conn.as_mut() else {
            tracing::warn!("the group writer has no database connection");
            (job.fail)(StorageError::Database(sqlx::Error::PoolTimedOut));
            continue;
        };
        match alone(db, c, &job.run).await {
            Ok(deliver) => deliver(),
            Err(e) => {
                if !matches!(e, sqlx::Error::Database(_)) {
                    conn = None;
                }
                (job.fail)(StorageError::Database(e));
            }
        }
    }
    conn
}

async fn together(
    db: &Db,
    conn: &mut AnyConnection,
    batch: &[Split<Run>],
) -> Result<Vec<Deliver>, sqlx::Error> {
    let _turn = db.write_turn().await;
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    let mut delivers = Vec::with_capacity(batch.len());
    for job in batch {
        delivers.push((job.run)(&mut tx).await?);
    }
    tx.commit().await?;
    Ok(delivers)
}

async fn alone(db: &Db, conn: &mut AnyConnection, run: &Run) -> Result<Deliver, sqlx::Error> {
    let _turn = db.write_turn().await;
    let mut tx = sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await?;
    let deliver = run(&mut tx).await?;
    tx.commit().await?;
    Ok(deliver)
}

/// How long the writer thread keeps polling a batch that waits before it sleeps. A batch
/// waits mostly for the SQLite connection's thread to answer a statement, which takes tens
/// of microseconds; sleeping and being woken for each answer cost more than that
/// (docs/BENCHMARKS.md, the fourth stop).
const SPIN: Duration = Duration::from_micros(25);

/// A batch's future, polled again for up to `limit` before it gives up the thread: the
/// answer it waits for usually arrives meanwhile, without the thread sleeping.
struct Spin<F> {
    batch: Pin<Box<F>>,
    limit: Duration,
}

impl<F: Future> Future for Spin<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let until = Instant::now() + self.limit;
        loop {
            if let Poll::Ready(done) = self.batch.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            if Instant::now() >= until {
                return Poll::Pending;
            }
            std::hint::spin_loop();
        }
    }
}
