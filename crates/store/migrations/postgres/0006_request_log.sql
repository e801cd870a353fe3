-- The request log: one row per request the data plane answered (including refusals at the
-- edge), written in batches by the pipeline's log writer and pruned by retention. Bodies are
-- opt-in per API and capped before they get here.
CREATE TABLE request_log (
    request_id        TEXT    NOT NULL PRIMARY KEY,
    created_at        BIGINT NOT NULL,
    api               TEXT    NOT NULL,
    endpoint          TEXT    NOT NULL,
    consumer_id       TEXT,
    key_id            TEXT,
    model_requested   TEXT,
    model             TEXT,
    provider          TEXT,
    attempts          TEXT    NOT NULL DEFAULT '[]',
    stream            BOOLEAN NOT NULL DEFAULT FALSE,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    estimated         BOOLEAN NOT NULL DEFAULT FALSE,
    cost_picos        BIGINT NOT NULL DEFAULT 0,
    latency_ms        BIGINT NOT NULL,
    ttft_ms           BIGINT,
    status            BIGINT NOT NULL,
    error             TEXT,
    moderation        TEXT,
    rag_sources       TEXT,
    hooks             TEXT,
    cache_hit         BOOLEAN NOT NULL DEFAULT FALSE,
    request_body      TEXT,
    response_body     TEXT
);

CREATE INDEX request_log_created_at ON request_log (created_at);
CREATE INDEX request_log_consumer ON request_log (consumer_id, created_at);
CREATE INDEX request_log_model ON request_log (model, created_at);

-- Hourly rollups, maintained in the same transaction as the rows they count. Latency is kept
-- as a fixed histogram, b0..b11 (upper bounds in `store::request_log::BUCKETS_MS`), so p95 is read
-- without raw rows and concurrent instances add to it in one upsert.
CREATE TABLE request_rollup (
    hour              BIGINT NOT NULL,
    api               TEXT    NOT NULL,
    consumer_id       TEXT    NOT NULL,
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
    PRIMARY KEY (hour, api, consumer_id, model, provider)
);

CREATE INDEX request_rollup_hour ON request_rollup (hour);
