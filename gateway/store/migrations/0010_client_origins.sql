-- Origins a single-page app calls the token and revocation endpoints from, besides
-- those of its redirect URIs (CORS).
ALTER TABLE oauth_clients ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '';
