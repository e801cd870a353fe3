-- The request log: one row per request the data plane answered (including refusals at the
-- edge), written in batches by the pipeline's log writer and pruned by retention. Bodies are
-- opt-in per API and capped before they get here.
CREATE TABLE request_log (
    request_id        TEXT    NOT NULL PRIMARY KEY,
    created_at        INTEGER NOT NULL,
    api               TEXT    NOT NULL,
    endpoint          TEXT    NOT NULL,
    consumer_id       TEXT,
    key_id            TEXT,
    model_requested   TEXT,
    model             TEXT,
    provider          TEXT,
    attempts          TEXT    NOT NULL DEFAULT '[]',
    stream            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    estimated         INTEGER NOT NULL DEFAULT 0,
    cost_picos        INTEGER NOT NULL DEFAULT 0,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    status            INTEGER NOT NULL,
    error             TEXT,
    moderation        TEXT,
    rag_sources       TEXT,
    hooks             TEXT,
    cache_hit         INTEGER NOT NULL DEFAULT 0,
    request_body      TEXT,
    response_body     TEXT
) STRICT;

CREATE INDEX request_log_created_at ON request_log (created_at);
CREATE INDEX request_log_consumer ON request_log (consumer_id, created_at);
CREATE INDEX request_log_model ON request_log (model, created_at);

-- Hourly rollups, maintained in the same transaction as the rows they count. Latency is kept
-- as a fixed histogram, b0..b11 (upper bounds in `store::request_log::BUCKETS_MS`), so p95 is read
-- without raw rows and concurrent instances add to it in one upsert.
CREATE TABLE request_rollup (
    hour              INTEGER NOT NULL,
    api               TEXT    NOT NULL,
    consumer_id       TEXT    NOT NULL,
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
    PRIMARY KEY (hour, api, consumer_id, model, provider)
) STRICT;

CREATE INDEX request_rollup_hour ON request_rollup (hour);
