-- Configuration written by the admin: providers, model routes, settings, and the audit log.
-- Timestamps are unix milliseconds; ids are uuid v7 text; JSON is stored as text.
-- STRICT tables reject values of the wrong type. Booleans are INTEGER 0/1 (the sqlx Any driver
-- cannot decode a column declared BOOLEAN on SQLite).

CREATE TABLE providers (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL,
    base_url   TEXT,
    api_key    BLOB,
    options    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(options)),
    models     TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(models)),
    priority   INTEGER NOT NULL DEFAULT 0,
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE models (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    targets    TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(targets)),
    fallbacks  TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(fallbacks)),
    options    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(options)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE settings (
    key        TEXT    NOT NULL PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_log (
    id     TEXT    NOT NULL PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT,
    detail TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
) STRICT;

CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
