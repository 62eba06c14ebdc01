-- name: create_tenant
-- Creates a tenant, or returns the existing one of that name.
INSERT INTO tenant (name) VALUES (%(name)s)
ON CONFLICT (name) DO UPDATE SET name = excluded.name
RETURNING id, external_id, name;

-- name: create_api_token
INSERT INTO api_token (tenant_id, name, token_hash)
VALUES (%(tenant_id)s, %(name)s, %(token_hash)s)
RETURNING id, external_id;

-- name: find_api_token
-- The tenant an unrevoked token belongs to.
SELECT t.id AS tenant_id, t.name AS tenant_name
FROM api_token k JOIN tenant t ON t.id = k.tenant_id
WHERE k.token_hash = %(token_hash)s AND k.revoked_at IS NULL;

-- name: revoke_api_token
UPDATE api_token SET revoked_at = now()
WHERE external_id = %(external_id)s AND revoked_at IS NULL;
