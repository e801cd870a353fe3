-- Every request with a wallet writes a hold and two ledger rows; these two indexes were paid
-- for on each of them and used by almost none.
--
-- Live holds are the requests in flight, so the sweeper's scan for stale ones needs no index.
DROP INDEX wallet_reservations_created_at;

-- Only top-ups and refunds carry an idempotency key, yet every reserve and settle row had an
-- entry (a NULL) in its unique index: a partial one indexes only the keys.
ALTER TABLE wallet_ledger DROP CONSTRAINT wallet_ledger_idempotency_key_key;
CREATE UNIQUE INDEX wallet_ledger_idempotency ON wallet_ledger (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
