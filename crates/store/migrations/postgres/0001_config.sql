-- Configuration written by the admin: providers, model routes, settings, and the audit log.
-- Timestamps are unix milliseconds (BIGINT); ids are uuid v7 text; JSON is stored as text
-- (the sqlx Any driver has no JSONB type), checked by a cast to jsonb.

CREATE TABLE providers (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL,
    base_url   TEXT,
    api_key    BYTEA,
    options    TEXT    NOT NULL DEFAULT '{}' CHECK (options::jsonb IS NOT NULL),
    models     TEXT    NOT NULL DEFAULT '[]' CHECK (models::jsonb IS NOT NULL),
    priority   BIGINT  NOT NULL DEFAULT 0,
    enabled    BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE models (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    targets    TEXT    NOT NULL DEFAULT '[]' CHECK (targets::jsonb IS NOT NULL),
    fallbacks  TEXT    NOT NULL DEFAULT '{}' CHECK (fallbacks::jsonb IS NOT NULL),
    options    TEXT    NOT NULL DEFAULT '{}' CHECK (options::jsonb IS NOT NULL),
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE settings (
    key        TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE audit_log (
    id     TEXT    NOT NULL PRIMARY KEY,
    at     BIGINT  NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT,
    detail TEXT    NOT NULL DEFAULT '{}' CHECK (detail::jsonb IS NOT NULL)
);

CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
