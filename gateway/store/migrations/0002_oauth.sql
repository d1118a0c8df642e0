-- People, OAuth clients, consents, authorization codes and tokens.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,        -- stored lower-cased
    password_hash  TEXT NOT NULL,               -- Argon2id
    created_at     DOUBLE PRECISION NOT NULL
);

CREATE TABLE memberships (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, org_id)
);

CREATE TABLE oauth_clients (
    id               TEXT PRIMARY KEY,          -- the client_id
    name             TEXT NOT NULL,
    secret_digest    TEXT,                      -- NULL for public clients
    redirect_uris    TEXT NOT NULL,             -- newline-separated
    allowed_scopes   TEXT NOT NULL,             -- space-separated
    grant_types      TEXT NOT NULL,             -- space-separated
    org_id           TEXT REFERENCES orgs(id) ON DELETE CASCADE,
    allow_user_auth  INTEGER NOT NULL DEFAULT 0,
    created_at       DOUBLE PRECISION NOT NULL,
    disabled_at      DOUBLE PRECISION
);

-- What a user approved for a client in one organization ("connected apps").
CREATE TABLE oauth_grants (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL REFERENCES oauth_clients(id) ON DELETE CASCADE,
    scopes      TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION,
    UNIQUE (user_id, org_id, client_id)
);

CREATE TABLE oauth_codes (
    id              TEXT PRIMARY KEY,           -- also the family id of the tokens it yields
    digest          TEXT NOT NULL UNIQUE,
    client_id       TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    org_id          TEXT NOT NULL,
    grant_id        TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    code_challenge  TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    expires_at      DOUBLE PRECISION NOT NULL,
    used_at         DOUBLE PRECISION
);

CREATE TABLE oauth_tokens (
    id          TEXT PRIMARY KEY,
    digest      TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,                  -- 'access' or 'refresh'
    family_id   TEXT NOT NULL,                  -- every token descended from one code or issuance
    client_id   TEXT NOT NULL,
    user_id     TEXT,
    org_id      TEXT NOT NULL,
    grant_id    TEXT,
    scopes      TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    used_at     DOUBLE PRECISION,               -- a refresh token that was rotated
    revoked_at  DOUBLE PRECISION
);
CREATE INDEX oauth_tokens_family ON oauth_tokens(family_id);
CREATE INDEX oauth_tokens_client ON oauth_tokens(client_id);
CREATE INDEX oauth_tokens_grant ON oauth_tokens(grant_id);
