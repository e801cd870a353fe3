-- Functions: operators' HTTP endpoints used as pre-hooks, post-hooks and function backends.
-- The signing secret is sealed like provider keys, bound to the row's name. Conventions as in 0001.

CREATE TABLE functions (
    name         TEXT    NOT NULL PRIMARY KEY,
    url          TEXT    NOT NULL,
    secret       BLOB    NOT NULL,
    deadline_ms  INTEGER NOT NULL CHECK (deadline_ms BETWEEN 1 AND 30000),
    failure_mode TEXT    NOT NULL CHECK (failure_mode IN ('fail_open', 'fail_closed')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
