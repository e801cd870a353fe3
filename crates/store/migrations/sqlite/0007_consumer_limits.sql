-- Requests and tokens per minute for a consumer across all its keys and credentials
-- (NULL: no consumer-wide limit).
ALTER TABLE consumers ADD COLUMN rpm INTEGER;
ALTER TABLE consumers ADD COLUMN tpm INTEGER;
