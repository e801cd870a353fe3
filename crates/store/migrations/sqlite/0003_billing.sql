-- Money: price overrides, plans and subscriptions, prepaid wallets with an append-only ledger,
-- and one usage record per logical request. Amounts are integers: µUSD for money, whole tokens
-- for token wallets, pico-dollars for provider cost. Conventions as in 0001.

CREATE TABLE price_overrides (
    model        TEXT    NOT NULL PRIMARY KEY,
    input        INTEGER NOT NULL CHECK (input BETWEEN 0 AND 1000000000),
    output       INTEGER NOT NULL CHECK (output BETWEEN 0 AND 1000000000),
    cached_input INTEGER CHECK (cached_input IS NULL OR cached_input BETWEEN 0 AND 1000000000),
    updated_at   INTEGER NOT NULL
) STRICT;

-- A plan belongs to one gateway API (by slug, like the URL).
CREATE TABLE plans (
    id         TEXT    NOT NULL PRIMARY KEY,
    api        TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    spec       TEXT    NOT NULL CHECK (json_valid(spec)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (api, name)
) STRICT;

-- One subscription per consumer and API. anchor_at starts the 30-day billing periods;
-- plan_changed_at marks when the current plan took over (pro-rating).
CREATE TABLE subscriptions (
    id              TEXT    NOT NULL PRIMARY KEY,
    consumer_id     TEXT    NOT NULL,
    api             TEXT    NOT NULL,
    plan_id         TEXT    NOT NULL REFERENCES plans (id),
    status          TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'canceled')),
    anchor_at       INTEGER NOT NULL,
    plan_changed_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (consumer_id, api)
) STRICT;

-- balance counts everything not yet spent, reservations included; reserved is the part held
-- by requests in flight. Both checks make an overspend impossible, not merely unlikely.
CREATE TABLE wallets (
    consumer_id TEXT    NOT NULL,
    unit        TEXT    NOT NULL CHECK (unit IN ('usd', 'tokens')),
    balance     INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    reserved    INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= balance),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer_id, unit)
) STRICT;

-- Live holds; a request's row is deleted by the one settle or release that ends it.
CREATE TABLE wallet_reservations (
    request_id  TEXT    NOT NULL PRIMARY KEY,
    consumer_id TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX wallet_reservations_created_at ON wallet_reservations (created_at);

-- Append-only. balance = Σ top_up + Σ refund − Σ settle; reserved = Σ live reservations.
CREATE TABLE wallet_ledger (
    id              TEXT    NOT NULL PRIMARY KEY,
    consumer_id     TEXT    NOT NULL,
    unit            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('top_up', 'reserve', 'settle', 'release', 'refund')),
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    request_id      TEXT,
    idempotency_key TEXT    UNIQUE,
    note            TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (request_id, kind)
) STRICT;

CREATE INDEX wallet_ledger_consumer ON wallet_ledger (consumer_id, created_at);

-- Tokens and charges per subscription period, maintained as requests settle (plan caps and
-- invoices read it instead of summing usage rows).
CREATE TABLE period_usage (
    subscription_id TEXT    NOT NULL,
    period_start    INTEGER NOT NULL,
    tokens          INTEGER NOT NULL DEFAULT 0,
    charge          INTEGER NOT NULL DEFAULT 0,
    requests        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subscription_id, period_start)
) STRICT;

-- One row per logical request; attempts (JSON) lists every upstream try.
CREATE TABLE usage_records (
    request_id        TEXT    NOT NULL PRIMARY KEY,
    created_at        INTEGER NOT NULL,
    consumer_id       TEXT,
    key_id            TEXT,
    api               TEXT    NOT NULL,
    subscription_id   TEXT,
    model_requested   TEXT    NOT NULL,
    model             TEXT,
    provider          TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    estimated         INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1)),
    cost_picos        INTEGER NOT NULL DEFAULT 0,
    charge_micros     INTEGER NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    attempts          TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(attempts))
) STRICT;

CREATE INDEX usage_records_consumer ON usage_records (consumer_id, created_at);
CREATE INDEX usage_records_created_at ON usage_records (created_at);

-- The plan history of a subscription: plan_id is in force from `at` (pro-rating on invoices).
CREATE TABLE subscription_changes (
    id              TEXT    NOT NULL PRIMARY KEY,
    subscription_id TEXT    NOT NULL,
    plan_id         TEXT    NOT NULL,
    at              INTEGER NOT NULL
) STRICT;

CREATE INDEX subscription_changes_sub ON subscription_changes (subscription_id, at);
