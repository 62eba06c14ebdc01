-- Runs as the client sees them: states and results for the long poll, and the bulk
-- operations (cancel, replay, and bringing runs back from history for a replay).

-- name: run_states
-- The given runs of a tenant (single-task runs and workflow runs) with their status; the
-- outcome (output, error) of the finished ones.
SELECT external_id, status,
       CASE WHEN status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN output::text END AS output,
       CASE WHEN status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN error END AS error
FROM task
WHERE tenant_id = %(tenant_id)s AND external_id = ANY(%(external_ids)s::uuid[])
UNION ALL
SELECT d.external_id, d.status,
       CASE WHEN d.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN
           (SELECT coalesce(jsonb_object_agg(s.step, s.output), '{}')::text FROM task s
            WHERE s.dag_id = d.id AND s.status = 'COMPLETED' AND NOT s.skipped)
       END AS output,
       d.error
FROM dag d
WHERE d.tenant_id = %(tenant_id)s AND d.external_id = ANY(%(external_ids)s::uuid[]);

-- name: finished_run_states
-- The long poll's first read: the finished runs among the given ids of a tenant, from the
-- live tables, with the ids as text. The ids come as one array literal of canonical UUID
-- text and go back as text, so a read of thousands makes no UUID object on either side.
SELECT external_id::text AS external_id, status, output::text AS output, error
FROM task
WHERE tenant_id = %(tenant_id)s AND external_id = ANY(%(external_ids)s::uuid[])
  AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
UNION ALL
SELECT d.external_id::text, d.status,
       (SELECT coalesce(jsonb_object_agg(s.step, s.output), '{}')::text FROM task s
        WHERE s.dag_id = d.id AND s.status = 'COMPLETED' AND NOT s.skipped) AS output,
       d.error
FROM dag d
WHERE d.tenant_id = %(tenant_id)s AND d.external_id = ANY(%(external_ids)s::uuid[])
  AND d.status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- name: run_states_history
-- run_states for runs that have moved to history (read only for ids not found live).
SELECT external_id, status, output::text AS output, error
FROM task_history
WHERE tenant_id = %(tenant_id)s AND external_id = ANY(%(external_ids)s::uuid[])
UNION ALL
SELECT d.external_id, d.status,
       (SELECT coalesce(jsonb_object_agg(s.step, s.output), '{}')::text FROM task_history s
        WHERE s.dag_id = d.id AND s.status = 'COMPLETED' AND NOT s.skipped) AS output,
       d.error
FROM dag_history d
WHERE d.tenant_id = %(tenant_id)s AND d.external_id = ANY(%(external_ids)s::uuid[]);

