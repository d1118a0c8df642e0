-- Each organization has a live wallet and a test wallet (test credits are free).
CREATE TABLE wallets_by_environment (
    org_id       TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    environment  TEXT NOT NULL DEFAULT 'live',
    balance      BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    PRIMARY KEY (org_id, environment)
);
INSERT INTO wallets_by_environment (org_id, environment, balance)
    SELECT org_id, 'live', balance FROM wallets;
DROP TABLE wallets;
ALTER TABLE wallets_by_environment RENAME TO wallets;
ALTER TABLE wallet_transactions ADD COLUMN environment TEXT NOT NULL DEFAULT 'live';
DROP INDEX wallet_transactions_org;
CREATE INDEX wallet_transactions_org ON wallet_transactions(org_id, environment, seq);
