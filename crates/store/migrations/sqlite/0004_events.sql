-- Outbound billing events: the operator's webhook (its signing secret sealed like provider
-- keys, bound to the row) and an outbox written in the same transaction as the usage it
-- reports, delivered at least once with retries. Conventions as in 0001.

CREATE TABLE billing_webhook (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (id = 'billing'),
    url        TEXT    NOT NULL,
    secret     BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- id is the event's idempotency id (receivers deduplicate on it).
CREATE TABLE billing_events (
    id           TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL CHECK (json_valid(payload)),
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    delivered_at INTEGER,
    failed_at    INTEGER,
    last_error   TEXT
) STRICT;

CREATE INDEX billing_events_due ON billing_events (next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
