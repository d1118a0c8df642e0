-- Events and their webhook deliveries: an outbox written in the transaction of the
-- change that caused the event, so that a crash loses none.
CREATE TABLE events (
    seq          {{serial}},
    id           TEXT NOT NULL UNIQUE,        -- evt_...
    org_id       TEXT NOT NULL,
    environment  TEXT NOT NULL,
    type         TEXT NOT NULL,
    data         TEXT NOT NULL,               -- JSON object
    at           DOUBLE PRECISION NOT NULL,
    once         TEXT UNIQUE                  -- an event that happens once per this key
);
CREATE INDEX events_org ON events(org_id, environment, at);

CREATE TABLE subscriptions (
    id               TEXT PRIMARY KEY,        -- sub_...
    org_id           TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    environment      TEXT NOT NULL,
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,           -- space-separated event types
    description      TEXT NOT NULL,
    secret           TEXT NOT NULL,           -- whsec_...: signing needs it, not a digest
    previous_secret  TEXT,                    -- still signs until previous_until
    previous_until   DOUBLE PRECISION,
    created_at       DOUBLE PRECISION NOT NULL,
    failing_since    DOUBLE PRECISION,        -- the first failure since the last success
    disabled_at      DOUBLE PRECISION         -- set after 5 days of nothing but failures
);
CREATE INDEX subscriptions_org ON subscriptions(org_id, environment);

-- One row per attempt to deliver an event to a subscription ("callbacks").
CREATE TABLE callbacks (
    seq              {{serial}},
    id               TEXT NOT NULL UNIQUE,    -- cb_...
    event_id         TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    org_id           TEXT NOT NULL,
    environment      TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    status           TEXT NOT NULL,           -- pending, succeeded, failed
    due_at           DOUBLE PRECISION NOT NULL,
    attempted_at     DOUBLE PRECISION,
    http_status      INTEGER,
    error            TEXT,
    latency_ms       DOUBLE PRECISION,
    next_retry_at    DOUBLE PRECISION,        -- when a failed attempt is tried again
    claimed_until    DOUBLE PRECISION         -- a node is delivering it until then
);
CREATE INDEX callbacks_due ON callbacks(status, due_at);
CREATE INDEX callbacks_org ON callbacks(org_id, environment, due_at);

-- 401s and 403s per organization and minute, summed over workers and nodes.
CREATE TABLE refusal_counts (
    org_id       TEXT NOT NULL,
    environment  TEXT NOT NULL,
    minute       DOUBLE PRECISION NOT NULL,
    refusals     BIGINT NOT NULL,
    PRIMARY KEY (org_id, environment, minute)
);

ALTER TABLE wallets ADD COLUMN low_balance_threshold BIGINT;
