-- Test mode: every key, client and token belongs to one environment, live or test.
-- What existed before is live.
ALTER TABLE api_keys ADD COLUMN environment TEXT NOT NULL DEFAULT 'live';
ALTER TABLE oauth_clients ADD COLUMN environment TEXT NOT NULL DEFAULT 'live';
ALTER TABLE oauth_tokens ADD COLUMN environment TEXT NOT NULL DEFAULT 'live';
