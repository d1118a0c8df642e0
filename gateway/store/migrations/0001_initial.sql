-- Organizations, API keys and the revocation feed that keeps node caches honest.
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    digest        TEXT NOT NULL UNIQUE,   -- hex SHA-256 of the key; the key itself is never stored
    scopes        TEXT NOT NULL,          -- space-separated
    created_at    DOUBLE PRECISION NOT NULL,
    expires_at    DOUBLE PRECISION,
    last_used_at  DOUBLE PRECISION,
    revoked_at    DOUBLE PRECISION
);
CREATE INDEX api_keys_org ON api_keys(org_id);

-- Append-only: every change that must evict a cached credential on every node.
CREATE TABLE credential_events (
    seq            {{serial}},
    credential_id  TEXT NOT NULL,
    at             DOUBLE PRECISION NOT NULL
);
