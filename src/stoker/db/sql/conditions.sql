-- The sleep and event conditions of waiting workflow steps and of durable tasks' waits
-- (task_wait): registered by progression (steps) or by a durable wait's append, fired by
-- the sweeper (step sleeps), the durable timers (durable sleeps) and by pushed events.
-- A durable wait's rows have no dag_id; they name their log entry (run_created_at, branch,
-- position) and have cond = 'd<branch>.<position>:<path>'.

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
    WHERE kind = 'sleep' AND satisfied_at IS NULL AND fire_at <= now() AND dag_id IS NOT NULL
    ORDER BY fire_at
    LIMIT %(limit)s
) due;

-- name: fire_sleeps
-- Marks the elapsed sleeps of locked DAG runs satisfied.
UPDATE task_wait SET satisfied_at = now()
WHERE dag_id = ANY(%(dag_ids)s::bigint[]) AND kind = 'sleep' AND satisfied_at IS NULL
  AND fire_at <= now();

-- name: next_sleep
SELECT min(fire_at) AS fire_at FROM task_wait
WHERE kind = 'sleep' AND satisfied_at IS NULL AND dag_id IS NOT NULL;

-- name: waits_for_events
-- Unsatisfied event conditions on the given keys, with what their expressions see of the
-- run: a workflow step's (the workflow run's input and metadata, and the run's id, which a
-- scoped event must name) and a durable wait's (the durable task's input and metadata,
-- the wait's scope; only while its entry is pending and its task is live). Ordered by
-- task, then position: a durable task's lowest wait comes first.
SELECT w.task_id, w.cond, w.dag_id, w.event_key, w.expression, w.created_at,
       w.run_created_at, w.branch, w.position, w.scope,
       d.external_id::text AS dag_external_id,
       coalesce(d.input, t.input) AS run_input,
       coalesce(d.additional_metadata, t.additional_metadata) AS run_metadata
FROM task_wait w
LEFT JOIN dag d ON d.id = w.dag_id
LEFT JOIN task t ON w.dag_id IS NULL AND t.id = w.task_id
WHERE w.tenant_id = %(tenant_id)s AND w.kind = 'event' AND w.satisfied_at IS NULL
  AND w.event_key = ANY(%(keys)s::text[])
  AND (d.id IS NOT NULL
       OR t.id IS NOT NULL AND EXISTS (
           SELECT 1 FROM durable_entry e
           WHERE e.task_id = w.task_id AND e.created_at = w.run_created_at
             AND e.branch = w.branch AND e.position = w.position AND e.status = 'pending'))
ORDER BY w.task_id, w.position NULLS FIRST, w.cond;

-- name: satisfy_waits
UPDATE task_wait w SET satisfied_at = now(), error = NULL
FROM unnest(%(task_ids)s::bigint[], %(conds)s::text[]) AS x(task_id, cond)
WHERE w.task_id = x.task_id AND w.cond = x.cond AND w.satisfied_at IS NULL;

-- name: record_wait_errors
UPDATE task_wait w SET error = x.error
FROM unnest(%(task_ids)s::bigint[], %(conds)s::text[], %(errors)s::text[])
     AS x(task_id, cond, error)
WHERE w.task_id = x.task_id AND w.cond = x.cond;

