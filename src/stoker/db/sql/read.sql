-- The REST API's reads. Every statement is scoped to one tenant, and only external ids
-- (UUIDs) leave these queries; bigint ids stay inside the engine.

-- name: api_ping
SELECT 1 AS ok;

-- name: api_get_run
-- One run with its current worker.
SELECT t.id, t.external_id, t.task_name, t.status, t.input, t.output, t.error,
       t.additional_metadata, t.priority, t.attempt, t.retry_count, t.max_retries,
       t.created_at, t.started_at, t.finished_at, w.external_id AS worker_external_id,
       t.assigned_at, t.rate_limits, dw.external_id AS desired_worker_external_id,
       d.config AS task_config
FROM all_tasks t
LEFT JOIN worker w ON w.id = t.worker_id
LEFT JOIN worker dw ON dw.id = t.desired_worker_id
LEFT JOIN task_def d ON d.tenant_id = t.tenant_id AND d.name = t.task_name
WHERE t.tenant_id = %(tenant_id)s AND t.external_id = %(run_id)s;

-- name: api_run_concurrency
-- The concurrency slots an active run holds or waits for (released when it finishes).
SELECT s.expression, s.max_runs, s.limit_strategy, c.key, c.admitted
FROM concurrency_slot c
JOIN concurrency_strategy s ON s.id = c.strategy_id
WHERE c.task_id = %(task_id)s AND c.tenant_id = %(tenant_id)s
ORDER BY c.idx;

-- name: api_run_events
-- The attempts of a run that ended other than by success, oldest first.
SELECT e.attempt, e.kind, e.data, e.created_at, w.external_id AS worker_external_id
FROM task_event e
LEFT JOIN worker w ON w.id = e.worker_id
WHERE e.task_id = %(task_id)s AND e.tenant_id = %(tenant_id)s
ORDER BY e.attempt, e.id;

-- name: api_list_runs
-- A page of runs, newest first, keyset-paginated on (created_at, id) with the
-- (tenant_id, created_at DESC, id DESC) index. The cursor names the last run of the previous
-- page by its created_at and external id (resolved here to its bigint id, which never leaves
-- the engine); the row comparison is an index qual. since and until may be NULL. Listed
-- errors leave out their tracebacks, which only the single-run read returns.
SELECT t.id, t.external_id, t.task_name, t.status, t.error - 'traceback' AS error,
       t.additional_metadata, t.priority, t.attempt, t.retry_count, t.max_retries,
       t.created_at, t.started_at, t.finished_at, w.external_id AS worker_external_id
FROM all_tasks t
LEFT JOIN worker w ON w.id = t.worker_id
WHERE t.tenant_id = %(tenant_id)s
  AND t.created_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND t.created_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (t.created_at, t.id) < (coalesce(%(cursor_created_at)s::timestamptz, 'infinity'),
                              coalesce((SELECT id FROM all_tasks
                                        WHERE tenant_id = %(tenant_id)s
                                          AND external_id = %(cursor_run_id)s::uuid),
                                       9223372036854775807))
ORDER BY t.created_at DESC, t.id DESC
LIMIT %(limit)s;

-- name: api_list_runs_by_status
-- Like api_list_runs for the given statuses. Each status is read on its own through the
-- (tenant_id, status, created_at DESC) index with the page limit, and the small per-status
-- pages are merged, so a filter on several statuses never sorts a whole status.
SELECT p.*, w.external_id AS worker_external_id
FROM unnest(%(statuses)s::text[]) AS s(status),
     LATERAL (
         SELECT t.id, t.external_id, t.task_name, t.status,
                t.error - 'traceback' AS error, t.additional_metadata, t.priority,
                t.attempt, t.retry_count, t.max_retries, t.created_at, t.started_at,
                t.finished_at, t.worker_id
         FROM all_tasks t
         WHERE t.tenant_id = %(tenant_id)s AND t.status = s.status
           AND t.created_at >= coalesce(%(since)s::timestamptz, '-infinity')
           AND t.created_at < coalesce(%(until)s::timestamptz, 'infinity')
           AND t.created_at <= coalesce(%(cursor_created_at)s::timestamptz, 'infinity')
           AND (t.created_at, t.id)
               < (coalesce(%(cursor_created_at)s::timestamptz, 'infinity'),
                  coalesce((SELECT id FROM all_tasks
                            WHERE tenant_id = %(tenant_id)s
                              AND external_id = %(cursor_run_id)s::uuid),
                           9223372036854775807))
         ORDER BY t.created_at DESC, t.id DESC
         LIMIT %(limit)s
     ) AS p
LEFT JOIN worker w ON w.id = p.worker_id
ORDER BY p.created_at DESC, p.id DESC
LIMIT %(limit)s;

