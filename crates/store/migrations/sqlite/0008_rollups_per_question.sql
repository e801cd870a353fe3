-- One rollup per question analytics asks (usage by consumer, usage by model and provider), each
-- by hour ('h') and by day ('d'): the one table keyed by every dimension at once had about as
-- many rows as the log it summarised. Latency histogram b0..b11 as before.
DROP TABLE request_rollup;

CREATE TABLE rollup_consumer (
    span              TEXT    NOT NULL CHECK (span IN ('h', 'd')),
    at                INTEGER NOT NULL,
    consumer_id       TEXT    NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_picos        INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum    INTEGER NOT NULL DEFAULT 0,
    b0                INTEGER NOT NULL DEFAULT 0,
    b1                INTEGER NOT NULL DEFAULT 0,
    b2                INTEGER NOT NULL DEFAULT 0,
    b3                INTEGER NOT NULL DEFAULT 0,
    b4                INTEGER NOT NULL DEFAULT 0,
    b5                INTEGER NOT NULL DEFAULT 0,
    b6                INTEGER NOT NULL DEFAULT 0,
    b7                INTEGER NOT NULL DEFAULT 0,
    b8                INTEGER NOT NULL DEFAULT 0,
    b9                INTEGER NOT NULL DEFAULT 0,
    b10               INTEGER NOT NULL DEFAULT 0,
    b11               INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (span, at, consumer_id)
) STRICT;

CREATE TABLE rollup_model (
    span              TEXT    NOT NULL CHECK (span IN ('h', 'd')),
    at                INTEGER NOT NULL,
    model             TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_picos        INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum    INTEGER NOT NULL DEFAULT 0,
    b0                INTEGER NOT NULL DEFAULT 0,
    b1                INTEGER NOT NULL DEFAULT 0,
    b2                INTEGER NOT NULL DEFAULT 0,
    b3                INTEGER NOT NULL DEFAULT 0,
    b4                INTEGER NOT NULL DEFAULT 0,
    b5                INTEGER NOT NULL DEFAULT 0,
    b6                INTEGER NOT NULL DEFAULT 0,
    b7                INTEGER NOT NULL DEFAULT 0,
    b8                INTEGER NOT NULL DEFAULT 0,
    b9                INTEGER NOT NULL DEFAULT 0,
    b10               INTEGER NOT NULL DEFAULT 0,
    b11               INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (span, at, model, provider)
) STRICT;