-- name: insert_durable_waits
-- Registers the sleep and event conditions of durable waits: the entry at (branch,
-- position) of the run (task_id, run_created_at), one row per condition (its path in the
-- wait's conditions). A sleep's fire_at is now() + its duration and an event's since is
-- now() - its lookback, on the database clock, written once (a re-sent append keeps
-- them). Run under the task's log lock.
INSERT INTO task_wait (task_id, cond, tenant_id, run_created_at, branch, position, kind,
                       fire_at, event_key, expression, scope, since)
SELECT x.task_id, 'd' || x.branch || '.' || x.position || ':' || x.path, x.tenant_id,
       x.run_created_at, x.branch, x.position, x.kind,
       CASE WHEN x.kind = 'sleep' THEN now() + x.sleep_ms * interval '1 millisecond' END,
       nullif(x.event_key, ''), nullif(x.expression, ''), nullif(x.scope, ''),
       CASE WHEN x.kind = 'event' THEN now() - x.lookback_ms * interval '1 millisecond' END
FROM unnest(%(task_ids)s::bigint[], %(run_created_ats)s::timestamptz[],
            %(tenant_ids)s::bigint[], %(branches)s::integer[], %(positions)s::integer[],
            %(paths)s::text[], %(kinds)s::text[], %(sleeps_ms)s::bigint[],
            %(event_keys)s::text[], %(expressions)s::text[], %(scopes)s::text[],
            %(lookbacks_ms)s::bigint[])
     AS x(task_id, run_created_at, tenant_id, branch, position, path, kind, sleep_ms,
          event_key, expression, scope, lookback_ms)
ON CONFLICT (task_id, cond) DO NOTHING;

-- name: durable_wait_conditions
-- The conditions of durable waits (the entries named), with their entries' requests and
-- the payloads of the events that satisfied them, to decide whether the waits hold.
SELECT w.task_id, w.run_created_at, w.branch, w.position,
       substr(w.cond, strpos(w.cond, ':') + 1) AS path, w.kind, w.fire_at, w.event_key,
       w.expression, w.scope, w.since, w.satisfied_at, w.event_id, e.request, e.status,
       u.payload
FROM unnest(%(task_ids)s::bigint[], %(created_ats)s::timestamptz[], %(branches)s::integer[],
            %(positions)s::integer[]) AS x(task_id, created_at, branch, position)
JOIN task_wait w
  ON w.task_id = x.task_id AND w.dag_id IS NULL AND w.branch = x.branch
 AND w.position = x.position
JOIN durable_entry e
  ON e.task_id = x.task_id AND e.created_at = x.created_at AND e.branch = x.branch
 AND e.position = x.position
LEFT JOIN user_event u ON u.id = w.event_id
ORDER BY w.task_id, w.position, w.cond;

-- name: satisfy_durable_waits
-- Satisfies conditions of durable waits, an event condition with the event that matched
-- it (none for a sleep), while their entries are pending. Returns the rows satisfied. Run
-- under the tasks' log locks.
UPDATE task_wait w SET satisfied_at = now(), event_id = x.event_id, error = NULL
FROM unnest(%(task_ids)s::bigint[], %(conds)s::text[], %(event_ids)s::bigint[])
     AS x(task_id, cond, event_id)
WHERE w.task_id = x.task_id AND w.cond = x.cond AND w.satisfied_at IS NULL
  AND EXISTS (SELECT 1 FROM durable_entry e
              WHERE e.task_id = w.task_id AND e.created_at = w.run_created_at
                AND e.branch = w.branch AND e.position = w.position AND e.status = 'pending')
RETURNING w.task_id, w.run_created_at, w.branch, w.position,
          substr(w.cond, strpos(w.cond, ':') + 1) AS path, w.event_id;

-- name: fire_durable_sleeps
-- Satisfies the elapsed sleep conditions of these pending durable waits. Run under the
-- tasks' log locks (the durable timers' claim).
UPDATE task_wait w SET satisfied_at = now()
FROM unnest(%(task_ids)s::bigint[], %(branches)s::integer[], %(positions)s::integer[])
     AS x(task_id, branch, position)
WHERE w.task_id = x.task_id AND w.dag_id IS NULL AND w.branch = x.branch
  AND w.position = x.position AND w.kind = 'sleep' AND w.satisfied_at IS NULL
  AND w.fire_at <= now()
RETURNING w.task_id, w.run_created_at, w.branch, w.position,
          substr(w.cond, strpos(w.cond, ':') + 1) AS path, w.fire_at;
