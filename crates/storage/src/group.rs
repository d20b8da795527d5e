//! Group commit on SQLite: writes that arrive while a write transaction runs are committed
//! together in the next one, each still all-or-nothing and answered with its own result.
//!
//! SQLite runs one writer at a time, and each transaction costs its `BEGIN IMMEDIATE` and
//! `COMMIT` round trips to the connection's worker thread and the hand-over of the
//! writer's turn. One writer task takes every queued job, runs them one after another in
//! one transaction on a connection of its own (taken out of the pool once, so no batch
//! pays a checkout and the ping sqlx sends when a connection goes back) and commits once:
//! those costs are paid once per batch. Requests' tokens, sessions and outbox rows, and
//! the outbox worker's claims and delivery marks all go through it. If any job fails (a database error, not a "no such token" answer, which is
//! a result), the batch is rolled back and every job of it is run again in a transaction
//! of its own, so one bad job never takes the others down with it; a job must therefore
//! be safe to run twice from the start, which a rolled-back transaction guarantees.
//! Answers are given only after the commit that made them durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
    /// Starts the writer task for `db` (which must not itself have a group).
    pub(crate) fn start(db: Db) -> Self {
        let (queue, mut jobs) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            // The writer's own connection, taken out of the pool once: a pooled one would
            // be checked out and pinged on its return for every batch.
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
                // A batch runs in a task of its own: a panic in one loses that batch's
                // answers (their callers get an error) and its connection, never the writer.
                match tokio::spawn(run_batch(db.clone(), c, batch)).await {
                    Ok(kept) => conn = kept,
                    Err(e) => {
                        tracing::error!(error = %e, "a group-commit batch failed; its writes were not made");
                    }
                }
            }
        });
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
