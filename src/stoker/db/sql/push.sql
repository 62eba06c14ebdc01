-- HTTP push endpoints (docs/http-workers.md): registered through the Push service, read
-- by the leader's push delivery. Secrets are AES-GCM ciphertext.

-- name: upsert_push_endpoint
-- Creates the endpoint, or updates the one of that name (its external id stays, so the
-- worker it is keeps its id and what it runs).
INSERT INTO push_endpoint (tenant_id, external_id, name, url, slots, task_names, secret)
VALUES (%(tenant_id)s, %(external_id)s, %(name)s, %(url)s, %(slots)s, %(task_names)s,
        %(secret)s)
ON CONFLICT (tenant_id, name) DO UPDATE
SET url = excluded.url, slots = excluded.slots, task_names = excluded.task_names,
    secret = excluded.secret, updated_at = now()
RETURNING external_id, name, url, slots, task_names, updated_at;

-- name: push_endpoint_id
-- The external id of a tenant's endpoint (its secret is sealed for that id).
SELECT external_id FROM push_endpoint WHERE tenant_id = %(tenant_id)s AND name = %(name)s;

-- name: list_push_endpoints
SELECT external_id, name, url, slots, task_names, updated_at
FROM push_endpoint WHERE tenant_id = %(tenant_id)s ORDER BY name;

-- name: all_push_endpoints
-- Every tenant's endpoints with their secrets, as the push delivery attaches them.
SELECT tenant_id, external_id, name, url, slots, task_names, secret, updated_at
FROM push_endpoint ORDER BY id;

-- name: delete_push_endpoint
DELETE FROM push_endpoint WHERE tenant_id = %(tenant_id)s AND name = %(name)s
RETURNING external_id;

-- name: set_push_endpoint_secret
-- Re-encrypted under the current key (the row's other fields, and updated_at, stay).
UPDATE push_endpoint SET secret = %(secret)s WHERE external_id = %(external_id)s;
