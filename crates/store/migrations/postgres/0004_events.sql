-- Outbound billing events: the operator's webhook (its signing secret sealed like provider
-- keys, bound to the row) and an outbox written in the same transaction as the usage it
-- reports, delivered at least once with retries. Conventions as in 0001 (BIGINT times, BYTEA blobs).

CREATE TABLE billing_webhook (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (id = 'billing'),
    url        TEXT    NOT NULL,
    secret     BYTEA   NOT NULL,
    updated_at BIGINT NOT NULL
);

-- id is the event's idempotency id (receivers deduplicate on it).
CREATE TABLE billing_events (
    id           TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL CHECK (payload::jsonb IS NOT NULL),
    created_at   BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT NOT NULL,
    delivered_at BIGINT,
    failed_at    BIGINT,
    last_error   TEXT
);

CREATE INDEX billing_events_due ON billing_events (next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
