-- User events (app.events.push) and the event conditions of waiting workflow steps.

-- name: insert_user_events
INSERT INTO user_event (tenant_id, key, payload, additional_metadata, scope)
SELECT %(tenant_id)s, x.key, x.payload, x.metadata, nullif(x.scope, '')
FROM unnest(%(keys)s::text[], %(payloads)s::jsonb[], %(metadata)s::jsonb[], %(scopes)s::text[])
     AS x(key, payload, metadata, scope)
RETURNING external_id, created_at;

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
