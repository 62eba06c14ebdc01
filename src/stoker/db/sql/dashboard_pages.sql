-- The dashboard's Workers, Tasks and workflows, Queues and Rate limits pages. Every
-- statement is scoped to one tenant and returns external ids only. Statements that show
-- ages return the database's now() as db_now, so an age never mixes two clocks.

-- name: dash_workers
-- The tenant's workers with the slots each pool holds: an attempt holds its task's
-- slot_cost slots of the durable pool when its task is durable, else of the plain pool
-- (as the dispatcher counts them). statuses is optional (NULL = every status).
SELECT w.external_id, w.name, w.status, w.slots, w.durable_slots, w.task_names, w.labels,
       w.last_heartbeat_at, w.connected_at, w.paused_at, w.drain_requested_at,
       now() AS db_now,
       coalesce(u.running, 0) AS running,
       coalesce(u.used_slots, 0) AS used_slots,
       coalesce(u.used_durable_slots, 0) AS used_durable_slots
FROM worker w
LEFT JOIN LATERAL (
    SELECT count(*) AS running,
           coalesce(sum(coalesce((d.config ->> 'slot_cost')::int, 1))
                    FILTER (WHERE NOT coalesce((d.config ->> 'durable')::boolean, false)), 0)
               AS used_slots,
           coalesce(sum(coalesce((d.config ->> 'slot_cost')::int, 1))
                    FILTER (WHERE coalesce((d.config ->> 'durable')::boolean, false)), 0)
               AS used_durable_slots
    FROM task_runtime tr
    JOIN task t ON t.id = tr.task_id
    LEFT JOIN task_def d ON d.tenant_id = t.tenant_id AND d.name = t.task_name
    WHERE tr.worker_id = w.id
) u ON true
WHERE w.tenant_id = %(tenant_id)s
  AND (%(statuses)s::text[] IS NULL OR w.status = ANY(%(statuses)s::text[]))
  AND (%(worker_id)s::uuid IS NULL OR w.external_id = %(worker_id)s::uuid)
ORDER BY w.status, w.connected_at DESC, w.id DESC
LIMIT %(limit)s;

-- name: dash_worker_runs
-- The attempts a worker holds now, oldest assignment first.
SELECT t.external_id, t.task_name, t.status, tr.attempt, tr.assigned_at, tr.timeout_at,
       t.started_at, d.external_id AS workflow_run_id, t.step
FROM worker w
JOIN task_runtime tr ON tr.worker_id = w.id
JOIN task t ON t.id = tr.task_id
LEFT JOIN dag d ON d.id = t.dag_id
WHERE w.tenant_id = %(tenant_id)s AND w.external_id = %(worker_id)s
ORDER BY tr.assigned_at, t.id
LIMIT %(limit)s;

-- name: dash_task_defs
-- The tenant's task definitions with whether each is paused.
SELECT d.name, d.config, d.updated_at, p.paused_at, coalesce(p.drop_runs, false) AS drop_runs
FROM task_def d
LEFT JOIN paused p ON p.tenant_id = d.tenant_id AND p.kind = 'task' AND p.name = d.name
WHERE d.tenant_id = %(tenant_id)s
  AND (%(name)s::text IS NULL OR d.name = %(name)s::text)
ORDER BY d.name;

-- name: dash_workflow_defs
-- The tenant's workflows, the config of the version new runs use, and their pause.
SELECT f.name, v.config, f.updated_at, p.paused_at, coalesce(p.drop_runs, false) AS drop_runs
FROM workflow_def f
JOIN workflow_version v ON v.id = f.version_id
LEFT JOIN paused p ON p.tenant_id = f.tenant_id AND p.kind = 'workflow' AND p.name = f.name
WHERE f.tenant_id = %(tenant_id)s
  AND (%(name)s::text IS NULL OR f.name = %(name)s::text)
ORDER BY f.name;

-- name: dash_task_run_counts
-- How many runs of each task were created since `since`, by status (the
-- (tenant_id, created_at DESC, id DESC) index bounds the scan to the window).
SELECT t.task_name AS name, t.status, count(*) AS runs
FROM all_tasks t
WHERE t.tenant_id = %(tenant_id)s AND t.created_at >= %(since)s
  AND (%(name)s::text IS NULL OR t.task_name = %(name)s::text)
GROUP BY t.task_name, t.status;

-- name: dash_workflow_run_counts
-- As dash_task_run_counts, for workflow runs.
SELECT d.workflow_name AS name, d.status, count(*) AS runs
FROM all_dags d
WHERE d.tenant_id = %(tenant_id)s AND d.created_at >= %(since)s
  AND (%(name)s::text IS NULL OR d.workflow_name = %(name)s::text)
