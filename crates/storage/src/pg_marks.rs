//! PostgreSQL's delivery marks, recorded together. Every delivered message is marked sent,
//! and one commit per mark would double the commits a requestToken costs. The marks that
//! arrive while one batch is being written go out as the next batch, in one statement and
//! one commit; each caller waits for its own batch. SQLite's marks share the group writer's
//! commits instead (`group.rs`).

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

/// Marks written by one statement at most.
const BATCH: usize = 256;

/// Records the delivery of each message of `$1`, a JSON array of `{"id", "sent_at"}`, as
/// `outbox::MARK_SENT` does for one.
const MARK_SENT_MANY: &str = "UPDATE outbox SET sent_at = d.sent_at, attempts = attempts + 1,
         locked_until = NULL, last_error = NULL, message = ''
     FROM json_to_recordset($1::json) AS d(id text, sent_at bigint)
     WHERE outbox.id = d.id";

/// One mark waiting for its batch; `answer` is told whether the batch was written.
struct Mark {
    id: String,
    sent_at: i64,
    answer: oneshot::Sender<bool>,
}

/// The handle to the task that writes the batches.
#[derive(Debug, Clone)]
pub(crate) struct Marks {
    queue: mpsc::Sender<Mark>,
}

impl Marks {
    /// Starts the batching task on the current runtime. It ends when every handle is gone.
    pub(crate) fn start(pool: AnyPool) -> Self {
        let (queue, mut arrived) = mpsc::channel::<Mark>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while arrived.recv_many(&mut batch, BATCH).await > 0 {
                let written = match write(&pool, &batch).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, marks = batch.len(), "outbox: cannot record deliveries together; recording each alone");
                        false
                    }
                };
                for mark in batch.drain(..) {
                    let _ = mark.answer.send(written);
                }
            }
        });
        Self { queue }
    }

    /// Records the delivery of `id` at `sent_at` with the next batch. `false`: it was not
    /// written (the batch failed, or the task is gone), and the caller records it alone.
    pub(crate) async fn record(&self, id: &str, sent_at: i64) -> bool {
        let (answer, written) = oneshot::channel();
        let mark = Mark {
            id: id.to_owned(),
            sent_at,
            answer,
        };
        if self.queue.send(mark).await.is_err() {
            tracing::error!("outbox: the task recording deliveries has stopped; recording alone");
            return false;
        }
        written.await.unwrap_or(false)
    }
}

/// Writes one batch of marks in one statement (committed on its own).
async fn write(pool: &AnyPool, batch: &[Mark]) -> Result<(), sqlx::Error> {
    let rows: Vec<serde_json::Value> = batch
        .iter()
        .map(|m| serde_json::json!({ "id": m.id, "sent_at": m.sent_at }))
        .collect();
    let json = serde_json::Value::Array(rows).to_string();
    sqlx::query(MARK_SENT_MANY).bind(json).execute(pool).await?;
    Ok(())
}
