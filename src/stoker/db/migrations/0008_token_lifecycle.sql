-- API tokens get a role, an optional expiry and a last-used time.
--
-- role: 'admin' tokens may also list, create and revoke the tokens of their tenant over the
-- REST API; 'member' tokens (the default) use the tenant's runs, workers and events only.
-- Tokens that existed before roles keep every right they had: they become admins.
-- expires_at: the engine refuses the token from then on (NULL: it never expires).
-- last_used_at: when the engine last accepted it, written at most about once a minute.
ALTER TABLE api_token
    ADD COLUMN role text NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'member')),
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN last_used_at timestamptz;
ALTER TABLE api_token ALTER COLUMN role SET DEFAULT 'member';
CREATE INDEX api_token_tenant_idx ON api_token (tenant_id, created_at);
