use super::{TestResult, backends, drop_database, empty_databases};
use crate::{Backend, Cipher, Store, StoreError};

#[tokio::test]
async fn migrations_are_idempotent() -> TestResult {
    let b = backends().await?;
    for store in b.iter() {
        store.migrate().await?;
        store.migrate().await?;
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&store.pool)
            .await?;
        assert_eq!(applied, 10, "{:?}", store.backend());
        assert!(store.list_providers().await?.is_empty());
    }
    b.finish().await
}

/// Two instances starting together on one empty database both come up migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_migrations_both_succeed() -> TestResult {
    let dbs = empty_databases().await?;
    for url in &dbs.urls {
        let one = Store::connect(url, Cipher::generate().0).await?;
        let two = Store::connect(url, Cipher::generate().0).await?;
        let (first, second) = tokio::join!(one.migrate(), two.migrate());
        first?;
        second?;
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&one.pool)
            .await?;
        assert_eq!(applied, 10, "{:?}", one.backend());
        one.close().await;
        two.close().await;
        drop_database(url).await?;
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_uses_wal_foreign_keys_and_a_busy_timeout() -> TestResult {
    let b = backends().await?;
    for store in b.iter().filter(|s| s.backend() == Backend::Sqlite) {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await?;
        assert_eq!(mode, "wal", "journal mode");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.pool)
            .await?;
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&store.pool)
            .await?;
        assert!(busy >= 1000);
    }
    b.finish().await
}

#[tokio::test]
async fn unknown_database_schemes_are_refused() -> TestResult {
    let err = Store::connect("mysql://localhost/db", Cipher::generate().0).await;
    assert!(matches!(err, Err(StoreError::Invalid(_))));
    Ok(())
}
