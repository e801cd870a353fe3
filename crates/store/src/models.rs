//! Models: a public name (`provider/model` or an alias) with its route: ordered targets, fallback
//! chains per error class and options (context window, prices…). The JSON stays a
//! [`serde_json::Value`] here; the router owns its typed meaning and validates it.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::columns::{
    json_column, json_text, new_id, now_ms, require_array, require_name, require_object,
};
use crate::{Store, StoreError};

/// What the admin writes for a model route.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInput {
    pub name: String,
    /// `[{"provider": "...", "model": "...", "weight": 1}, ...]`, in order.
    pub targets: Value,
    /// `{"rate_limit": ["other-model", ...], "timeout": [...], ...}`.
    pub fallbacks: Value,
    /// `{"context_window": 128000, "input_per_million": 2.5, ...}`.
    pub options: Value,
}

impl ModelInput {
    /// A route with no targets, fallbacks or options yet.
    pub fn new(name: impl Into<String>) -> ModelInput {
        ModelInput {
            name: name.into(),
            targets: Value::Array(Vec::new()),
            fallbacks: Value::Object(serde_json::Map::new()),
            options: Value::Object(serde_json::Map::new()),
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        require_name(&self.name, "model name")?;
        require_array(&self.targets, "model targets")?;
        require_object(&self.fallbacks, "model fallbacks")?;
        require_object(&self.options, "model options")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRecord {
    pub id: String,
    pub name: String,
    pub targets: Value,
    pub fallbacks: Value,
    pub options: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! select_models {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, targets, fallbacks, options, created_at, updated_at FROM models ",
            $rest
        )
    };
}

impl Store {
    /// Inserts a new model; [`StoreError::Conflict`] if the name is taken.
    pub async fn create_model(&self, input: &ModelInput) -> Result<ModelRecord, StoreError> {
        input.validate()?;
        let row = sqlx::query(concat!(
            "INSERT INTO models (id, name, targets, fallbacks, options, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $6) ",
            "RETURNING id, name, targets, fallbacks, options, created_at, updated_at"
        ))
        .bind(new_id())
        .bind(&input.name)
        .bind(json_text(&input.targets)?)
        .bind(json_text(&input.fallbacks)?)
        .bind(json_text(&input.options)?)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("model {} already exists", input.name))
            }
            other => other,
        })?;
        from_row(&row)
    }

    /// Creates or replaces the model named `input.name`, keeping its id and creation time. One
    /// statement, so no transaction is needed.
    pub async fn upsert_model(&self, input: &ModelInput) -> Result<ModelRecord, StoreError> {
        input.validate()?;
        let row = sqlx::query(concat!(
            "INSERT INTO models (id, name, targets, fallbacks, options, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $6) ",
            "ON CONFLICT (name) DO UPDATE SET targets = excluded.targets, ",
            "fallbacks = excluded.fallbacks, options = excluded.options, ",
            "updated_at = excluded.updated_at ",
            "RETURNING id, name, targets, fallbacks, options, created_at, updated_at"
        ))
        .bind(new_id())
        .bind(&input.name)
        .bind(json_text(&input.targets)?)
        .bind(json_text(&input.fallbacks)?)
        .bind(json_text(&input.options)?)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        from_row(&row)
    }

    pub async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError> {
        let row = sqlx::query(select_models!("WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every model, by name.
    pub async fn list_models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let rows = sqlx::query(select_models!("ORDER BY name ASC"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes a model; `false` if there was none by that name.
    pub async fn delete_model(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM models WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn from_row(row: &AnyRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        targets: json_column(row, "targets")?,
        fallbacks: json_column(row, "fallbacks")?,
        options: json_column(row, "options")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
