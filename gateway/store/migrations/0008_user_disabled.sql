-- A user can be disabled: no sign-in, no session, no token acting for them.
ALTER TABLE users ADD COLUMN disabled_at DOUBLE PRECISION;
