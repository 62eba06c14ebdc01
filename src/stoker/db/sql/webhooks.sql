-- Incoming webhooks (README "Webhooks"): the tenant's webhooks, managed through the API,
-- and the lookup of each POST to /webhooks/<tenant>/<name>. Secrets are AES-GCM ciphertext;
-- no statement here ever sees them in clear.

-- name: insert_webhook
-- Stores a new webhook; no row when the tenant has one of that name already.
INSERT INTO webhook (tenant_id, external_id, name, auth_kind, auth_options, secret,
                     event_key_expression, scope_expression, dedup_expression)
VALUES (%(tenant_id)s, %(external_id)s, %(name)s, %(auth_kind)s, %(auth_options)s::jsonb,
        %(secret)s, %(event_key_expression)s, %(scope_expression)s, %(dedup_expression)s)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING external_id, name, auth_kind, auth_options, event_key_expression, scope_expression,
          dedup_expression,
          (SELECT t.external_id FROM tenant t WHERE t.id = %(tenant_id)s) AS tenant_external_id,
          created_at, updated_at;

-- name: list_webhooks
SELECT w.external_id, w.name, w.auth_kind, w.auth_options, w.event_key_expression,
       w.scope_expression, w.dedup_expression, t.external_id AS tenant_external_id, w.created_at, w.updated_at
FROM webhook w JOIN tenant t ON t.id = w.tenant_id
WHERE w.tenant_id = %(tenant_id)s
ORDER BY w.name;

-- name: get_webhook
-- One webhook of the tenant, with its encrypted secret (for an update that keeps it).
SELECT w.external_id, w.name, w.auth_kind, w.auth_options, w.event_key_expression,
       w.scope_expression, w.dedup_expression, t.external_id AS tenant_external_id, w.created_at, w.updated_at,
       w.secret
FROM webhook w JOIN tenant t ON t.id = w.tenant_id
WHERE w.tenant_id = %(tenant_id)s AND w.name = %(name)s;

-- name: update_webhook
-- Replaces a webhook's authentication and expressions (the caller passes the unchanged
-- ones as they were).
UPDATE webhook w
SET auth_kind = %(auth_kind)s, auth_options = %(auth_options)s::jsonb, secret = %(secret)s,
    event_key_expression = %(event_key_expression)s, scope_expression = %(scope_expression)s,
    dedup_expression = %(dedup_expression)s, updated_at = now()
FROM tenant t
WHERE t.id = w.tenant_id AND w.tenant_id = %(tenant_id)s AND w.name = %(name)s
RETURNING w.external_id, w.name, w.auth_kind, w.auth_options, w.event_key_expression,
          w.scope_expression, w.dedup_expression, t.external_id AS tenant_external_id, w.created_at, w.updated_at;

-- name: delete_webhook
DELETE FROM webhook WHERE tenant_id = %(tenant_id)s AND name = %(name)s;

-- name: find_webhook
-- The webhook a POST names, by the tenant's external id and the webhook's name.
SELECT w.id, w.tenant_id, w.external_id, w.name, w.auth_kind, w.auth_options, w.secret,
       w.event_key_expression, w.scope_expression, w.dedup_expression
FROM webhook w JOIN tenant t ON t.id = w.tenant_id
WHERE t.external_id = %(tenant_external_id)s AND w.name = %(name)s;

-- name: webhook_secrets
-- Every webhook's encrypted secret, for re-encryption under a new key.
SELECT id, external_id, secret FROM webhook ORDER BY id;

-- name: set_webhook_secret
UPDATE webhook SET secret = %(secret)s WHERE id = %(id)s;
