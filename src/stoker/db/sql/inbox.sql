-- Transactional enqueue: the inbox that applications write through enqueue_runs(), drained
-- into runs by any engine replica (stoker/engine/inbox); the role-to-tenant map.

-- name: take_inbox
-- Takes the oldest inbox rows no other replica is taking (SKIP LOCKED) and deletes them;
-- the caller writes their runs in the same transaction, so each row becomes a run once.
DELETE FROM run_inbox i
USING (SELECT id FROM run_inbox ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) t
WHERE i.id = t.id
RETURNING i.id, i.tenant_id, i.external_id, i.kind, i.name, i.input::text AS input,
          i.additional_metadata::text AS metadata, i.priority, i.desired_worker_id,
          i.idempotency_key, i.idempotency_ttl_ms, i.definition::text AS definition;

-- name: put_inbox_receipts
-- Records the inbox rows that did not become a run of their id: deduplicated (run_id) or
-- refused (error).
INSERT INTO run_inbox_receipt (tenant_id, external_id, run_id, error)
SELECT %(tenant_id)s, r.external_id, r.run_id, r.error
FROM unnest(%(external_ids)s::uuid[], %(run_ids)s::uuid[], %(errors)s::text[])
    AS r(external_id, run_id, error)
ON CONFLICT (tenant_id, external_id) DO NOTHING;

-- name: inbox_states
-- For ids not found among runs: those still in the inbox (pending) and the receipts of
-- those that were deduplicated or refused.
SELECT external_id, true AS pending, NULL::uuid AS run_id, NULL::text AS error
FROM run_inbox
WHERE tenant_id = %(tenant_id)s AND external_id = ANY(%(external_ids)s::uuid[])
UNION ALL
SELECT external_id, false, run_id, error
FROM run_inbox_receipt
WHERE tenant_id = %(tenant_id)s AND external_id = ANY(%(external_ids)s::uuid[]);

-- name: prune_inbox_receipts
-- Forgets receipts older than the cutoff, a batch at a time.
DELETE FROM run_inbox_receipt
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM run_inbox_receipt WHERE created_at < %(cutoff)s LIMIT %(limit)s));

-- name: grant_enqueue_role
-- Maps a database role to a tenant and grants it what enqueue_runs() needs (schema.sql).
SELECT grant_enqueue_role(%(role_name)s, %(tenant_name)s) AS tenant_id;

-- name: revoke_enqueue_role
SELECT revoke_enqueue_role(%(role_name)s) AS revoked;

-- name: list_enqueue_roles
SELECT r.role_name, t.name AS tenant_name, r.created_at
FROM enqueue_role r JOIN tenant t ON t.id = r.tenant_id
ORDER BY r.role_name;
