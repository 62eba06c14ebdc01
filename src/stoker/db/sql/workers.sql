-- Workers: registration, heartbeats, liveness.

-- name: register_worker
-- Creates the worker, or revives it when a known worker reconnects.
INSERT INTO worker (tenant_id, external_id, name, slots, task_names, status, connected_at,
                    last_heartbeat_at, labels, durable_slots)
VALUES (%(tenant_id)s, %(external_id)s, %(name)s, %(slots)s, %(task_names)s, 'ACTIVE', now(),
        now(), %(labels)s::jsonb, %(durable_slots)s)
ON CONFLICT (external_id) DO UPDATE
SET name = excluded.name, slots = excluded.slots, task_names = excluded.task_names,
    status = 'ACTIVE', connected_at = now(), last_heartbeat_at = now(),
    labels = excluded.labels, durable_slots = excluded.durable_slots
WHERE worker.tenant_id = excluded.tenant_id
RETURNING id, connected_at, paused_at IS NOT NULL AS paused;

-- name: heartbeat_workers
-- Records heartbeats of a tenant's workers; returns those still considered alive, and
-- whether each is paused (how a pause reaches the replica holding the worker's stream)
-- and whether it was asked to drain (the heartbeat's answer tells the worker).
UPDATE worker SET last_heartbeat_at = now()
WHERE external_id = ANY(%(external_ids)s::uuid[]) AND tenant_id = %(tenant_id)s
  AND status = 'ACTIVE'
RETURNING external_id, paused_at IS NOT NULL AS paused,
          drain_requested_at IS NOT NULL AS drain;

-- name: worker_tenant
-- The tenant a worker id belongs to (to tell a foreign worker id from a dead one).
SELECT tenant_id FROM worker WHERE external_id = %(external_id)s;

-- name: mark_dead_workers
-- Declares dead the workers whose last heartbeat is older than the limit.
UPDATE worker SET status = 'DEAD'
WHERE status = 'ACTIVE' AND last_heartbeat_at < now() - %(dead_after_ms)s * interval '1 millisecond'
RETURNING id, external_id, tenant_id;

-- name: forgive_missed_heartbeats
-- After the leader's upkeep could not reach the database (an outage, a restart), heartbeats
-- sent meanwhile could not be recorded: count every live worker as heard from now, so
-- only a worker that stays silent for a whole dead-worker timeout after that is declared dead.
UPDATE worker SET last_heartbeat_at = now()
WHERE status = 'ACTIVE' AND last_heartbeat_at < now();

-- name: stop_worker
UPDATE worker SET status = 'STOPPED' WHERE id = %(worker_id)s AND status = 'ACTIVE';

-- name: worker_ids_by_external
SELECT id, external_id FROM worker
WHERE tenant_id = %(tenant_id)s AND external_id = ANY(%(external_ids)s::uuid[]);

-- name: update_worker_labels
UPDATE worker SET labels = %(labels)s::jsonb WHERE id = %(worker_id)s;

-- name: served_task_names
-- The task names that the tenant's live workers serve, whichever replica they are on.
SELECT DISTINCT unnest(task_names) AS task_name FROM worker
WHERE tenant_id = %(tenant_id)s AND status = 'ACTIVE';
