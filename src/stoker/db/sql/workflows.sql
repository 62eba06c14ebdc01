-- Workflows: definitions, DAG runs and their progression, child runs, cancel and replay.
-- Every statement works on a batch (arrays unnested), like tasks.sql.

-- name: register_workflow
-- Stores a workflow version (deduplicated by the hash of its config) and makes it the
-- version new runs use.
WITH v AS (
    INSERT INTO workflow_version (tenant_id, name, hash, config)
    VALUES (%(tenant_id)s, %(name)s, %(hash)s, %(config)s::jsonb)
    ON CONFLICT (tenant_id, name, hash) DO UPDATE SET name = excluded.name
    RETURNING id
)
INSERT INTO workflow_def (tenant_id, name, version_id, updated_at)
SELECT %(tenant_id)s, %(name)s, id, now() FROM v
ON CONFLICT (tenant_id, name) DO UPDATE SET version_id = excluded.version_id, updated_at = now()
RETURNING version_id;

-- name: current_workflows
SELECT d.name, v.id AS version_id, v.config
FROM workflow_def d JOIN workflow_version v ON v.id = d.version_id
WHERE d.tenant_id = %(tenant_id)s;

-- name: workflow_versions
SELECT id, name, config FROM workflow_version WHERE id = ANY(%(ids)s::bigint[]);

-- name: insert_dags
INSERT INTO dag (tenant_id, external_id, workflow_name, version_id, input, additional_metadata)
SELECT %(tenant_id)s, x.external_id, x.name, x.version_id, x.input, x.metadata
FROM unnest(%(external_ids)s::uuid[], %(names)s::text[], %(version_ids)s::bigint[],
            %(inputs)s::jsonb[], %(metadata)s::jsonb[])
     AS x(external_id, name, version_id, input, metadata)
RETURNING id, external_id;

-- name: attach_dag_tasks
-- Marks tasks just made by insert_tasks as steps of their DAG runs. Steps created PENDING
-- (waiting for parents or conditions) have not finished: insert_tasks stamped them.
UPDATE task t
SET dag_id = d.id, step = x.step,
    finished_at = CASE WHEN t.status = 'PENDING' THEN NULL ELSE t.finished_at END
FROM unnest(%(task_external_ids)s::uuid[], %(dag_external_ids)s::uuid[], %(steps)s::text[])
     AS x(task_external_id, dag_external_id, step)
JOIN dag d ON d.external_id = x.dag_external_id
WHERE t.external_id = x.task_external_id;

-- name: lock_dags
-- Serialises progression per DAG run: whoever ends a step locks its run first (in id
-- order, so two flushes never deadlock), and reads the steps only after the lock, when
-- every earlier progression of the run has committed.
SELECT id FROM dag
WHERE id = ANY(%(dag_ids)s::bigint[]) AND status = 'RUNNING'
ORDER BY id
FOR UPDATE;

-- name: dag_steps
-- The steps of locked DAG runs, each with its sleep/event waits ({cond: satisfied}).
-- Outputs are read separately, only when a condition needs them.
SELECT t.id, t.dag_id, t.tenant_id, t.step, t.status, t.skipped, t.error,
       d.version_id, d.cancelled, d.external_id AS dag_external_id,
       (SELECT jsonb_object_agg(w.cond, w.satisfied_at IS NOT NULL)
        FROM task_wait w WHERE w.task_id = t.id) AS waits
FROM task t
JOIN dag d ON d.id = t.dag_id
WHERE t.dag_id = ANY(%(dag_ids)s::bigint[]);

-- name: task_outputs
SELECT id, output FROM task WHERE id = ANY(%(task_ids)s::bigint[]);

-- name: dag_ids_of_tasks
SELECT DISTINCT dag_id FROM task
WHERE id = ANY(%(task_ids)s::bigint[]) AND dag_id IS NOT NULL;

