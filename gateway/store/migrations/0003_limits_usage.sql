-- Per-key limits, key rotation with a grace period, usage counters and recent errors.
ALTER TABLE api_keys ADD COLUMN max_requests BIGINT;
ALTER TABLE api_keys ADD COLUMN rate_limit BIGINT;          -- requests per minute
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT;            -- space-separated CIDRs
ALTER TABLE api_keys ADD COLUMN request_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN previous_digest TEXT;        -- the secret before the last rotation
ALTER TABLE api_keys ADD COLUMN previous_valid_until DOUBLE PRECISION;
CREATE INDEX api_keys_previous ON api_keys(previous_digest);

-- One row per (org, day, credential, route, status, client address): counted in memory,
-- added here in batches.
CREATE TABLE usage_daily (
    org_id         TEXT NOT NULL,
    day            TEXT NOT NULL,              -- YYYY-MM-DD, UTC
    credential_id  TEXT NOT NULL,              -- '' when none
    route          TEXT NOT NULL,
    status         INTEGER NOT NULL,
    client_ip      TEXT NOT NULL,
    requests       BIGINT NOT NULL,
    errors         BIGINT NOT NULL,
    paid_requests  BIGINT NOT NULL,
    PRIMARY KEY (org_id, day, credential_id, route, status, client_ip)
);

CREATE TABLE request_errors (
    seq            {{serial}},
    org_id         TEXT NOT NULL,
    at             DOUBLE PRECISION NOT NULL,
    request_id     TEXT NOT NULL,
    method         TEXT NOT NULL,
    route          TEXT NOT NULL,
    status         INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    credential_id  TEXT,
    client_ip      TEXT
);
CREATE INDEX request_errors_org ON request_errors(org_id, seq);
