-- The dashboard's reads of runs: the overview, the runs list, its counts and histogram.
-- Every statement is scoped to one tenant and reads through the tenant-leading indexes.

-- name: dash_overview_series
-- The overview's charts over one window cut into buckets (bucket i starts at since + i*step):
-- runs finished (completed, failed) per bucket, p50/p95 queue wait of attempts started in
-- the bucket and p50/p95 duration of runs finished in it, and at each bucket's end how many
-- runs were queued and how many running (slot use). Reads the runs created in the window
-- (at most 200,000, the newest) through (tenant_id, created_at DESC, id DESC).
WITH w AS (
    SELECT t.status, t.created_at, t.started_at, t.finished_at
    FROM all_tasks t
    WHERE t.tenant_id = %(tenant_id)s AND t.created_at >= %(since)s AND t.created_at < %(until)s
    ORDER BY t.created_at DESC, t.id DESC
    LIMIT 200000
),
b AS (
    SELECT i, %(since)s::timestamptz + i * %(step)s::interval AS lo,
           %(since)s::timestamptz + (i + 1) * %(step)s::interval AS hi
    FROM generate_series(0, %(buckets)s - 1) AS i
)
SELECT b.i, b.lo,
       count(w.*) FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi
                            AND w.status = 'COMPLETED') AS completed,
       count(w.*) FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi
                            AND w.status = 'FAILED') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM w.started_at - w.created_at))
           FILTER (WHERE w.started_at >= b.lo AND w.started_at < b.hi) AS wait_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM w.started_at - w.created_at))
           FILTER (WHERE w.started_at >= b.lo AND w.started_at < b.hi) AS wait_p95,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM w.finished_at - w.started_at))
           FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi) AS duration_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM w.finished_at - w.started_at))
           FILTER (WHERE w.finished_at >= b.lo AND w.finished_at < b.hi) AS duration_p95,
       count(w.*) FILTER (WHERE w.created_at < b.hi
                            AND (w.started_at IS NULL OR w.started_at >= b.hi)
                            AND (w.finished_at IS NULL OR w.finished_at >= b.hi)) AS queued,
       count(w.*) FILTER (WHERE w.started_at < b.hi
                            AND (w.finished_at IS NULL OR w.finished_at >= b.hi)) AS running
FROM b LEFT JOIN w ON w.created_at < b.hi
GROUP BY b.i, b.lo
ORDER BY b.i;

-- name: dash_top_failing
-- The tasks with the most failed runs created in the window, with their totals.
SELECT t.task_name, count(*) FILTER (WHERE t.status = 'FAILED') AS failed, count(*) AS total
FROM all_tasks t
WHERE t.tenant_id = %(tenant_id)s AND t.created_at >= %(since)s AND t.created_at < %(until)s
GROUP BY t.task_name
HAVING count(*) FILTER (WHERE t.status = 'FAILED') > 0
ORDER BY failed DESC, t.task_name
LIMIT 5;

-- name: dash_slot_capacity
-- Slots of the tenant's live workers (what the running series is measured against).
SELECT coalesce(sum(w.slots), 0)::bigint AS slots, count(*) AS workers
FROM worker w
WHERE w.tenant_id = %(tenant_id)s AND w.status = 'ACTIVE';

-- name: dash_stuck_on_workers
-- Runs holding a worker that is no longer live (its heartbeats stopped), until the
-- engine's liveness check requeues them.
SELECT t.external_id, t.task_name, t.status, t.created_at, t.started_at,
       w.name AS worker_name, w.status AS worker_status, w.last_heartbeat_at
FROM task t
JOIN worker w ON w.id = t.worker_id
WHERE t.tenant_id = %(tenant_id)s AND t.status IN ('ASSIGNED', 'RUNNING')
  AND w.status <> 'ACTIVE'
ORDER BY t.created_at
LIMIT 20;

-- name: dash_queued_by_task
-- Queued runs per task: how many, and since when the oldest waits.
SELECT t.task_name, count(*) AS queued, min(t.created_at) AS oldest
FROM task t
WHERE t.tenant_id = %(tenant_id)s AND t.status = 'QUEUED'
GROUP BY t.task_name
ORDER BY oldest
LIMIT 200;