-- name: enqueue_dag_steps
-- Queues steps whose parents and conditions are satisfied. A step's input becomes
-- {"input": <the run's input>, "parents": {step: output}, "skipped": [step],
--  "errors": {step: error}} over the parents it names, and it gets its queue item, due now
-- (its schedule timeout counts from now, not from the run's creation).
-- A step whose task is sticky wants the run's sticky worker: the one that was assigned the
-- run's first step (soft prefers it, hard requires it; see docs/scheduler.md).
WITH x AS (
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(parents)s::jsonb[]) AS x(id, parents)
),
upd AS (
    UPDATE task t
    SET status = 'QUEUED',
        desired_worker_id = coalesce(t.desired_worker_id, (
            SELECT p.worker_id
            FROM task p
            WHERE p.dag_id = t.dag_id AND p.worker_id IS NOT NULL
              AND EXISTS (SELECT 1 FROM task_def td
                          WHERE td.tenant_id = t.tenant_id AND td.name = t.task_name
                            AND td.config->>'sticky' IS NOT NULL)
            ORDER BY p.assigned_at, p.id
            LIMIT 1
        )),
        input = (
            SELECT jsonb_build_object('input', d.input, 'parents', agg.parents,
                                      'skipped', agg.skipped, 'errors', agg.errors)
            FROM dag d,
                 LATERAL (
                     SELECT coalesce(jsonb_object_agg(p.step, p.output)
                                     FILTER (WHERE p.status = 'COMPLETED' AND NOT p.skipped),
                                     '{}') AS parents,
                            coalesce(jsonb_agg(p.step) FILTER (WHERE p.skipped), '[]') AS skipped,
                            coalesce(jsonb_object_agg(p.step, p.error)
                                     FILTER (WHERE p.status = 'FAILED'), '{}') AS errors
                     FROM task p
                     WHERE p.dag_id = d.id
                       AND p.step IN (SELECT jsonb_array_elements_text(x.parents))
                 ) agg
            WHERE d.id = t.dag_id
        )
    FROM x
    WHERE t.id = x.id AND t.status = 'PENDING'
    RETURNING t.id, t.tenant_id, t.attempt, t.task_name, t.priority, t.schedule_timeout_ms,
              t.rate_limits, t.desired_worker_id, t.concurrency_keys
),
cleared AS (
    DELETE FROM task_wait w USING upd WHERE w.task_id = upd.id
),
gated AS (
    INSERT INTO concurrency_slot (task_id, strategy_id, tenant_id, idx, key, priority)
    SELECT upd.id, (k->>'strategy_id')::bigint, upd.tenant_id, (k->>'idx')::smallint,
           k->>'key', upd.priority
    FROM upd CROSS JOIN LATERAL jsonb_array_elements(upd.concurrency_keys) k
    WHERE upd.concurrency_keys IS NOT NULL
    ON CONFLICT (task_id, strategy_id) DO NOTHING
    RETURNING tenant_id
),
queued AS (
    INSERT INTO queue_item (tenant_id, task_id, attempt, queue, priority, available_at,
                            schedule_deadline, rate_limits, desired_worker_id)
    SELECT tenant_id, id, attempt, task_name, priority, now(),
           CASE WHEN schedule_timeout_ms > 0
                THEN now() + schedule_timeout_ms * interval '1 millisecond'
           END,
           rate_limits, desired_worker_id
    FROM upd
    WHERE concurrency_keys IS NULL
    RETURNING tenant_id
)
-- The tenants whose readied steps wait for concurrency admission.
SELECT DISTINCT tenant_id FROM gated;

-- name: skip_dag_steps
-- Skipped steps are COMPLETED without output; their children still run.
WITH upd AS (
    UPDATE task t
    SET status = 'COMPLETED', skipped = true, output = NULL, finished_at = now()
    WHERE t.id = ANY(%(task_ids)s::bigint[]) AND t.status = 'PENDING'
    RETURNING t.id
)
DELETE FROM task_wait w USING upd WHERE w.task_id = upd.id;

-- name: clear_waits
DELETE FROM task_wait WHERE task_id = ANY(%(task_ids)s::bigint[]);

-- name: insert_waits
-- Registers the sleep and event conditions of steps that start waiting. A row that exists
-- already keeps its deadline (a sleep counts from when the step first waited).
INSERT INTO task_wait (task_id, cond, tenant_id, dag_id, kind, fire_at, event_key, expression)
SELECT x.task_id, x.cond, x.tenant_id, x.dag_id, x.kind,
       CASE WHEN x.kind = 'sleep' THEN now() + x.sleep_ms * interval '1 millisecond' END,
       nullif(x.event_key, ''), nullif(x.expression, '')
FROM unnest(%(task_ids)s::bigint[], %(conds)s::text[], %(tenant_ids)s::bigint[],
            %(dag_ids)s::bigint[], %(kinds)s::text[], %(sleeps_ms)s::bigint[],
            %(event_keys)s::text[], %(expressions)s::text[])
     AS x(task_id, cond, tenant_id, dag_id, kind, sleep_ms, event_key, expression)
ON CONFLICT (task_id, cond) DO NOTHING;

-- name: log_condition_errors
INSERT INTO task_event (tenant_id, task_id, attempt, kind, data)
SELECT t.tenant_id, t.id, t.attempt, 'CONDITION_ERROR', jsonb_build_object('error', x.error)
FROM unnest(%(task_ids)s::bigint[], %(errors)s::jsonb[]) AS x(task_id, error)
JOIN task t ON t.id = x.task_id;

-- name: finish_dags
UPDATE dag d
SET status = x.status, error = x.error, finished_at = now()
FROM unnest(%(dag_ids)s::bigint[], %(statuses)s::text[], %(errors)s::jsonb[])
     AS x(dag_id, status, error)
WHERE d.id = x.dag_id AND d.status = 'RUNNING'
RETURNING d.external_id, d.tenant_id;

