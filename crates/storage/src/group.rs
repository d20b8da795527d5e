//! Group commit on SQLite: writes that arrive while a write transaction runs are committed
//! together in the next one, each still all-or-nothing and answered with its own result.
//!
//! SQLite runs one writer at a time, and each transaction costs its `BEGIN IMMEDIATE` and
//! `COMMIT` round trips to the connection's worker thread and the hand-over of the
//! writer's turn. One writer task takes every queued job, runs them one after another in
//! one transaction on a connection of its own (taken out of the pool once, so no batch
//! pays a checkout and the ping sqlx sends when a connection goes back) and commits once:
//! those costs are paid once per batch. Requests' tokens, sessions and outbox rows, and
//! the outbox worker's claims and delivery marks all go through it.
//!
//! The writer runs on a thread of its own. Every statement of a batch is a round trip to
//! the SQLite connection's thread; as a task among the HTTP handlers on the server's
//! runtime, the writer waited behind them for each answer. On its own thread it would
//! instead sleep and be woken for each one, which costs more than the statement, so a
//! batch that waits is polled again for up to 25 µs first ([`SPIN`]): the answer usually
//! comes meanwhile. An idle writer sleeps. (docs/BENCHMARKS.md, the fourth stop: email
//! requestToken +6% and refresh +5% against the writer on the server's runtime, with a
//! lower p99; longer spins favour refresh's five statements a job over requestToken's
//! two, and without the spin refresh lost a third.)
//!
//! If any job fails (a database error, not a "no such token" answer, which is a result),
//! the batch is rolled back and every job of it is run again in a transaction of its own,
//! so one bad job never takes the others down with it; a job must therefore be safe to run
//! twice from the start, which a rolled-back transaction guarantees. Answers are given
//! only after the commit that made them durable.

use std::future::Future;
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

/// A queued write.
struct Job {
    run: Run,
    fail: Box<dyn FnOnce(sqlx::Error) + Send + Sync>,
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
    /// own, with a single-threaded runtime: each of a batch's statements is a hand-off to
    /// the SQLite connection's thread and back, and on the server's runtime every "back"
    /// waited its turn behind the HTTP tasks queued on the same two workers. If that thread
    /// cannot be made, the writer runs as a task of the current runtime instead.
    pub(crate) fn start(db: Db) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel::<Job>();
        // Timers only: the writer needs the pool's timeouts and does no I/O of its own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        let (db, jobs) = match runtime {
            Ok(runtime) => {
                let (tx, rx) = std::sync::mpsc::channel::<(Db, mpsc::UnboundedReceiver<Job>)>();
                let spawned = std::thread::Builder::new()
                    .name("vouch-group-writer".into())
                    .spawn(move || {
                        if let Ok((db, jobs)) = rx.recv() {
                            runtime.block_on(writer(db, jobs, SPIN));
                        }
                    });
                match spawned {
                    Ok(_) => {
                        // The thread owns them from here; it ends when every queue handle
                        // is dropped.
                        let _ = tx.send((db, jobs));
                        return Self { queue };
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no thread for the group writer; it runs on the server's runtime");
                        (db, jobs)
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for the group writer; it runs on the server's runtime");
                (db, jobs)
            }
        };
        // On the server's runtime a spinning batch would hold up a worker: no spin there.
        tokio::spawn(writer(db, jobs, Duration::ZERO));
        Self { queue }
    }

    /// Runs `run` in the next group transaction and returns what it made, once committed.
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
        let (answer, answered) = oneshot::channel::<Result<T, StorageError>>();
        let answer = Arc::new(std::sync::Mutex::new(Some(answer)));
        let on_fail = answer.clone();
        let run = Arc::new(run);
        let job = Job {
            run: Arc::new(move |conn: &mut AnyConnection| {
                let run = run.clone();
                let answer = answer.clone();
                Box::pin(async move {
                    let value = run(conn).await?;
                    let deliver: Deliver = Box::new(move || {
                        if let Some(tx) = answer.lock().ok().and_then(|mut a| a.take()) {
                            let _ = tx.send(Ok(value));
                        }
                    });
                    Ok(deliver)
                })
            }),
            fail: Box::new(move |e| {
                if let Some(tx) = on_fail.lock().ok().and_then(|mut a| a.take()) {
                    let _ = tx.send(Err(StorageError::Database(e)));
                }
            }),
        };
        self.queue
            .send(job)
            .map_err(|_| StorageError::Database(sqlx::Error::WorkerCrashed))?;
        answered
            .await
            .map_err(|_| StorageError::Database(sqlx::Error::WorkerCrashed))?
    }
}

/// The writer: takes every queued job, in batches of up to [`MAX_BATCH`], until every
/// queue handle is dropped; a batch that waits is polled again for up to `spin` before the
/// thread sleeps.
async fn writer(db: Db, mut jobs: mpsc::UnboundedReceiver<Job>, spin: Duration) {
    // The writer's own connection, taken out of the pool once: a pooled one would be
    // checked out and pinged on its return for every batch.
    let mut conn: Option<AnyConnection> = None;
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let c = match conn.take() {
            Some(c) => c,
            None => match db.pool.acquire().await {
                Ok(c) => c.detach(),
                Err(e) => {
                    tracing::warn!(error = %e, "the group writer has no database connection");
                    for job in batch {
                        (job.fail)(sqlx::Error::PoolTimedOut);
                    }
                    continue;
                }
            },
        };
        // A batch runs in a task of its own: a panic in one loses that batch's answers
        // (their callers get an error) and its connection, never the writer.
        let batch = Spin {
            batch: Box::pin(run_batch(db.clone(), c, batch)),
            limit: spin,
        };
        match tokio::spawn(batch).await {
            Ok(kept) => conn = kept,
            Err(e) => {
                tracing::error!(error = %e, "a group-commit batch failed; its writes were not made");
            }
        }
    }
}

/// Runs `batch` in one transaction on `conn`; on any failure, each job alone. Gives the
/// connection back unless it broke.
async fn run_batch(db: Db, mut conn: AnyConnection, batch: Vec<Job>) -> Option<AnyConnection> {
    if batch.len() > 1 {
        match together(&db, &mut conn, &batch).await {
            Ok(delivers) => {
                for deliver in delivers {
                    deliver();
                }
                return Some(conn);
            }
            Err(e) => {
                tracing::debug!(error = %e, jobs = batch.len(), "group commit failed; running its jobs one by one");
            }
        }
    }
    let mut conn = Some(conn);
    for job in batch {
        // A connection that failed other than with a database error is replaced.
        if conn.is_none() {
            conn = db.pool.acquire().await.ok().map(|c| c.detach());
        }
        let Some(c) = conn.as_mut() else {
            (job.fail)(sqlx::Error::PoolTimedOut);
            continue;
        };
        match alone(&db, c, &job.run).await {
            Ok(deliver) => deliver(),
            Err(e) => {
                if !matches!(e, sqlx::Error::Database(_)) {
                    conn = None;
                }
                (job.fail)(e);
            }
        }
    }
    conn
}

async fn together(
    db: &Db,
    conn: &mut AnyConnection,
    batch: &[Job],
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
