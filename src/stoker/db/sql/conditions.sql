-- The sleep and event conditions of waiting workflow steps (task_wait): registered by
-- progression, fired by the sweeper (sleeps) and by pushed events.

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

-- name: clear_waits
DELETE FROM task_wait WHERE task_id = ANY(%(task_ids)s::bigint[]);

-- name: log_condition_errors
INSERT INTO task_event (tenant_id, task_id, attempt, kind, data)
SELECT t.tenant_id, t.id, t.attempt, 'CONDITION_ERROR', jsonb_build_object('error', x.error)
FROM unnest(%(task_ids)s::bigint[], %(errors)s::jsonb[]) AS x(task_id, error)
JOIN task t ON t.id = x.task_id;

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

-- name: waits_for_events
-- Unsatisfied event conditions on the given keys that began waiting before the events
-- arrived, with what their expressions see of the run. A scoped event only reaches the
-- workflow run whose id is the scope.
SELECT w.task_id, w.cond, w.dag_id, w.event_key, w.expression, w.created_at,
       d.external_id::text AS dag_external_id, d.input AS run_input,
       d.additional_metadata AS run_metadata
FROM task_wait w
JOIN dag d ON d.id = w.dag_id
WHERE w.tenant_id = %(tenant_id)s AND w.kind = 'event' AND w.satisfied_at IS NULL
  AND w.event_key = ANY(%(keys)s::text[]);

-- name: satisfy_waits
UPDATE task_wait w SET satisfied_at = now(), error = NULL
FROM unnest(%(task_ids)s::bigint[], %(conds)s::text[]) AS x(task_id, cond)
WHERE w.task_id = x.task_id AND w.cond = x.cond AND w.satisfied_at IS NULL;

-- name: record_wait_errors
UPDATE task_wait w SET error = x.error
FROM unnest(%(task_ids)s::bigint[], %(conds)s::text[], %(errors)s::text[])
     AS x(task_id, cond, error)
WHERE w.task_id = x.task_id AND w.cond = x.cond;
