//! The store's one error type. Messages name what failed, never a value that was stored: no
//! plaintext key, ciphertext or connection password ever reaches `Display`.

use sqlx::error::{DatabaseError, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operation on a named row that must exist found none.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique constraint was violated (e.g. a provider name already taken), on either backend.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's input cannot be stored as given (empty name, JSON of the wrong shape…).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Encryption or decryption failed: a wrong key, a tampered blob, or a ciphertext moved to
    /// another row.
    #[error("crypto: {0}")]
    Crypto(&'static str),
    /// Reading or writing the encryption key file.
    #[error("encryption key file: {0}")]
    KeyFile(#[source] std::io::Error),
    /// Any other database or migration failure.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// A failure of the request log's own SQLite connection.
    #[error("database: {0}")]
    Sqlite(#[source] rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && is_unique_violation(db.as_ref())
        {
            let what = db.constraint().unwrap_or("unique constraint");
            return StoreError::Conflict(format!("{what} violated"));
        }
        StoreError::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(sqlx::Error::from(e))
    }
}

/// sqlx classifies both backends' codes already; the raw codes are checked too so a driver that
/// reports `Other` still maps: PostgreSQL `23505`, SQLite extended codes `2067` (UNIQUE) and
/// `1555` (PRIMARY KEY).
fn is_unique_violation(db: &dyn DatabaseError) -> bool {
    db.kind() == ErrorKind::UniqueViolation
        || matches!(db.code().as_deref(), Some("23505" | "2067" | "1555"))
}
