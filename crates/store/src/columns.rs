//! Converting between Rust values and the column types both backends share under the `Any`
//! driver: ids as uuid v7 text, times as unix milliseconds, JSON as text, booleans as
//! PostgreSQL `BOOLEAN` or SQLite `INTEGER`.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::StoreError;

/// A new row id: uuid v7, so ids sort by creation time.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// JSON for a text column.
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("unserialisable JSON: {e}")))
}

/// A text column holding JSON.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &'static str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        StoreError::Database(sqlx::Error::ColumnDecode {
            index: column.into(),
            source: Box::new(e),
        })
    })
}

/// A boolean column: PostgreSQL reports `BOOLEAN`, SQLite an integer 0/1.
pub(crate) fn bool_column(row: &AnyRow, column: &'static str) -> Result<bool, StoreError> {
    match row.try_get::<bool, _>(column) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(column)? != 0),
    }
}

/// Checks that a JSON value has the shape a column expects, naming the field on failure.
pub(crate) fn require_object(value: &Value, field: &str) -> Result<(), StoreError> {
    if value.is_object() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{field} must be a JSON object"
        )))
    }
}

pub(crate) fn require_array(value: &Value, field: &str) -> Result<(), StoreError> {
    if value.is_array() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("{field} must be a JSON array")))
    }
}

/// A name used as a unique key: non-empty, no surrounding whitespace, bounded length.
pub(crate) fn require_name(name: &str, field: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.trim() != name || name.len() > 200 {
        Err(StoreError::Invalid(format!(
            "{field} must be 1-200 characters without surrounding whitespace"
        )))
    } else {
        Ok(())
    }
}

/// A SHA-256 digest as the store keeps it: 64 lowercase hex characters.
pub(crate) fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn require_sha256_hex(value: &str, field: &str) -> Result<(), StoreError> {
    if is_sha256_hex(value) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{field} must be a SHA-256 digest in 64 lowercase hex characters"
        )))
    }
}

/// One of a closed set of text values (a status, a role, an auth mode).
pub(crate) fn require_one_of(value: &str, allowed: &[&str], field: &str) -> Result<(), StoreError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{field} must be one of {}",
            allowed.join(", ")
        )))
    }
}
