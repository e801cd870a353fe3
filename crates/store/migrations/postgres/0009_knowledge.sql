-- Knowledge bases: documents, chunks with their vectors, and full-text search over the chunks
-- (a generated tsvector with a GIN index). Conventions as in 0001 (BIGINT times, BYTEA blobs).
-- See the SQLite twin for `version`, `kb_uploads` and claims.

CREATE TABLE knowledge_bases (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    embedding_model TEXT    NOT NULL,
    dim             BIGINT,
    chunk_tokens    BIGINT  NOT NULL CHECK (chunk_tokens BETWEEN 16 AND 8192),
    overlap_tokens  BIGINT  NOT NULL CHECK (overlap_tokens >= 0),
    locked          BOOLEAN NOT NULL DEFAULT FALSE,
    version         BIGINT  NOT NULL DEFAULT 0,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);

CREATE TABLE kb_documents (
    id          TEXT    NOT NULL PRIMARY KEY,
    kb_id       TEXT    NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    bytes       BIGINT  NOT NULL,
    sha256      TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('queued', 'indexing', 'ready', 'error')),
    error       TEXT,
    chunks      BIGINT  NOT NULL DEFAULT 0,
    claimed_at  BIGINT,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    UNIQUE (kb_id, name)
);
CREATE INDEX kb_documents_status ON kb_documents (status, claimed_at);

CREATE TABLE kb_uploads (
    document_id TEXT  NOT NULL PRIMARY KEY REFERENCES kb_documents(id) ON DELETE CASCADE,
    content     BYTEA NOT NULL
);

CREATE TABLE kb_chunks (
    id          BIGSERIAL NOT NULL PRIMARY KEY,
    kb_id       TEXT    NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    document_id TEXT    NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
    ordinal     BIGINT  NOT NULL,
    heading     TEXT,
    text        TEXT    NOT NULL,
    tokens      BIGINT  NOT NULL,
    vector      BYTEA   NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS
                (to_tsvector('english', coalesce(heading, '') || ' ' || text)) STORED
);
CREATE INDEX kb_chunks_kb ON kb_chunks (kb_id, id);
CREATE INDEX kb_chunks_document ON kb_chunks (document_id);
CREATE INDEX kb_chunks_tsv ON kb_chunks USING GIN (tsv);
