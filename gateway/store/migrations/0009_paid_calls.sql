-- A paid call made with an Idempotency-Key keeps its answer, so that a retry is
-- answered from here instead of reaching the upstream again.
CREATE TABLE kept_answers (
    debit_seq    BIGINT PRIMARY KEY,
    body_digest  TEXT,                        -- SHA-256 of the request body
    status       INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    headers      TEXT NOT NULL,               -- JSON list of [name, value]
    body         TEXT,                        -- base64; NULL when too large to keep
    at           DOUBLE PRECISION NOT NULL
);
CREATE INDEX kept_answers_at ON kept_answers(at);
-- The worker process that took a debit: if it dies before the call is settled, the
-- debit is refunded (the client never had a successful answer).
ALTER TABLE wallet_transactions ADD COLUMN holder TEXT;
CREATE INDEX wallet_transactions_pending ON wallet_transactions(holder, settled);
