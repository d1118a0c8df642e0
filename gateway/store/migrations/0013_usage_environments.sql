-- Usage and latest errors are kept per environment (live, test).
CREATE TABLE usage_daily_by_environment (
    org_id         TEXT NOT NULL,
    environment    TEXT NOT NULL DEFAULT 'live',
    day            TEXT NOT NULL,              -- YYYY-MM-DD, UTC
    credential_id  TEXT NOT NULL,              -- '' when none
    route          TEXT NOT NULL,
    status         INTEGER NOT NULL,
    client_ip      TEXT NOT NULL,
    requests       BIGINT NOT NULL,
    errors         BIGINT NOT NULL,
    paid_requests  BIGINT NOT NULL,
    PRIMARY KEY (org_id, environment, day, credential_id, route, status, client_ip)
);
INSERT INTO usage_daily_by_environment (org_id, environment, day, credential_id, route,
        status, client_ip, requests, errors, paid_requests)
    SELECT org_id, 'live', day, credential_id, route, status, client_ip, requests, errors,
        paid_requests FROM usage_daily;
DROP TABLE usage_daily;
ALTER TABLE usage_daily_by_environment RENAME TO usage_daily;
ALTER TABLE request_errors ADD COLUMN environment TEXT NOT NULL DEFAULT 'live';
DROP INDEX request_errors_org;
CREATE INDEX request_errors_org ON request_errors(org_id, environment, seq);