-- The runs list. A "run" is a single-task run (a task row without a workflow) or a workflow
-- run (a dag row); workflow steps show on their run's page. Each statement below applies
-- the same filter to both kinds:
--   statuses: NULL or a list; name: the task or workflow name, or NULL; kinds: 'task',
--   'workflow' or both; [since, until): created_at; metadata: NULL, or a JSON array of
--   groups, each an array of objects: a run matches when, for every group, its
--   additional_metadata contains one of the group's objects (keys ANDed, values ORed).
-- Lists are keyset-paginated on (created_at, kind, id) through the
-- (tenant_id, created_at DESC, id DESC) indexes of task, dag and their history tables; the
-- cursor names the last run shown by created_at, kind and external id.

-- name: dash_list_runs
WITH c AS (
    SELECT CASE %(cursor_kind)s::text
               WHEN 'task' THEN (SELECT id FROM all_tasks WHERE tenant_id = %(tenant_id)s
                                   AND external_id = %(cursor_run_id)s::uuid)
               WHEN 'workflow' THEN (SELECT id FROM all_dags WHERE tenant_id = %(tenant_id)s
                                       AND external_id = %(cursor_run_id)s::uuid)
           END AS id
)
SELECT * FROM (
    (SELECT 'task'::text AS kind, t.id, t.external_id, t.task_name AS name, t.status,
            t.additional_metadata, t.attempt, t.created_at, t.started_at, t.finished_at,
            t.error ->> 'message' AS error_message, w.name AS worker_name
     FROM all_tasks t
     LEFT JOIN worker w ON w.id = t.worker_id
     WHERE t.tenant_id = %(tenant_id)s AND t.dag_id IS NULL
       AND 'task' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR t.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR t.task_name = %(name)s)
       AND t.created_at >= %(since)s AND t.created_at < %(until)s
       AND t.created_at <= coalesce(%(cursor_created_at)s::timestamptz, 'infinity')
       AND (t.created_at, 'task'::text, t.id)
           < (coalesce(%(cursor_created_at)s::timestamptz, 'infinity'),
              coalesce(%(cursor_kind)s::text, '~'),
              coalesce((SELECT id FROM c), 9223372036854775807))
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE t.additional_metadata @> o.value)))
     ORDER BY t.created_at DESC, t.id DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT 'workflow'::text, d.id, d.external_id, d.workflow_name, d.status,
            d.additional_metadata, NULL::integer, d.created_at, NULL::timestamptz,
            d.finished_at, d.error ->> 'message', NULL::text
     FROM all_dags d
     WHERE d.tenant_id = %(tenant_id)s
       AND 'workflow' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR d.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR d.workflow_name = %(name)s)
       AND d.created_at >= %(since)s AND d.created_at < %(until)s
       AND d.created_at <= coalesce(%(cursor_created_at)s::timestamptz, 'infinity')
       AND (d.created_at, 'workflow'::text, d.id)
           < (coalesce(%(cursor_created_at)s::timestamptz, 'infinity'),
              coalesce(%(cursor_kind)s::text, '~'),
              coalesce((SELECT id FROM c), 9223372036854775807))
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE d.additional_metadata @> o.value)))
     ORDER BY d.created_at DESC, d.id DESC
     LIMIT %(limit)s)
) AS r
ORDER BY r.created_at DESC, r.kind DESC, r.id DESC
LIMIT %(limit)s;

-- name: dash_match_runs
-- The external ids of the runs the filter matches (at most max_runs + 1, to tell "more"),
-- created at or before until: what a bulk action over "all matching" applies to, and its
-- count. Without an ORDER BY: any max_runs + 1 rows tell that there are more.
SELECT r.external_id FROM (
    (SELECT t.external_id
     FROM all_tasks t
     WHERE t.tenant_id = %(tenant_id)s AND t.dag_id IS NULL
       AND 'task' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR t.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR t.task_name = %(name)s)
       AND t.created_at >= %(since)s AND t.created_at < %(until)s
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE t.additional_metadata @> o.value)))
     LIMIT %(max_runs)s + 1)
    UNION ALL
    (SELECT d.external_id
     FROM all_dags d
     WHERE d.tenant_id = %(tenant_id)s
       AND 'workflow' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR d.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR d.workflow_name = %(name)s)
       AND d.created_at >= %(since)s AND d.created_at < %(until)s
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE d.additional_metadata @> o.value)))
     LIMIT %(max_runs)s + 1)
) AS r
LIMIT %(max_runs)s + 1;