-- name: due_sleep_dags
-- DAG runs with a sleep condition that has elapsed (the caller locks them, then fires).
SELECT DISTINCT dag_id FROM (
    SELECT dag_id FROM task_wait
    WHERE kind = 'sleep' AND satisfied_at IS NULL AND fire_at <= now()
    ORDER BY fire_at
    LIMIT %(limit)s
) due;

-- name: fire_sleeps
-- Marks the elapsed sleeps of locked DAG runs satisfied.
UPDATE task_wait SET satisfied_at = now()
WHERE dag_id = ANY(%(dag_ids)s::bigint[]) AND kind = 'sleep' AND satisfied_at IS NULL
  AND fire_at <= now();

-- name: next_sleep
SELECT min(fire_at) AS fire_at FROM task_wait WHERE kind = 'sleep' AND satisfied_at IS NULL;

-- name: stalled_dags
-- DAG runs with nothing queued or running that are not simply waiting on a sleep or an
-- event: some progression was missed (a step ended by a path without the DAG hook, such as
-- a schedule timeout or a concurrency cancellation). The sweeper progresses them.
SELECT d.id
FROM dag d
WHERE d.status = 'RUNNING' AND d.created_at < now() - interval '1 second'
  AND NOT EXISTS (SELECT 1 FROM task t
                  WHERE t.dag_id = d.id AND t.status IN ('QUEUED', 'ASSIGNED', 'RUNNING'))
  AND NOT EXISTS (SELECT 1 FROM task_wait w
                  WHERE w.dag_id = d.id AND w.satisfied_at IS NULL)
ORDER BY d.id
LIMIT %(limit)s;

-- name: claim_children
-- Records child runs of a parent task. Children that exist already (same index or same
-- key) are left alone; the caller reads them back with existing_children.
INSERT INTO child_run (parent_task_id, child_index, child_key, tenant_id, external_id,
                       is_workflow)
SELECT %(parent_task_id)s, x.child_index, nullif(x.child_key, ''), %(tenant_id)s,
       x.external_id, x.is_workflow
FROM unnest(%(child_indexes)s::int[], %(child_keys)s::text[], %(external_ids)s::uuid[],
            %(is_workflow)s::bool[]) AS x(child_index, child_key, external_id, is_workflow)
ON CONFLICT DO NOTHING
RETURNING external_id;

-- name: existing_children
SELECT x.n, c.external_id
FROM unnest(%(child_indexes)s::int[], %(child_keys)s::text[]) WITH ORDINALITY
     AS x(child_index, child_key, n)
JOIN child_run c ON c.parent_task_id = %(parent_task_id)s
 AND CASE WHEN x.child_key <> '' THEN c.child_key = x.child_key
          ELSE c.child_index = x.child_index END;

-- name: parent_task
SELECT id, tenant_id, attempt, status, dag_id FROM task
WHERE id = %(task_id)s AND tenant_id = %(tenant_id)s;

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

-- name: mark_dags_cancelled
UPDATE dag SET cancelled = true
WHERE id = ANY(%(dag_ids)s::bigint[]) AND status = 'RUNNING';

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
-- Re-queues finished single-task runs that failed or were cancelled, as a new attempt; a
-- run with concurrency keys waits for admission again, like a new run.
WITH upd AS (
    UPDATE task t
    SET status = 'QUEUED', attempt = t.attempt + 1, retry_count = 0, error = NULL,
        output = NULL, started_at = NULL, finished_at = NULL, worker_id = NULL
    WHERE t.id = ANY(%(task_ids)s::bigint[]) AND t.status IN ('FAILED', 'CANCELLED')
    RETURNING t.id, t.tenant_id, t.attempt, t.task_name, t.priority, t.schedule_timeout_ms,
              t.rate_limits, t.desired_worker_id, t.concurrency_keys
),
gated AS (
    INSERT INTO concurrency_slot (task_id, strategy_id, tenant_id, idx, key, priority)
    SELECT upd.id, (k->>'strategy_id')::bigint, upd.tenant_id, (k->>'idx')::smallint,
           k->>'key', upd.priority
    FROM upd CROSS JOIN LATERAL jsonb_array_elements(upd.concurrency_keys) k
    WHERE upd.concurrency_keys IS NOT NULL
    ON CONFLICT (task_id, strategy_id) DO NOTHING
),
queued AS (
    INSERT INTO queue_item (tenant_id, task_id, attempt, queue, priority, available_at,
                            schedule_deadline, rate_limits, desired_worker_id)
    SELECT tenant_id, id, attempt, task_name, priority, now(),
           CASE WHEN schedule_timeout_ms > 0
                THEN now() + schedule_timeout_ms * interval '1 millisecond'
           END,
           rate_limits, desired_worker_id
    FROM upd
    WHERE concurrency_keys IS NULL
)
SELECT id AS task_id, concurrency_keys IS NOT NULL AS gated FROM upd;

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
