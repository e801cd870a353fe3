-- Who may call the gateway and how: gateway APIs (a slug as the first path segment and its auth
-- mode), consumers, their gateway keys (only a SHA-256 digest is stored) and admin tokens.
-- Conventions as in 0001: unix-millisecond BIGINT times, uuid v7 text ids, JSON as text checked
-- by a cast to jsonb, BOOLEAN booleans.

CREATE TABLE apis (
    id         TEXT    NOT NULL PRIMARY KEY,
    slug       TEXT    NOT NULL UNIQUE,
    name       TEXT,
    auth       TEXT    NOT NULL CHECK (auth IN ('public', 'keys', 'jwt', 'keys_or_jwt')),
    settings   TEXT    NOT NULL DEFAULT '{}' CHECK (settings::jsonb IS NOT NULL),
    enabled    BOOLEAN NOT NULL DEFAULT TRUE,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- external_id is UNIQUE but nullable: both backends treat NULLs as distinct, so any number of
-- consumers may have none.
CREATE TABLE consumers (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    email       TEXT,
    external_id TEXT    UNIQUE,
    metadata    TEXT    NOT NULL DEFAULT '{}' CHECK (metadata::jsonb IS NOT NULL),
    status      TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- consumer_id deliberately has no foreign key: a key outlives its consumer as history (revoked,
-- still naming whose it was). The store checks the consumer exists when a key is issued and
-- revokes a consumer's keys in the transaction that deletes it.
-- updated_at changes on every change an auth cache must see (revoke, rotate, consumer deleted
-- or suspended) and never on use; instances poll it through gateway_keys_updated_at.
CREATE TABLE gateway_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    consumer_id  TEXT,
    label        TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    hash         TEXT    NOT NULL UNIQUE CHECK (length(hash) = 64),
    scopes       TEXT    NOT NULL DEFAULT '{}' CHECK (scopes::jsonb IS NOT NULL),
    expires_at   BIGINT,
    rpm          BIGINT  CHECK (rpm IS NULL OR rpm > 0),
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE INDEX gateway_keys_updated_at ON gateway_keys (updated_at);
CREATE INDEX gateway_keys_consumer_id ON gateway_keys (consumer_id);

CREATE TABLE admin_tokens (
    id           TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL CHECK (role IN ('admin', 'viewer')),
    prefix       TEXT    NOT NULL,
    hash         TEXT    NOT NULL UNIQUE CHECK (length(hash) = 64),
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
