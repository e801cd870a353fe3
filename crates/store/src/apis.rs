//! Gateway APIs: a slug that is the first path segment of the routes it serves (`/<slug>/...`),
//! the auth mode callers must satisfy, and its settings (JWT issuers, IP rules, stage
//! settings…). The settings stay a [`serde_json::Value`]: the caller owns their meaning and
//! validates their inside; the store only checks they are an object.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::columns::{
    bool_column, json_column, json_text, new_id, now_ms, require_name, require_object,
    require_one_of,
};
use crate::{Store, StoreError};

/// The auth modes an API may require.
pub const API_AUTH_MODES: &[&str] = &["public", "keys", "jwt", "keys_or_jwt"];

/// First path segments the gateway itself serves, so no API may take them as its slug.
pub const RESERVED_API_SLUGS: &[&str] = &["v1", "admin", "healthz", "readyz", "metrics"];

const MAX_SLUG_LEN: usize = 64;

/// What the admin writes for a gateway API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiInput {
    /// 1–64 characters of `[a-z0-9-]`, starting with a letter or digit, not reserved.
    pub slug: String,
    /// A display name.
    pub name: Option<String>,
    /// One of [`API_AUTH_MODES`].
    pub auth: String,
    /// A JSON object; the caller validates what is inside.
    pub settings: Value,
    pub enabled: bool,
}

impl ApiInput {
    /// An enabled API with no name, requiring keys, with empty settings.
    pub fn new(slug: impl Into<String>) -> ApiInput {
        ApiInput {
            slug: slug.into(),
            name: None,
            auth: "keys".into(),
            settings: Value::Object(serde_json::Map::new()),
            enabled: true,
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        validate_slug(&self.slug)?;
        if let Some(name) = &self.name {
            require_name(name, "api name")?;
        }
        require_one_of(&self.auth, API_AUTH_MODES, "api auth")?;
        require_object(&self.settings, "api settings")
    }
}

/// Checks a slug's shape and that it is not one of [`RESERVED_API_SLUGS`].
pub fn validate_slug(slug: &str) -> Result<(), StoreError> {
    let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let well_formed = !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && slug.bytes().next().is_some_and(lower_alnum)
        && slug.bytes().all(|b| lower_alnum(b) || b == b'-');
    if !well_formed {
        return Err(StoreError::Invalid(format!(
            "api slug must be 1-{MAX_SLUG_LEN} characters of a-z, 0-9 and '-', starting with a \
             letter or digit"
        )));
    }
    if RESERVED_API_SLUGS.contains(&slug) {
        return Err(StoreError::Invalid(format!(
            "api slug {slug} is reserved by the gateway"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiRecord {
    pub id: String,
    pub slug: String,
    pub name: Option<String>,
    pub auth: String,
    pub settings: Value,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! api_columns {
    () => {
        "id, slug, name, auth, settings, enabled, created_at, updated_at"
    };
}

macro_rules! insert_api {
    ($rest:literal) => {
        concat!(
            "INSERT INTO apis (id, slug, name, auth, settings, enabled, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ",
            $rest,
            " RETURNING ",
            api_columns!()
        )
    };
}

impl Store {
    /// Inserts a new API; [`StoreError::Conflict`] if the slug is taken.
    pub async fn create_api(&self, input: &ApiInput) -> Result<ApiRecord, StoreError> {
        input.validate()?;
        let row = sqlx::query(insert_api!(""))
            .bind(new_id())
            .bind(&input.slug)
            .bind(&input.name)
            .bind(&input.auth)
            .bind(json_text(&input.settings)?)
            .bind(input.enabled)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("api {} already exists", input.slug))
                }
                other => other,
            })?;
        from_row(&row)
    }

    /// Creates or replaces the API with `input.slug`, keeping its id and creation time. One
    /// statement, so concurrent upserts of a new slug make one row.
    pub async fn upsert_api(&self, input: &ApiInput) -> Result<ApiRecord, StoreError> {
        input.validate()?;
        let row = sqlx::query(insert_api!(
            "ON CONFLICT (slug) DO UPDATE SET name = excluded.name, auth = excluded.auth, \
             settings = excluded.settings, enabled = excluded.enabled, \
             updated_at = excluded.updated_at"
        ))
        .bind(new_id())
        .bind(&input.slug)
        .bind(&input.name)
        .bind(&input.auth)
        .bind(json_text(&input.settings)?)
        .bind(input.enabled)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        from_row(&row)
    }

    pub async fn get_api(&self, slug: &str) -> Result<Option<ApiRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            api_columns!(),
            " FROM apis WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every API, by slug.
    pub async fn list_apis(&self) -> Result<Vec<ApiRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            api_columns!(),
            " FROM apis ORDER BY slug ASC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes an API; `false` if there was none with that slug.
    pub async fn delete_api(&self, slug: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM apis WHERE slug = $1")
            .bind(slug)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn from_row(row: &AnyRow) -> Result<ApiRecord, StoreError> {
    Ok(ApiRecord {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        auth: row.try_get("auth")?,
        settings: json_column(row, "settings")?,
        enabled: bool_column(row, "enabled")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
