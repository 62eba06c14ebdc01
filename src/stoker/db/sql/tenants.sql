-- Tenants and API tokens.

-- name: create_tenant
-- Creates a tenant, or returns the existing one of that name.
INSERT INTO tenant (name) VALUES (%(name)s)
ON CONFLICT (name) DO UPDATE SET name = excluded.name
RETURNING id, external_id, name;

-- name: create_api_token
INSERT INTO api_token (tenant_id, name, token_hash, role, expires_at)
VALUES (%(tenant_id)s, %(name)s, %(token_hash)s, %(role)s, %(expires_at)s)
RETURNING id, external_id;

-- name: find_api_token
-- The token's tenant, role and state; revoked and expired tokens are returned too, so the
-- engine can say which of the two a refused token is. expires_in_s: seconds left (NULL:
-- no expiry), measured on the database's clock like expires_at itself.
SELECT k.id AS token_id, t.id AS tenant_id, t.name AS tenant_name, k.role,
       k.revoked_at IS NOT NULL AS revoked, k.expires_at,
       extract(epoch FROM k.expires_at - now())::float8 AS expires_in_s
FROM api_token k JOIN tenant t ON t.id = k.tenant_id
WHERE k.token_hash = %(token_hash)s;

-- name: list_api_tokens
-- Tokens of one tenant (every tenant when tenant_id is NULL), oldest first.
SELECT k.external_id, k.name, k.role, t.name AS tenant_name, k.created_at, k.expires_at,
       k.revoked_at, k.last_used_at
FROM api_token k JOIN tenant t ON t.id = k.tenant_id
WHERE (%(tenant_id)s::bigint IS NULL OR k.tenant_id = %(tenant_id)s)
  AND (%(include_revoked)s OR k.revoked_at IS NULL)
ORDER BY t.name, k.created_at, k.id;

-- name: get_api_token
SELECT k.external_id, k.name, k.role, t.name AS tenant_name, k.created_at, k.expires_at,
       k.revoked_at, k.last_used_at
FROM api_token k JOIN tenant t ON t.id = k.tenant_id
WHERE k.external_id = %(external_id)s
  AND (%(tenant_id)s::bigint IS NULL OR k.tenant_id = %(tenant_id)s);

-- name: revoke_api_token
-- Revokes a token (of tenant_id, unless NULL) and tells every engine replica at once
-- (stoker_token, body = the token's id), in the same transaction: the replicas drop it from
-- their caches when the revocation commits. Returns nothing when there was no such
-- unrevoked token.
WITH revoked AS (
    UPDATE api_token SET revoked_at = now()
    WHERE external_id = %(external_id)s AND revoked_at IS NULL
      AND (%(tenant_id)s::bigint IS NULL OR tenant_id = %(tenant_id)s)
    RETURNING id
)
SELECT id, pg_notify('stoker_token', id::text || ':' || %(sender)s) FROM revoked;

-- name: touch_api_tokens
-- Records when tokens were last accepted (batched by each replica, about once a minute).
UPDATE api_token k SET last_used_at = u.used_at
FROM unnest(%(ids)s::bigint[], %(used_at)s::timestamptz[]) AS u(id, used_at)
WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.used_at);
