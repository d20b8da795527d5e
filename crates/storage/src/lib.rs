//! Vouch's storage: every piece of state that matters (accounts, devices, tokens, UIA
//! sessions) lives here, in SQLite or PostgreSQL, so that several instances on one database
//! agree.
//!
//! One schema and one SQL text serve both engines through sqlx's `Any` driver. Writes that
//! must be race-free are single conditional statements or transactions whose first statement
//! is a write (SQLite then takes its write lock at once instead of failing on upgrade).

mod accounts;
mod devices;
mod group;
mod housekeeping;
mod identity;
mod lite;
mod oauth;
mod oidc;
mod outbox;
mod pg_marks;
mod pg_routines;
mod registration_tokens;
mod send_limits;
mod synapse;
mod threepids;
mod uia;
mod validation;

pub use housekeeping::Purged;
pub use identity::Binding;
pub use oauth::{
    ApprovedGrant, BrowserSession, DevicePoll, Exchange, Grant, NewClient, PageCode, TokenOwner,
};
pub use oidc::{OidcKey, OidcToken};
pub use outbox::{DELIVERY_LEASE_MS, NewMessage, Pending, QueuedMessage};
pub use send_limits::{LimitHit, Limited, SendLimits, SendWindow};
pub use uia::StoredUiaSession;
pub use validation::{
    AddressOwner, Claim, NewValidation, Queued, StoredValidation, TokenRequestReads, WrongToken,
};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row, Transaction};

pub use accounts::{
    CreateAccountError, ImportOutcome, ImportedDevice, ImportedToken, ImportedUser, LoginWritten,
    NewAccount, NewLogin, User, UserFilter,
};
pub use devices::{
    AccessTokenInfo, Device, DeviceNotice, Ending, HomeserverClaim, Refreshed, RefreshedSession,
};
pub use registration_tokens::RegistrationToken;
pub use synapse::SynapseSource;
pub use threepids::{AddThreepidError, Threepid};

/// The embedded migrations (`crates/storage/migrations`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (bundled).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A storage failure that is not a domain outcome: the database is unreachable, a query
/// failed, a row held something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A database error on the group writer's own SQLite connection (`lite.rs`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Could not prepare the database location.
    #[error("cannot prepare the database: {0}")]
    Setup(String),
}

impl StorageError {
    /// Whether the database refused a text it cannot hold (PostgreSQL: a NUL character,
    /// 22021 or 22P05): the request's fault, not the server's.
    pub fn is_bad_text(&self) -> bool {
        matches!(self, StorageError::Database(sqlx::Error::Database(db))
            if db.code().is_some_and(|c| c == "22021" || c == "22P05"))
    }

    /// Whether the database could not be reached (down, restarting, out of connections),
    /// as opposed to a query that failed: the client may simply try again later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Database(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed => true,
                // PostgreSQL: connection exceptions (08…), shutting down (57P0…), and
                // transactions that lost a deadlock or a serialisation conflict (40P01,
                // 40001): nothing was written, and the same request may succeed again.
                sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("57P0") || c == "40P01" || c == "40001"
                }),
                _ => false,
            },
            // The file stayed locked past the busy timeout: nothing was written.
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// The database handle shared by the whole server.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time. Writers queue here, in order, instead of polling
    /// the file lock in SQLite's busy handler (whose sleeps grow to 100 ms and made the
    /// tail latency of writes under load). `None` on PostgreSQL.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// SQLite's group commit (`group.rs`) for the hot writes; `None` on PostgreSQL, whose
    /// transactions run side by side.
    group: Option<group::Group>,
    /// PostgreSQL's delivery marks, written in batches (`pg_marks.rs`); `None` on SQLite,
    /// whose marks share the group writer's commits.
    marks: Option<pg_marks::Marks>,
}

/// A write transaction; on SQLite it also holds this process's writer turn until it ends.
pub(crate) struct WriteTx {
    tx: Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Each SQLite connection's page cache, in KiB.
const SQLITE_CACHE_KIB: u32 = 512;

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://…`), creating a SQLite file and its
    /// directory if missing, and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StorageError> {
        Self::connect_with(url, max_connections, std::time::Duration::from_secs(5)).await
    }

    /// [`Self::connect`], waiting at most `acquire_timeout` for a pooled connection.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: std::time::Duration,
    ) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            let parent = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = parent.filter(|_| path != ":memory:") {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StorageError::Setup(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = if url.contains("mode=") {
                url.to_owned()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (url, Backend::Sqlite)
        } else {
            (url.to_owned(), Backend::Postgres)
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout);
        if backend == Backend::Sqlite {
            // A SQLite connection is a file handle in this process: it cannot go stale the
            // way a network connection can, so it is not pinged on every checkout (one
            // round trip to its worker thread saved per query or transaction).
            options = options.test_before_acquire(false);
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; a busy writer is waited for.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    // Each connection keeps its own page cache (2 MiB by default); the pool's
                    // connections together would hold 20 MiB of mostly the same pages under a
                    // read-heavy load. The operating system's file cache is behind it.
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "PRAGMA cache_size = -{SQLITE_CACHE_KIB}"
                    )))
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            });
        }
        if backend == Backend::Postgres {
            // sqlx pings a connection when it goes back to the pool; pinging it again when it
            // is taken out costs every query or transaction one more round trip. Only a
            // connection that sat idle for a while (long enough for a server restart or a
            // proxy's idle cut) is checked again.
            options = options
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= std::time::Duration::from_secs(1) {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                });
        }
        let pool = options.connect(&url).await?;
        let write_gate =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let mut db = Self {
            pool,
            backend,
            write_gate,
            group: None,
            marks: None,
        };
        MIGRATOR.run(&db.pool).await?;
        if backend == Backend::Postgres {
            pg_routines::install(&db.pool).await?;
            db.marks = Some(pg_marks::Marks::start(db.pool.clone()));
        }
        if backend == Backend::Sqlite {
            // The file the pool opened, for the group writer's own connection.
            let file: String =
                sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
                    .fetch_one(&db.pool)
                    .await?
                    .try_get("file")?;
            if file.is_empty() {
                return Err(StorageError::Setup(
                    "SQLite needs a database file: an in-memory database is not shared between connections".into(),
                ));
            }
            db.group = Some(group::Group::start(db.clone(), file.into()));
        }
        Ok(db)
    }

    /// The engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue instead of one failing with "locked".
    async fn begin_write(&self) -> Result<WriteTx, StorageError> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// On SQLite, waits for this process's writer turn (held until the guard drops); on
    /// PostgreSQL, nothing. Single-statement writes take it too.
    async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether a database error is a unique-constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Reads a 0/1 flag column.
fn flag(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

/// Reads an enum stored as text.
fn parse_col<T: FromStr>(row: &AnyRow, col: &str) -> Result<T, sqlx::Error>
where
    T::Err: std::fmt::Display,
{
    let raw: String = row.try_get(col)?;
    raw.parse::<T>()
        .map_err(|e| sqlx::Error::Decode(format!("column {col}: {e}").into()))
}

#[cfg(test)]
mod tests;
