-- Knowledge bases: documents an operator uploads, cut into chunks with their vectors, and a
-- full-text index over the chunks (FTS5, BM25). Conventions as in 0001.
--
-- `version` grows with every change to a base's chunks, so each instance's in-process vector
-- index knows when to reload. An upload's bytes stay in `kb_uploads` until it is indexed, so
-- ingestion survives a restart and any instance can pick it up; a claim is a conditional
-- update with a heartbeat (`claimed_at`), and a stale claim is taken over.

CREATE TABLE knowledge_bases (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    embedding_model TEXT    NOT NULL,
    dim             INTEGER,
    chunk_tokens    INTEGER NOT NULL CHECK (chunk_tokens BETWEEN 16 AND 8192),
    overlap_tokens  INTEGER NOT NULL CHECK (overlap_tokens >= 0),
    locked          INTEGER NOT NULL DEFAULT 0,
    version         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE kb_documents (
    id          TEXT    NOT NULL PRIMARY KEY,
    kb_id       TEXT    NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    bytes       INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('queued', 'indexing', 'ready', 'error')),
    error       TEXT,
    chunks      INTEGER NOT NULL DEFAULT 0,
    claimed_at  INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (kb_id, name)
) STRICT;
CREATE INDEX kb_documents_status ON kb_documents (status, claimed_at);

CREATE TABLE kb_uploads (
    document_id TEXT NOT NULL PRIMARY KEY REFERENCES kb_documents(id) ON DELETE CASCADE,
    content     BLOB NOT NULL
) STRICT;

CREATE TABLE kb_chunks (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    kb_id       TEXT    NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    document_id TEXT    NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
    ordinal     INTEGER NOT NULL,
    heading     TEXT,
    text        TEXT    NOT NULL,
    tokens      INTEGER NOT NULL,
    vector      BLOB    NOT NULL
) STRICT;
CREATE INDEX kb_chunks_kb ON kb_chunks (kb_id, id);
CREATE INDEX kb_chunks_document ON kb_chunks (document_id);

-- External-content FTS5 table; kb_id rides along unindexed so a search filters by tenant in
-- the same query.
CREATE VIRTUAL TABLE kb_chunks_fts USING fts5(
    text, heading, kb_id UNINDEXED,
    content = 'kb_chunks', content_rowid = 'id',
    tokenize = 'porter unicode61'
);
CREATE TRIGGER kb_chunks_ai AFTER INSERT ON kb_chunks BEGIN
    INSERT INTO kb_chunks_fts (rowid, text, heading, kb_id) VALUES (new.id, new.text, new.heading, new.kb_id);
END;
CREATE TRIGGER kb_chunks_ad AFTER DELETE ON kb_chunks BEGIN
    INSERT INTO kb_chunks_fts (kb_chunks_fts, rowid, text, heading, kb_id) VALUES ('delete', old.id, old.text, old.heading, old.kb_id);
END;
