-- Idempotency keys are bound to the request they were first used with, and a retry
-- is free only once that first call succeeded.
ALTER TABLE wallet_transactions ADD COLUMN fingerprint TEXT;
ALTER TABLE wallet_transactions ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
