//! The connection: which backend a URL names, the pool, per-connection SQLite settings, the
//! migration run and the write transaction every multi-statement change goes through.
//!
//! Why the sqlx `Any` driver rather than an enum over two pools: every query is written once with
//! `$1` placeholders (SQLite accepts them) and the repositories have a single code path, so the
//! two backends cannot drift apart silently. The price is `Any`'s small type set (integers,
//! floats, text, bytes, bool): timestamps are i64 milliseconds, ids and JSON are text, and
//! booleans are read through `columns`. Where a backend needs different SQL (pgvector,
//! FTS5), a repository branches on [`Store::backend`] and still runs through the same pool.
//! One exception, for speed: the request log's writer on SQLite (`request_log::sqlite_writer`)
//! runs the pool path's SQL on a connection of its own.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::migrations;
use crate::request_log::sqlite_writer::SqliteLogWriter;
use crate::{Keyring, StoreError};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a connection URL names: `sqlite:…` or `postgres://…`/`postgresql://…`.
    pub fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Invalid(
                "database URL must start with sqlite: or postgres://".into(),
            ))
        }
    }
}

/// Every SQLite connection's settings: a writer waits up to 5 s for the lock before
/// `SQLITE_BUSY`; each connection has its own page cache, emptied whenever another connection
/// writes, while mapped pages are shared and need no copy; statement journals (multi-row
/// writes) stay off the disk.
pub(crate) const SQLITE_PRAGMAS: [&str; 5] = [
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA mmap_size = 268435456",
    "PRAGMA temp_store = MEMORY",
];

/// SQLite allows one writer at a time; more connections only serve concurrent readers.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;

/// The repositories' handle: a pool, its backend and the cipher for secrets at rest. Cheap to
/// clone (everything inside is shared).
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// Where write transactions run: on SQLite one connection of its own, so they queue here
    /// instead of spinning on the database lock, and its page cache stays warm (a connection
    /// drops its cache whenever another one has written).
    write_pool: AnyPool,
    backend: Backend,
    pub(crate) keys: Arc<arc_swap::ArcSwap<Keyring>>,
    /// SQLite only: the request log's own writer connection (see its module).
    pub(crate) log_writer: Option<Arc<SqliteLogWriter>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool for `sqlite://path?mode=rwc` (WAL, foreign keys, busy timeout) or
    /// `postgres://…`. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, keys: impl Into<Keyring>) -> Result<Store, StoreError> {
        let keys = keys.into();
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|_| StoreError::Invalid("database URL cannot be parsed".into()))?;
        let mut log_writer = None;
        let (pool, write_pool) = match backend {
            Backend::Sqlite => {
                let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .map_err(|_| StoreError::Invalid("database URL cannot be parsed".into()))?
                    .get_filename()
                    .to_path_buf();
                log_writer = Some(Arc::new(SqliteLogWriter::new(path)));
                let sqlite = |connections: u32| {
                    AnyPoolOptions::new()
                        .max_connections(connections)
                        .after_connect(|conn, _meta| {
                            Box::pin(async move {
                                // A new, empty database stores its journal mode with its first
                                // write, made by whichever connection writes first: each one
                                // asks for WAL (a no-op once the file has it).
                                conn.execute("PRAGMA journal_mode = WAL").await?;
                                for pragma in SQLITE_PRAGMAS {
                                    conn.execute(pragma).await?;
                                }
                                Ok(())
                            })
                        })
                        .connect_with(options.clone())
                };
                let pool = sqlite(SQLITE_MAX_CONNECTIONS).await?;
                enable_wal(&pool).await?;
                let write_pool = sqlite(1).await?;
                (pool, write_pool)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_MAX_CONNECTIONS)
                    .connect_with(options)
                    .await?;
                (pool.clone(), pool)
            }
        };
        Ok(Store {
            pool,
            write_pool,
            backend,
            keys: Arc::new(arc_swap::ArcSwap::from_pointee(keys)),
            log_writer,
        })
    }

    /// Applies every pending migration; running it again (or from a second instance) is a no-op.
    ///
    /// PostgreSQL serialises concurrent runs with sqlx's advisory lock. SQLite has no such lock,
    /// so the run happens inside one `BEGIN IMMEDIATE` transaction: a second process waits for
    /// the first and then finds nothing to do.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = migrations::migrator(self.backend);
        match self.backend {
            Backend::Sqlite => {
                let mut tx = self.begin_write().await?;
                migrator.run(&mut *tx).await?;
                tx.commit().await?;
            }
            Backend::Postgres => migrator.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool (waiting for connections in use to be returned) and the log writer's
    /// connection.
    pub async fn close(&self) {
        self.pool.close().await;
        self.write_pool.close().await;
        if let Some(w) = &self.log_writer {
            w.close();
        }
    }

    /// Starts a transaction for a read-then-write change. On SQLite it takes the write lock up
    /// front (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later fails
    /// with `SQLITE_BUSY` when another writer got in between, and the busy timeout cannot help.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        Ok(self.write_pool.begin_with(begin).await?)
    }
}

/// WAL lets readers proceed while one writer commits. Every connection asks for it as it
/// opens; this checks that the database took it (switching needs an exclusive lock).
async fn enable_wal(pool: &AnyPool) -> Result<(), StoreError> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    if mode.eq_ignore_ascii_case("wal") || mode.eq_ignore_ascii_case("memory") {
        return Ok(());
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
        .fetch_one(pool)
        .await?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "SQLite refused WAL journal mode (got {mode})"
        )))
    }
}
