//! The request log's writer on SQLite: one connection of its own, prepared single-row
//! statements bound from the rows in place, one `BEGIN IMMEDIATE` transaction per batch.
//!
//! Why not the pool, as everything else: at 15,000 requests/s the `Any` driver's way of
//! writing (every bound value turned into an owned value, the statement sent to a worker
//! thread, one multi-row statement per 100 rows) cost more CPU than SQLite's own work on the
//! rows. The SQL is the pool path's, and PostgreSQL still writes through that path, so the two
//! backends share their statements and their tests. A duplicate request id is found per row
//! (no change), which keeps it out of the rollups without a second pass.

use std::borrow::Borrow;
use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, ToSql, TransactionBehavior, params};

use super::{COLUMNS, LogRow, Table, WIDTH, rollup_adds, rollup_upsert_sql, rollup_width};
use crate::batch::placeholders;
use crate::db::SQLITE_PRAGMAS;
use crate::{Backend, StoreError};

/// The database file and, once the first batch came, the open connection (reopened after a
/// failed batch, so a connection in an unknown state is never reused).
#[derive(Debug)]
pub(crate) struct SqliteLogWriter {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
    insert: String,
    rollup_consumer: String,
    rollup_model: String,
}

impl SqliteLogWriter {
    pub(crate) fn new(path: PathBuf) -> SqliteLogWriter {
        let one = |table| {
            rollup_upsert_sql(
                table,
                &placeholders(Backend::Sqlite, 1, rollup_width(table)),
            )
        };
        SqliteLogWriter {
            path,
            conn: Mutex::new(None),
            insert: format!(
                "INSERT INTO request_log ({COLUMNS}) VALUES {} ON CONFLICT (request_id) DO NOTHING",
                placeholders(Backend::Sqlite, 1, WIDTH)
            ),
            rollup_consumer: one(Table::Consumer),
            rollup_model: one(Table::Model),
        }
    }

    /// Writes the rows not logged yet and their rollups in one transaction; how many were new.
    /// Blocking: run it off the async workers.
    pub(crate) fn insert<R: Borrow<LogRow>>(&self, rows: &[R]) -> Result<usize, StoreError> {
        let mut slot = self
            .conn
            .lock()
            .map_err(|_| StoreError::Invalid("the request log writer failed earlier".into()))?;
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(self.open()?),
        };
        let written = self.write(conn, rows);
        if written.is_err() {
            *slot = None;
        }
        Ok(written?)
    }

    /// Closes the connection (a later batch opens a new one).
    pub(crate) fn close(&self) {
        if let Ok(mut slot) = self.conn.lock() {
            slot.take();
        }
    }

    fn open(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        for pragma in SQLITE_PRAGMAS {
            conn.execute_batch(pragma)?;
        }
        Ok(conn)
    }

    fn write<R: Borrow<LogRow>>(
        &self,
        conn: &mut Connection,
        rows: &[R],
    ) -> Result<usize, rusqlite::Error> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut new = Vec::with_capacity(rows.len());
        {
            let mut insert = tx.prepare_cached(&self.insert)?;
            let mut attempts = Vec::with_capacity(256);
            for r in rows {
                let r = r.borrow();
                attempts.clear();
                serde_json::to_writer(&mut attempts, &r.attempts)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                // serde_json writes UTF-8.
                let attempts = std::str::from_utf8(&attempts).unwrap_or("[]");
                let changed = insert.execute(params![
                    r.request_id,
                    r.created_at,
                    r.api,
                    r.endpoint,
                    r.consumer_id,
                    r.key_id,
                    r.model_requested,
                    r.model,
                    r.provider,
                    attempts,
                    r.stream,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cached_tokens,
                    r.estimated,
                    r.cost_picos,
                    r.latency_ms,
                    r.ttft_ms,
                    r.status,
                    r.error,
                    r.moderation,
                    r.rag_sources,
                    r.hooks,
                    r.cache_hit,
                    r.request_body,
                    r.response_body,
                ])?;
                if changed == 1 {
                    new.push(r);
                }
            }
        }
        {
            let mut consumer = tx.prepare_cached(&self.rollup_consumer)?;
            let mut model = tx.prepare_cached(&self.rollup_model)?;
            for ((table, span, at, k1, k2), a) in rollup_adds(new.iter().copied()) {
                let mut buf = [0; 4];
                let span: &str = span.encode_utf8(&mut buf);
                let (stmt, keys): (_, &[&dyn ToSql]) = match table {
                    Table::Consumer => (&mut consumer, &[&span, &at, &k1]),
                    Table::Model => (&mut model, &[&span, &at, &k1, &k2]),
                };
                let values = a.values();
                let row: Vec<&dyn ToSql> = keys
                    .iter()
                    .copied()
                    .chain(values.iter().map(|v| v as &dyn ToSql))
                    .collect();
                stmt.execute(row.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(new.len())
    }
}
