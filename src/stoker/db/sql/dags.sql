-- Workflows: definitions and versions, DAG runs and their progression. Every statement
-- works on a batch (arrays unnested), like tasks.sql.

-- name: register_workflow
-- Stores a workflow version (deduplicated by the hash of its config) and makes it the
-- version new runs use. A version registered again takes the new config: what the hash
-- leaves out (crons, event subscriptions and filters) may have changed.
WITH v AS (
    INSERT INTO workflow_version (tenant_id, name, hash, config)
    VALUES (%(tenant_id)s, %(name)s, %(hash)s, %(config)s::jsonb)
    ON CONFLICT (tenant_id, name, hash) DO UPDATE SET config = excluded.config
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

-- name: enqueue_dag_steps
-- Queues steps whose parents and conditions are satisfied. A step's input becomes
-- {"input": <the run's input>, "parents": {step: output}, "skipped": [step],
--  "errors": {step: error}} over the parents it names, and it is made ready
-- (make_tasks_ready: its queue item, due now — its schedule timeout counts from now, not
-- from the run's creation — or its wait for concurrency admission).
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
ready AS (
    SELECT make_tasks_ready(
        array_agg(ROW(id, tenant_id, attempt, task_name, priority, now(), schedule_timeout_ms,
                      rate_limits, desired_worker_id, concurrency_keys)::ready_task),
        false) AS gated
    FROM upd
)
-- The tenants whose readied steps wait for concurrency admission.
SELECT unnest(gated) AS tenant_id FROM ready;

-- name: skip_dag_steps
-- Skipped steps are COMPLETED without output; their children still run.
WITH upd AS (
    UPDATE task t
    SET status = 'COMPLETED', skipped = true, output = NULL, finished_at = now()
    WHERE t.id = ANY(%(task_ids)s::bigint[]) AND t.status = 'PENDING'
    RETURNING t.id
)
DELETE FROM task_wait w USING upd WHERE w.task_id = upd.id;

-- name: finish_dags
UPDATE dag d
SET status = x.status, error = x.error, finished_at = now()
FROM unnest(%(dag_ids)s::bigint[], %(statuses)s::text[], %(errors)s::jsonb[])
     AS x(dag_id, status, error)
WHERE d.id = x.dag_id AND d.status = 'RUNNING'
RETURNING d.external_id, d.tenant_id;

-- name: stalled_dags
-- DAG runs with nothing queued or running that are not simply waiting on a sleep or an
-- event: some progression was missed (a step ended by a path without the DAG hook, such as
-- a schedule timeout or a concurrency cancellation). The sweeper progresses them.
SELECT d.id
FROM dag d
WHERE d.status = 'RUNNING' AND d.created_at < now() - interval '1 second'
  AND NOT EXISTS (SELECT 1 FROM task t
                  WHERE t.dag_id = d.id
                    AND t.status IN ('QUEUED', 'ASSIGNED', 'RUNNING', 'EVICTED'))
  AND NOT EXISTS (SELECT 1 FROM task_wait w
                  WHERE w.dag_id = d.id AND w.satisfied_at IS NULL)
ORDER BY d.id
LIMIT %(limit)s;
