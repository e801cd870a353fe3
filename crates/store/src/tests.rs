//! The store suite. Every test runs against each store [`backends`] returns: always a fresh
//! SQLite file, plus a fresh PostgreSQL database when `GATEWAY_TEST_POSTGRES_URL` is set (start
//! one with `scripts/test-postgres.sh`). With `CI` set, a missing PostgreSQL URL fails the suite
//! instead of skipping it.

mod admin_tokens;
mod apis;
mod audit;
mod billing;
mod consumers;
mod functions;
mod keys;
mod knowledge;
mod migrations;
mod models;
mod providers;
mod request_log;
mod settings;

use std::sync::Once;

use sqlx::Any;
use sqlx::migrate::MigrateDatabase;
use tempfile::TempDir;

use crate::{Cipher, Store};

pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PG_VAR: &str = "GATEWAY_TEST_POSTGRES_URL";

/// Migrated stores, one per backend under test, each on its own empty database.
pub(crate) struct Backends {
    /// Each store with the URL it was opened from (to open a second pool on the same database).
    pub(crate) stores: Vec<(Store, String)>,
    _sqlite_dir: TempDir,
}

impl Backends {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Store> {
        self.stores.iter().map(|(store, _)| store)
    }

    /// Closes the pools and drops the PostgreSQL test database. A failing test skips this and
    /// leaves its database behind for inspection; the throwaway server takes it with it.
    pub(crate) async fn finish(self) -> TestResult {
        for (store, url) in &self.stores {
            store.close().await;
            drop_database(url).await?;
        }
        Ok(())
    }
}

/// Empty, unmigrated databases: one SQLite file, and a PostgreSQL database when configured.
pub(crate) struct Databases {
    pub(crate) urls: Vec<String>,
    pub(crate) dir: TempDir,
}

pub(crate) async fn empty_databases() -> TestResult<Databases> {
    static NOTICE: Once = Once::new();
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir()?;
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let mut urls = vec![sqlite];
    match std::env::var(PG_VAR) {
        Ok(base) if !base.is_empty() => {
            let url = with_database(&base, &format!("t_{}", uuid::Uuid::new_v4().simple()))?;
            Any::create_database(&url).await?;
            urls.push(url);
        }
        _ if std::env::var_os("CI").is_some() => {
            return Err(format!(
                "{PG_VAR} is not set but CI is: the PostgreSQL half of the store suite must run \
                 (start a server with scripts/test-postgres.sh)"
            )
            .into());
        }
        _ => NOTICE.call_once(|| {
            eprintln!(
                "notice: {PG_VAR} is not set; the store suite runs on SQLite only \
                 (eval \"$(scripts/test-postgres.sh)\" to include PostgreSQL)"
            );
        }),
    }
    Ok(Databases { urls, dir })
}

/// One migrated store per backend under test.
pub(crate) async fn backends() -> TestResult<Backends> {
    let dbs = empty_databases().await?;
    let mut stores = Vec::new();
    for url in dbs.urls {
        stores.push((migrated(&url).await?, url));
    }
    Ok(Backends {
        stores,
        _sqlite_dir: dbs.dir,
    })
}

/// Drops a PostgreSQL test database (SQLite files go with their temporary directory).
pub(crate) async fn drop_database(url: &str) -> TestResult {
    if url.starts_with("postgres") {
        Any::drop_database(url).await?;
    }
    Ok(())
}

async fn migrated(url: &str) -> TestResult<Store> {
    let store = Store::connect(url, Cipher::generate().0).await?;
    store.migrate().await?;
    Ok(store)
}

/// `base` with its database name replaced by `db`, keeping credentials, host and query.
fn with_database(base: &str, db: &str) -> TestResult<String> {
    let (head, query) = match base.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (base, None),
    };
    let authority = head.find("://").ok_or("database URL has no scheme")? + 3;
    let path = head[authority..]
        .find('/')
        .map_or(head.len(), |i| authority + i);
    let mut url = format!("{}/{db}", &head[..path]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

#[test]
fn with_database_replaces_only_the_path() -> TestResult {
    assert_eq!(
        with_database("postgres://u:p@127.0.0.1:5/postgres?sslmode=disable", "t_1")?,
        "postgres://u:p@127.0.0.1:5/t_1?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "t_2")?, "postgres://h/t_2");
    Ok(())
}