-- name: dash_match_runs_meta
-- dash_match_runs for a metadata filter that requires one object (a key with one value,
-- ANDed): that containment, never NULL here, lets the plan start from the GIN index on
-- additional_metadata instead of walking the tenant's runs by time until enough match.
SELECT r.external_id FROM (
    (SELECT t.external_id
     FROM all_tasks t
     WHERE t.tenant_id = %(tenant_id)s AND t.dag_id IS NULL
       AND 'task' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR t.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR t.task_name = %(name)s)
       AND t.created_at >= %(since)s AND t.created_at < %(until)s
       AND t.additional_metadata @> %(required)s::jsonb
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE t.additional_metadata @> o.value)))
     LIMIT %(max_runs)s + 1)
    UNION ALL
    (SELECT d.external_id
     FROM all_dags d
     WHERE d.tenant_id = %(tenant_id)s
       AND 'workflow' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR d.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR d.workflow_name = %(name)s)
       AND d.created_at >= %(since)s AND d.created_at < %(until)s
       AND d.additional_metadata @> %(required)s::jsonb
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE d.additional_metadata @> o.value)))
     LIMIT %(max_runs)s + 1)
) AS r
LIMIT %(max_runs)s + 1;

-- name: dash_runs_histogram
-- Runs the filter matches per bucket of created_at and status (bucket i starts at
-- since + i * step), over at most the newest 200,000 matching runs of each kind; capped
-- tells whether that limit was reached.
WITH m AS (
    (SELECT t.created_at, t.status
     FROM all_tasks t
     WHERE t.tenant_id = %(tenant_id)s AND t.dag_id IS NULL
       AND 'task' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR t.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR t.task_name = %(name)s)
       AND t.created_at >= %(since)s AND t.created_at < %(until)s
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE t.additional_metadata @> o.value)))
     ORDER BY t.created_at DESC
     LIMIT 200000)
    UNION ALL
    (SELECT d.created_at, d.status
     FROM all_dags d
     WHERE d.tenant_id = %(tenant_id)s
       AND 'workflow' = ANY(%(kinds)s::text[])
       AND (%(statuses)s::text[] IS NULL OR d.status = ANY(%(statuses)s::text[]))
       AND (%(name)s::text IS NULL OR d.workflow_name = %(name)s)
       AND d.created_at >= %(since)s AND d.created_at < %(until)s
       AND (%(metadata)s::jsonb IS NULL OR NOT EXISTS (
              SELECT FROM jsonb_array_elements(%(metadata)s::jsonb) g
              WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(g.value) o
                                WHERE d.additional_metadata @> o.value)))
     ORDER BY d.created_at DESC
     LIMIT 200000)
)
SELECT least(floor(extract(epoch FROM m.created_at - %(since)s::timestamptz)
                   / extract(epoch FROM %(step)s::interval))::integer,
             %(buckets)s - 1) AS i,
       m.status, count(*) AS n, (SELECT count(*) FROM m) >= 200000 AS capped
FROM m
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: dash_run_kind
-- Whether a run id is a workflow run or a task run, and for a workflow's step its workflow
-- run and step name.
SELECT 'workflow'::text AS kind, NULL::uuid AS dag_external_id, NULL::text AS step
FROM all_dags d
WHERE d.tenant_id = %(tenant_id)s AND d.external_id = %(run_id)s
UNION ALL
SELECT 'task', d.external_id, t.step
FROM all_tasks t
LEFT JOIN all_dags d ON d.id = t.dag_id
WHERE t.tenant_id = %(tenant_id)s AND t.external_id = %(run_id)s
LIMIT 1;

-- name: dash_run_children
-- The runs spawned by the given task runs, with their names and statuses, by spawn order.
SELECT p.external_id AS parent_run_id, c.external_id AS run_id, c.child_index,
       coalesce(t.task_name, d.workflow_name, '?') AS name,
       coalesce(t.status, d.status, 'QUEUED') AS status
FROM all_tasks p
JOIN child_run c ON c.parent_task_id = p.id
LEFT JOIN all_tasks t ON NOT c.is_workflow AND t.external_id = c.external_id
LEFT JOIN all_dags d ON c.is_workflow AND d.external_id = c.external_id
WHERE p.tenant_id = %(tenant_id)s AND p.external_id = ANY(%(run_ids)s::uuid[])
ORDER BY p.external_id, c.child_index;
