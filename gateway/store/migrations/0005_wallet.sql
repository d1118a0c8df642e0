-- Wallets for metered routes, per-key spending caps.
CREATE TABLE wallets (
    org_id   TEXT PRIMARY KEY REFERENCES orgs(id) ON DELETE CASCADE,
    balance  INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0)
);

CREATE TABLE wallet_transactions (
    seq              INTEGER PRIMARY KEY,
    org_id           TEXT NOT NULL,
    amount           INTEGER NOT NULL,          -- credits added (+) or spent (-)
    balance_after    INTEGER NOT NULL,
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

ALTER TABLE api_keys ADD COLUMN max_paid_requests INTEGER;
ALTER TABLE api_keys ADD COLUMN max_spend INTEGER;
ALTER TABLE api_keys ADD COLUMN paid_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;
