-- Login sessions the server can end (logout), and consent requests answered once.
CREATE TABLE login_sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION
);
CREATE INDEX login_sessions_user ON login_sessions (user_id);
CREATE TABLE consent_answers (
    request_id TEXT PRIMARY KEY,
    answered_at DOUBLE PRECISION NOT NULL
);