GROUP BY d.workflow_name, d.status;

-- name: dash_queue_depths
-- Attempts waiting for a worker, per queue (task name) and priority: how many, how many
-- are deferred to later (`available_at` ahead: over a rate limit they name, or placed
-- later for another reason such as a retry's backoff), the age of the oldest waiting run
-- (its task's created_at, read for the group's first item only), whether a live worker
-- serves the task and whether it is paused (itself, or a workflow it is a step of: the
-- scheduler's paused queues, Definitions.paused_queues).
WITH q AS (
    SELECT queue, priority, count(*) AS depth, min(id) AS first_item,
           count(*) FILTER (WHERE available_at > now() AND rate_limits IS NOT NULL)
               AS rate_limited,
           count(*) FILTER (WHERE available_at > now() AND rate_limits IS NULL) AS deferred
    FROM queue_item
    WHERE tenant_id = %(tenant_id)s
    GROUP BY queue, priority
)
SELECT q.queue, q.priority, q.depth, q.rate_limited, q.deferred,
       (SELECT t.created_at FROM queue_item qi JOIN task t ON t.id = qi.task_id
        WHERE qi.id = q.first_item) AS oldest_created_at,
       EXISTS (SELECT 1 FROM worker w
               WHERE w.tenant_id = %(tenant_id)s AND w.status = 'ACTIVE'
                 AND q.queue = ANY(w.task_names)) AS served,
       EXISTS (SELECT 1 FROM paused p
               WHERE p.tenant_id = %(tenant_id)s AND p.kind = 'task' AND p.name = q.queue)
       OR EXISTS (SELECT 1 FROM paused p
                  JOIN workflow_def f ON f.tenant_id = p.tenant_id AND f.name = p.name
                  JOIN workflow_version v ON v.id = f.version_id
                  WHERE p.tenant_id = %(tenant_id)s AND p.kind = 'workflow'
                    AND v.config -> 'steps'
                        @> jsonb_build_array(jsonb_build_object('task_name', q.queue)))
           AS paused,
       now() AS db_now
FROM q
ORDER BY q.queue, q.priority DESC;

-- name: dash_concurrency_waiting
-- Runs waiting for a concurrency slot (not yet queued for a worker), per task, strategy
-- and key, with how many runs of that key hold a slot now; the keys with most waiting
-- first.
SELECT t.task_name, s.expression, s.max_runs, s.limit_strategy, c.key,
       count(*) AS waiting,
       (SELECT count(*) FROM concurrency_slot h
        WHERE h.strategy_id = c.strategy_id AND h.key = c.key AND h.admitted) AS holding,
       min(c.created_at) AS oldest_at, now() AS db_now
FROM concurrency_slot c
JOIN concurrency_strategy s ON s.id = c.strategy_id
JOIN task t ON t.id = c.task_id
WHERE c.tenant_id = %(tenant_id)s AND NOT c.admitted
GROUP BY t.task_name, s.expression, s.max_runs, s.limit_strategy, c.strategy_id, c.key
ORDER BY count(*) DESC, t.task_name, c.key
LIMIT %(limit)s;

-- name: dash_rate_limits
-- The tenant's rate limits: the units their window holds now (the recent starts not yet
-- older than the window, `recent` being [[at_us, units], ...]) and how many queued
-- attempts wait on each (deferred by it).
SELECT r.key, r.limit_value, r.window_ms, r.dynamic, r.updated_at, now() AS db_now,
       coalesce((SELECT sum((e ->> 1)::bigint)
                 FROM jsonb_array_elements(r.recent) e
                 WHERE (e ->> 0)::bigint
                       > (extract(epoch FROM now()) * 1000000)::bigint - r.window_ms * 1000),
                0) AS used,
       (SELECT min((e ->> 0)::bigint)
        FROM jsonb_array_elements(r.recent) e
        WHERE (e ->> 0)::bigint
              > (extract(epoch FROM now()) * 1000000)::bigint - r.window_ms * 1000)
           AS oldest_start_us,
       (SELECT count(*) FROM queue_item qi
        WHERE qi.tenant_id = r.tenant_id AND qi.available_at > now()
          AND qi.rate_limits @> jsonb_build_array(jsonb_build_object('key', r.key)))
           AS waiting
FROM rate_limit r
WHERE r.tenant_id = %(tenant_id)s
ORDER BY r.key
LIMIT %(limit)s;