-- name: api_list_runs_of_task
-- Like api_list_runs_by_status for one task name, through the
-- (tenant_id, task_name, status, created_at DESC, id DESC) index of migration 0002. Without a
-- status filter the caller passes every status, so "failed runs of X" and "all runs of X"
-- are both a few short range scans.
SELECT p.*, w.external_id AS worker_external_id
FROM unnest(%(statuses)s::text[]) AS s(status),
     LATERAL (
         SELECT t.id, t.external_id, t.task_name, t.status,
                t.error - 'traceback' AS error, t.additional_metadata, t.priority,
                t.attempt, t.retry_count, t.max_retries, t.created_at, t.started_at,
                t.finished_at, t.worker_id
         FROM all_tasks t
         WHERE t.tenant_id = %(tenant_id)s AND t.task_name = %(task_name)s
           AND t.status = s.status
           AND t.created_at >= coalesce(%(since)s::timestamptz, '-infinity')
           AND t.created_at < coalesce(%(until)s::timestamptz, 'infinity')
           AND (t.created_at, t.id)
               < (coalesce(%(cursor_created_at)s::timestamptz, 'infinity'),
                  coalesce((SELECT id FROM all_tasks
                            WHERE tenant_id = %(tenant_id)s
                              AND external_id = %(cursor_run_id)s::uuid),
                           9223372036854775807))
         ORDER BY t.created_at DESC, t.id DESC
         LIMIT %(limit)s
     ) AS p
LEFT JOIN worker w ON w.id = p.worker_id
ORDER BY p.created_at DESC, p.id DESC
LIMIT %(limit)s;

-- name: api_list_workers
-- The tenant's workers with how many attempts each holds (its task_runtime rows).
-- statuses is optional (NULL = every status).
SELECT w.external_id, w.name, w.status, w.slots, w.task_names, w.last_heartbeat_at,
       w.connected_at, coalesce(r.running, 0) AS running, w.labels, w.durable_slots
FROM worker w
LEFT JOIN LATERAL (
    SELECT count(*) AS running FROM task_runtime tr WHERE tr.worker_id = w.id
) r ON true
WHERE w.tenant_id = %(tenant_id)s
  AND (%(statuses)s::text[] IS NULL OR w.status = ANY(%(statuses)s::text[]))
ORDER BY w.status, w.connected_at DESC, w.id DESC;

-- name: api_list_task_defs
SELECT name, config, updated_at
FROM task_def
WHERE tenant_id = %(tenant_id)s
ORDER BY name;

-- name: api_get_workflow_run
SELECT d.id, d.external_id, d.workflow_name, d.status, d.input, d.additional_metadata,
       d.error, d.created_at, d.finished_at, v.config
FROM all_dags d
JOIN workflow_version v ON v.id = d.version_id
WHERE d.tenant_id = %(tenant_id)s AND d.external_id = %(run_id)s;

-- name: api_workflow_steps
-- The steps of one workflow run with their worker, waits and children.
SELECT t.id, t.external_id, t.task_name, t.step, t.status, t.skipped, t.output, t.error,
       t.attempt, t.retry_count, t.max_retries, t.created_at, t.started_at, t.finished_at,
       t.assigned_at, w.external_id AS worker_external_id,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'cond', tw.cond, 'kind', tw.kind, 'fire_at', tw.fire_at,
                    'event_key', tw.event_key, 'expression', tw.expression,
                    'satisfied_at', tw.satisfied_at, 'error', tw.error) ORDER BY tw.cond), '[]')
        FROM task_wait tw WHERE tw.task_id = t.id) AS waits,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'run_id', c.external_id, 'child_index', c.child_index,
                    'child_key', c.child_key, 'is_workflow', c.is_workflow)
                    ORDER BY c.child_index), '[]')
        FROM child_run c WHERE c.parent_task_id = t.id) AS children
FROM all_tasks t
LEFT JOIN worker w ON w.id = t.worker_id
WHERE t.dag_id = %(dag_id)s AND t.tenant_id = %(tenant_id)s
ORDER BY t.id;

-- name: api_workflow_step_events
SELECT e.task_id, e.attempt, e.kind, e.data, e.created_at, w.external_id AS worker_external_id
FROM task_event e
JOIN all_tasks t ON t.id = e.task_id
LEFT JOIN worker w ON w.id = e.worker_id
WHERE t.dag_id = %(dag_id)s AND e.tenant_id = %(tenant_id)s
ORDER BY e.task_id, e.attempt, e.id;

-- name: api_list_workflow_runs
-- A page of workflow runs, newest first, filtered by name, statuses and additional
-- metadata (the runs' metadata must contain the given object; GIN index).
SELECT d.external_id, d.workflow_name, d.status, d.additional_metadata, d.error,
       d.created_at, d.finished_at
FROM all_dags d
WHERE d.tenant_id = %(tenant_id)s
  AND (%(names)s::text[] IS NULL OR d.workflow_name = ANY(%(names)s::text[]))
  AND (%(statuses)s::text[] IS NULL OR d.status = ANY(%(statuses)s::text[]))
  AND (%(metadata)s::jsonb IS NULL OR d.additional_metadata @> %(metadata)s::jsonb)
  AND (d.created_at, d.id) < (coalesce(%(cursor_created_at)s::timestamptz, 'infinity'),
                              coalesce((SELECT id FROM all_dags
                                        WHERE tenant_id = %(tenant_id)s
                                          AND external_id = %(cursor_run_id)s::uuid),
                                       9223372036854775807))
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s;
