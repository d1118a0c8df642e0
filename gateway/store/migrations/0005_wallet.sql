-- Wallets for metered routes, per-key spending caps.
CREATE TABLE wallets (
    org_id   TEXT PRIMARY KEY REFERENCES orgs(id) ON DELETE CASCADE,
    balance  BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0)
);

CREATE TABLE wallet_transactions (
    seq              {{serial}},
    org_id           TEXT NOT NULL,
    amount           BIGINT NOT NULL,          -- credits added (+) or spent (-)
    balance_after    BIGINT NOT NULL,
    kind             TEXT NOT NULL,             -- 'credit', 'debit', 'refund'
    request_id       TEXT,
    credential_id    TEXT,
    route            TEXT,
    idempotency_key  TEXT,
    note             TEXT,
    at               DOUBLE PRECISION NOT NULL
);
CREATE INDEX wallet_transactions_org ON wallet_transactions(org_id, seq);
CREATE UNIQUE INDEX wallet_transactions_idem
    ON wallet_transactions(org_id, credential_id, idempotency_key);

ALTER TABLE api_keys ADD COLUMN max_paid_requests BIGINT;
ALTER TABLE api_keys ADD COLUMN max_spend BIGINT;
ALTER TABLE api_keys ADD COLUMN paid_requests BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN spent BIGINT NOT NULL DEFAULT 0;
