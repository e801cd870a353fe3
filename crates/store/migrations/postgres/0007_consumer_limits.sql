-- Requests and tokens per minute for a consumer across all its keys and credentials
-- (NULL: no consumer-wide limit).
ALTER TABLE consumers ADD COLUMN rpm BIGINT;
ALTER TABLE consumers ADD COLUMN tpm BIGINT;
