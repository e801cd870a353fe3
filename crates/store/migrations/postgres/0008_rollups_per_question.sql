-- One rollup per question analytics asks (usage by consumer, usage by model and provider), each
-- by hour ('h') and by day ('d'): the one table keyed by every dimension at once had about as
-- many rows as the log it summarised. Latency histogram b0..b11 as before.
DROP TABLE request_rollup;

CREATE TABLE rollup_consumer (
    span              TEXT    NOT NULL CHECK (span IN ('h', 'd')),
    at                BIGINT NOT NULL,
    consumer_id       TEXT    NOT NULL,
    requests          BIGINT NOT NULL DEFAULT 0,
    errors            BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_picos        BIGINT NOT NULL DEFAULT 0,
    latency_ms_sum    BIGINT NOT NULL DEFAULT 0,
    b0                BIGINT NOT NULL DEFAULT 0,
    b1                BIGINT NOT NULL DEFAULT 0,
    b2                BIGINT NOT NULL DEFAULT 0,
    b3                BIGINT NOT NULL DEFAULT 0,
    b4                BIGINT NOT NULL DEFAULT 0,
    b5                BIGINT NOT NULL DEFAULT 0,
    b6                BIGINT NOT NULL DEFAULT 0,
    b7                BIGINT NOT NULL DEFAULT 0,
    b8                BIGINT NOT NULL DEFAULT 0,
    b9                BIGINT NOT NULL DEFAULT 0,
    b10               BIGINT NOT NULL DEFAULT 0,
    b11               BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (span, at, consumer_id)
);

CREATE TABLE rollup_model (
    span              TEXT    NOT NULL CHECK (span IN ('h', 'd')),
    at                BIGINT NOT NULL,
    model             TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    requests          BIGINT NOT NULL DEFAULT 0,
    errors            BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_picos        BIGINT NOT NULL DEFAULT 0,
    latency_ms_sum    BIGINT NOT NULL DEFAULT 0,
    b0                BIGINT NOT NULL DEFAULT 0,
    b1                BIGINT NOT NULL DEFAULT 0,
    b2                BIGINT NOT NULL DEFAULT 0,
    b3                BIGINT NOT NULL DEFAULT 0,
    b4                BIGINT NOT NULL DEFAULT 0,
    b5                BIGINT NOT NULL DEFAULT 0,
    b6                BIGINT NOT NULL DEFAULT 0,
    b7                BIGINT NOT NULL DEFAULT 0,
    b8                BIGINT NOT NULL DEFAULT 0,
    b9                BIGINT NOT NULL DEFAULT 0,
    b10               BIGINT NOT NULL DEFAULT 0,
    b11               BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (span, at, model, provider)
);
