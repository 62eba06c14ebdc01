-- Workers as an operator sees and steers them: listing with what each runs, pausing.

-- name: admin_list_workers
-- The tenant's workers (or the one named by worker_id), each with the runs it holds now
-- (its task_runtime rows), how long ago it was heard from, and whether it is paused.
-- statuses and worker_id are optional (NULL = any).
SELECT w.external_id, w.name, w.status, w.slots, w.durable_slots, w.task_names, w.labels,
       w.last_heartbeat_at,
       extract(epoch FROM now() - w.last_heartbeat_at)::float8 AS heartbeat_age_s,
       w.connected_at, w.paused_at,
       coalesce(r.runs, '{}'::uuid[]) AS current_runs
FROM worker w
LEFT JOIN LATERAL (
    SELECT array_agg(t.external_id ORDER BY tr.task_id) AS runs
    FROM task_runtime tr
    JOIN task t ON t.id = tr.task_id
    WHERE tr.worker_id = w.id
) r ON true
WHERE w.tenant_id = %(tenant_id)s
  AND (%(statuses)s::text[] IS NULL OR w.status = ANY(%(statuses)s::text[]))
  AND (%(worker_id)s::uuid IS NULL OR w.external_id = %(worker_id)s::uuid)
ORDER BY w.status, w.connected_at DESC, w.id DESC;

-- name: set_worker_paused
-- Pauses (keeping the first pause's time) or resumes one of the tenant's workers; a resume
-- also takes back a drain the worker has not heard of yet.
UPDATE worker
SET paused_at = CASE WHEN %(paused)s THEN coalesce(paused_at, now()) END,
    drain_requested_at = CASE WHEN %(paused)s THEN drain_requested_at END
WHERE tenant_id = %(tenant_id)s AND external_id = %(worker_id)s
RETURNING id, external_id, paused_at;

-- name: set_worker_drain
-- Drains one of the tenant's live workers: paused (assigned nothing new) and asked, in its
-- next heartbeat's answer, to stop once what it runs has finished.
UPDATE worker
SET paused_at = coalesce(paused_at, now()),
    drain_requested_at = coalesce(drain_requested_at, now())
WHERE tenant_id = %(tenant_id)s AND external_id = %(worker_id)s AND status = 'ACTIVE'
RETURNING id, external_id, paused_at;
