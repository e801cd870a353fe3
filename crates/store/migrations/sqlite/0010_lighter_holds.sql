-- Every request with a wallet writes a hold and two ledger rows; these two indexes were paid
-- for on each of them and used by almost none.
--
-- Live holds are the requests in flight, so the sweeper's scan for stale ones needs no index.
DROP INDEX wallet_reservations_created_at;

-- Only top-ups and refunds carry an idempotency key, yet every reserve and settle row had an
-- entry (a NULL) in its unique index. SQLite cannot drop a column's UNIQUE, so the table is
-- rebuilt with a partial unique index instead; its rows are copied unchanged.
CREATE TABLE wallet_ledger_next (
    id              TEXT    NOT NULL PRIMARY KEY,
    consumer_id     TEXT    NOT NULL,
    unit            TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('top_up', 'reserve', 'settle', 'release', 'refund')),
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    request_id      TEXT,
    idempotency_key TEXT,
    note            TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (request_id, kind)
) STRICT;

INSERT INTO wallet_ledger_next
    (id, consumer_id, unit, kind, amount, request_id, idempotency_key, note, created_at)
SELECT id, consumer_id, unit, kind, amount, request_id, idempotency_key, note, created_at
FROM wallet_ledger;

DROP TABLE wallet_ledger;
ALTER TABLE wallet_ledger_next RENAME TO wallet_ledger;

CREATE INDEX wallet_ledger_consumer ON wallet_ledger (consumer_id, created_at);
CREATE UNIQUE INDEX wallet_ledger_idempotency ON wallet_ledger (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