-- name: run_results_by_ids
-- The outcome of finished runs among the given external ids, whatever their tenant (the
-- caller hands each row only to waiters of the row's tenant).
SELECT external_id, tenant_id, status, output::text AS output, error
FROM task
WHERE external_id = ANY(%(external_ids)s::uuid[])
  AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
UNION ALL
SELECT d.external_id, d.tenant_id, d.status,
       (SELECT coalesce(jsonb_object_agg(s.step, s.output), '{}')::text FROM task s
        WHERE s.dag_id = d.id AND s.status = 'COMPLETED' AND NOT s.skipped) AS output,
       d.error
FROM dag d
WHERE d.external_id = ANY(%(external_ids)s::uuid[])
  AND d.status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- name: resolve_runs
-- Run ids of a tenant as DAG runs or single-task runs (a DAG's steps are not runs).
SELECT d.external_id, d.id AS dag_id, NULL::bigint AS task_id, d.status
FROM all_dags d
WHERE d.tenant_id = %(tenant_id)s AND d.external_id = ANY(%(run_ids)s::uuid[])
UNION ALL
SELECT t.external_id, NULL, t.id, t.status
FROM all_tasks t
WHERE t.tenant_id = %(tenant_id)s AND t.external_id = ANY(%(run_ids)s::uuid[])
  AND t.dag_id IS NULL;

-- name: filter_runs
-- Runs matching a bulk filter (DAG runs and single-task runs), newest first.
(SELECT d.external_id, d.id AS dag_id, NULL::bigint AS task_id, d.status, d.created_at
 FROM all_dags d
 WHERE d.tenant_id = %(tenant_id)s
   AND (%(names)s::text[] IS NULL OR d.workflow_name = ANY(%(names)s::text[]))
   AND (%(statuses)s::text[] IS NULL OR d.status = ANY(%(statuses)s::text[]))
   AND d.created_at >= coalesce(%(since)s::timestamptz, '-infinity')
   AND d.created_at < coalesce(%(until)s::timestamptz, 'infinity')
   AND (%(metadata)s::jsonb IS NULL OR d.additional_metadata @> %(metadata)s::jsonb)
 ORDER BY d.created_at DESC
 LIMIT %(limit)s)
UNION ALL
(SELECT t.external_id, NULL, t.id, t.status, t.created_at
 FROM all_tasks t
 WHERE t.tenant_id = %(tenant_id)s AND t.dag_id IS NULL
   AND (%(names)s::text[] IS NULL OR t.task_name = ANY(%(names)s::text[]))
   AND (%(statuses)s::text[] IS NULL OR t.status = ANY(%(statuses)s::text[]))
   AND t.created_at >= coalesce(%(since)s::timestamptz, '-infinity')
   AND t.created_at < coalesce(%(until)s::timestamptz, 'infinity')
   AND (%(metadata)s::jsonb IS NULL OR t.additional_metadata @> %(metadata)s::jsonb)
 ORDER BY t.created_at DESC
 LIMIT %(limit)s);

-- name: cancellable_tasks
-- Every unfinished task of the given DAG runs and single-task runs, and, recursively, of
-- the child runs their tasks spawned.
WITH RECURSIVE tree(task_id) AS (
    SELECT t.id FROM task t WHERE t.dag_id = ANY(%(dag_ids)s::bigint[])
    UNION
    SELECT unnest(%(task_ids)s::bigint[])
    UNION
    SELECT coalesce(ct.id, st.id)
    FROM tree
    JOIN child_run c ON c.parent_task_id = tree.task_id
    LEFT JOIN dag cd ON c.is_workflow AND cd.external_id = c.external_id
    LEFT JOIN task st ON NOT c.is_workflow AND st.external_id = c.external_id
    LEFT JOIN task ct ON ct.dag_id = cd.id
    WHERE coalesce(ct.id, st.id) IS NOT NULL
)
SELECT t.id, t.dag_id FROM tree
JOIN task t ON t.id = tree.task_id
WHERE t.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- name: mark_dags_cancelled
UPDATE dag SET cancelled = true
WHERE id = ANY(%(dag_ids)s::bigint[]) AND status = 'RUNNING';

-- name: replayable_children
-- The failed or cancelled child runs (DAG runs and single-task runs) spawned by the failed
-- or cancelled tasks of the given runs, recursively: a replay re-runs them too, so a parent
-- that failed because a child failed gets a child that runs again (its spawn returns the
-- same child, by index or key).
WITH RECURSIVE tree(task_id) AS (
    SELECT t.id FROM task t
    WHERE (t.dag_id = ANY(%(dag_ids)s::bigint[]) OR t.id = ANY(%(task_ids)s::bigint[]))
      AND t.status IN ('FAILED', 'CANCELLED')
    UNION
    SELECT coalesce(ct.id, st.id)
    FROM tree
    JOIN child_run c ON c.parent_task_id = tree.task_id
    LEFT JOIN dag cd ON c.is_workflow AND cd.external_id = c.external_id
                    AND cd.status IN ('FAILED', 'CANCELLED')
    LEFT JOIN task st ON NOT c.is_workflow AND st.external_id = c.external_id
                     AND st.status IN ('FAILED', 'CANCELLED')
    LEFT JOIN task ct ON ct.dag_id = cd.id AND ct.status IN ('FAILED', 'CANCELLED')
    WHERE coalesce(ct.id, st.id) IS NOT NULL
)
SELECT DISTINCT t.dag_id, CASE WHEN t.dag_id IS NULL THEN t.id END AS task_id
FROM tree JOIN task t ON t.id = tree.task_id;

-- name: lock_live_runs
-- Locks the live rows of the given runs that the archiver could move (finished ones:
-- workflow runs first, then their tasks and the single-task runs, in id order) for a
-- replay, so the archiver (which skips locked rows) cannot move them to history between
-- the replay's reads and its writes. A run the archiver is moving right now is waited
-- for; it is then in history, where restore_runs finds it. Runs still running are not
-- locked: nothing moves them, and their progression must not wait for a replay.
WITH dags AS (
    SELECT id FROM dag
    WHERE tenant_id = %(tenant_id)s AND external_id = ANY(%(run_ids)s::uuid[])
      AND status <> 'RUNNING'
    ORDER BY id
    FOR UPDATE
)
SELECT t.id FROM task t
WHERE t.tenant_id = %(tenant_id)s
  AND ((t.external_id = ANY(%(run_ids)s::uuid[]) AND t.dag_id IS NULL
        AND t.status IN ('COMPLETED', 'FAILED', 'CANCELLED'))
       OR t.dag_id IN (SELECT id FROM dags))
ORDER BY t.id
FOR UPDATE OF t;

-- name: restore_runs
-- Brings runs (workflow runs with their steps, and single-task runs) of a tenant back from
-- history into the live tables, with their ids, for a replay. Returns the task ids
-- restored.
WITH dags AS (
    DELETE FROM dag_history h
    WHERE h.tenant_id = %(tenant_id)s AND h.external_id = ANY(%(run_ids)s::uuid[])
    RETURNING h.id, h.tenant_id, h.external_id, h.workflow_name, h.version_id, h.status,
              h.input, h.additional_metadata, h.error, h.cancelled, h.created_at,
              h.finished_at
),
dags_back AS (
    INSERT INTO dag (id, tenant_id, external_id, workflow_name, version_id, status, input,
                     additional_metadata, error, cancelled, created_at, finished_at)
    OVERRIDING SYSTEM VALUE
    SELECT * FROM dags
),
tasks AS (
    DELETE FROM task_history h
    WHERE h.tenant_id = %(tenant_id)s
      AND ((h.external_id = ANY(%(run_ids)s::uuid[]) AND h.dag_id IS NULL)
           OR h.dag_id IN (SELECT id FROM dags))
    RETURNING h.id, h.tenant_id, h.external_id, h.task_name, h.status, h.attempt,
              h.retry_count, h.priority, h.input, h.additional_metadata, h.output, h.error,
              h.max_retries, h.backoff_factor, h.backoff_max_ms, h.execution_timeout_ms,
              h.schedule_timeout_ms, h.worker_id, h.created_at, h.started_at, h.finished_at,
              h.desired_worker_id, h.rate_limits, h.assigned_at, h.dag_id, h.step,
              h.skipped, h.concurrency_keys
)
INSERT INTO task (id, tenant_id, external_id, task_name, status, attempt, retry_count,
                  priority, input, additional_metadata, output, error, max_retries,
                  backoff_factor, backoff_max_ms, execution_timeout_ms, schedule_timeout_ms,
                  worker_id, created_at, started_at, finished_at, desired_worker_id,
                  rate_limits, assigned_at, dag_id, step, skipped, concurrency_keys)
OVERRIDING SYSTEM VALUE
SELECT * FROM tasks
RETURNING id;

-- name: child_run_ids
-- The run ids of the child runs the given tasks spawned.
SELECT DISTINCT external_id FROM child_run WHERE parent_task_id = ANY(%(task_ids)s::bigint[]);

-- name: replay_dags
-- Puts finished DAG runs back to RUNNING with their failed, cancelled and handler steps
-- PENDING again (a new attempt each, retries reset); COMPLETED steps keep their outputs.
WITH d AS (
    UPDATE dag SET status = 'RUNNING', cancelled = false, error = NULL, finished_at = NULL
    WHERE id = ANY(%(dag_ids)s::bigint[]) AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
    RETURNING id
)
UPDATE task t
SET status = 'PENDING', attempt = t.attempt + 1, retry_count = 0, error = NULL,
    output = NULL, skipped = false, started_at = NULL, finished_at = NULL, worker_id = NULL,
    assigned_at = NULL, desired_worker_id = NULL
FROM d
WHERE t.dag_id = d.id
  AND (t.status IN ('FAILED', 'CANCELLED')
       OR t.task_name IN (SELECT jsonb_array_elements_text(%(handler_task_names)s::jsonb)))
RETURNING t.dag_id;

-- name: replay_tasks
-- Re-queues finished single-task runs that failed or were cancelled, as a new attempt
-- (make_tasks_ready); a run with concurrency keys waits for admission again, like a new run.
WITH upd AS (
    UPDATE task t
    SET status = 'QUEUED', attempt = t.attempt + 1, retry_count = 0, error = NULL,
        output = NULL, started_at = NULL, finished_at = NULL, worker_id = NULL
    WHERE t.id = ANY(%(task_ids)s::bigint[]) AND t.status IN ('FAILED', 'CANCELLED')
    RETURNING t.id, t.tenant_id, t.attempt, t.task_name, t.priority, t.schedule_timeout_ms,
              t.rate_limits, t.desired_worker_id, t.concurrency_keys
),
ready AS (
    SELECT make_tasks_ready(
        array_agg(ROW(id, tenant_id, attempt, task_name, priority, now(), schedule_timeout_ms,
                      rate_limits, desired_worker_id, concurrency_keys)::ready_task),
        false)
    FROM upd
)
SELECT upd.id AS task_id, upd.concurrency_keys IS NOT NULL AS gated FROM upd, ready;

-- name: replay_dag_steps
-- Puts one finished DAG run back to RUNNING with the named steps PENDING again (a new
-- attempt each, retries reset) and, when an input is given, that input as the run's (the
-- steps queued from now on read it); the other steps keep their outcome and output.
WITH d AS (
    UPDATE dag SET status = 'RUNNING', cancelled = false, error = NULL, finished_at = NULL,
                   input = coalesce(%(input)s::jsonb, input)
    WHERE id = %(dag_id)s AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
    RETURNING id
)
UPDATE task t
SET status = 'PENDING', attempt = t.attempt + 1, retry_count = 0, error = NULL,
    output = NULL, skipped = false, started_at = NULL, finished_at = NULL, worker_id = NULL,
    assigned_at = NULL, desired_worker_id = NULL
FROM d
WHERE t.dag_id = d.id AND t.step = ANY(%(steps)s::text[])
RETURNING t.dag_id;

-- name: replay_task_with_input
-- Re-queues one finished single-task run (completed too) with a new input, as a new
-- attempt (make_tasks_ready); a run with concurrency keys waits for admission again.
WITH upd AS (
    UPDATE task t
    SET status = 'QUEUED', attempt = t.attempt + 1, retry_count = 0, error = NULL,
        output = NULL, started_at = NULL, finished_at = NULL, worker_id = NULL,
        input = %(input)s::jsonb
    WHERE t.id = %(task_id)s AND t.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
    RETURNING t.id, t.tenant_id, t.attempt, t.task_name, t.priority, t.schedule_timeout_ms,
              t.rate_limits, t.desired_worker_id, t.concurrency_keys
),
ready AS (
    SELECT make_tasks_ready(
        array_agg(ROW(id, tenant_id, attempt, task_name, priority, now(), schedule_timeout_ms,
                      rate_limits, desired_worker_id, concurrency_keys)::ready_task),
        false)
    FROM upd
)
SELECT upd.id AS task_id, upd.concurrency_keys IS NOT NULL AS gated FROM upd, ready;

-- name: durable_tasks_among
-- The tasks among a DAG run's named steps (or one single-task run) that keep a durable
-- log: running them again from the start or with another input would replay a log
-- recorded for other inputs, so such a replay is a reset instead.
SELECT t.id, coalesce(t.step, t.task_name) AS name
FROM task t
WHERE ((t.dag_id = %(dag_id)s AND t.step = ANY(%(steps)s::text[])) OR t.id = %(task_id)s)
  AND EXISTS (SELECT 1 FROM durable_log l WHERE l.task_id = t.id);
