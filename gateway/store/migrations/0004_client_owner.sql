-- Developer applications belong to the organization that registered them.
ALTER TABLE oauth_clients ADD COLUMN owner_org_id TEXT REFERENCES orgs(id) ON DELETE CASCADE;
UPDATE oauth_clients SET owner_org_id = org_id WHERE org_id IS NOT NULL;
CREATE INDEX oauth_clients_owner ON oauth_clients(owner_org_id);
CREATE INDEX oauth_grants_org ON oauth_grants(org_id);
