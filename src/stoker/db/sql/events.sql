-- User events (app.events.push); their matching against waits is in conditions.sql.

-- name: insert_user_events
-- external_ids: made by the ingest (the request key's answer is claimed with them, in the
-- same round trip). webhook_ids and bodies: the webhook an event came through and its
-- request body as received (NULL for events pushed through the API). Rows come back in
-- the order given.
INSERT INTO user_event (tenant_id, external_id, key, payload, additional_metadata, scope,
                        priority, webhook_id, body)
SELECT %(tenant_id)s, x.external_id, x.key, x.payload, x.metadata, nullif(x.scope, ''),
       x.priority, x.webhook_id, x.body
FROM unnest(%(external_ids)s::uuid[], %(keys)s::text[], %(payloads)s::jsonb[],
            %(metadata)s::jsonb[], %(scopes)s::text[], %(priorities)s::smallint[],
            %(webhook_ids)s::bigint[], %(bodies)s::bytea[])
     WITH ORDINALITY AS x(external_id, key, payload, metadata, scope, priority, webhook_id,
                          body, n)
ORDER BY x.n
RETURNING id, external_id, created_at;

-- name: lock_event_keys
-- Serializes event ingest and durable wait registration on each (tenant, key): both take
-- these transaction locks, in key order, before anything else, so whichever commits
-- second sees what the other wrote (an event racing a wait's registration is matched
-- exactly once, by one side). The locks are taken in the order given (volatile functions
-- are evaluated after the sort).
SELECT x.key, pg_advisory_xact_lock(hashtextextended(%(tenant_id)s::text || '/' || x.key, 0))::text
       AS held
FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS x(key, n)
ORDER BY x.n;

-- name: lookback_events
-- The events a durable wait's lookback may take: the tenant's events of the key created
-- since the window's start, with the wait's scope if it has one, not yet used by the task
-- (an event satisfies at most one condition of a task), earliest first.
SELECT u.id, u.created_at, u.payload, u.additional_metadata, u.scope
FROM user_event u
WHERE u.tenant_id = %(tenant_id)s AND u.key = %(key)s AND u.created_at >= %(since)s
  AND (%(scope)s::text IS NULL OR u.scope = %(scope)s::text)
  AND NOT EXISTS (SELECT 1 FROM task_wait w
                  WHERE w.task_id = %(task_id)s AND w.event_id = u.id)
ORDER BY u.created_at, u.id
LIMIT %(limit)s;

-- name: subscriber_filters
-- The filters of the subscribers an event ingest found, code filters first, then oldest
-- first (the first that matches gives the run its payload).
SELECT external_id, task_name, workflow_name, scope, expression, payload
FROM event_filter
WHERE tenant_id = %(tenant_id)s
  AND (task_name = ANY(%(task_names)s::text[]) OR workflow_name = ANY(%(workflow_names)s::text[]))
ORDER BY source DESC, id;

-- name: insert_event_runs
-- Records the runs events started (in the transaction that started them).
INSERT INTO event_run (tenant_id, event_id, created_at, run_id, task_name, workflow_name,
                       filter_id, replay)
SELECT %(tenant_id)s, r.event_id, r.created_at, r.run_id, r.task_name, r.workflow_name,
       r.filter_id, %(replay)s
FROM unnest(%(event_ids)s::bigint[], %(created_at)s::timestamptz[], %(run_ids)s::uuid[],
            %(task_names)s::text[], %(workflow_names)s::text[], %(filter_ids)s::uuid[])
     AS r(event_id, created_at, run_id, task_name, workflow_name, filter_id);

-- name: insert_run_filter_payloads
-- The payloads of the filters that let an event's runs through (in the transaction that
-- started them); a run id given twice keeps its first.
INSERT INTO run_filter_payload (run_id, tenant_id, payload)
SELECT f.run_id, %(tenant_id)s, f.payload
FROM unnest(%(run_ids)s::uuid[], %(payloads)s::jsonb[]) AS f(run_id, payload)
ON CONFLICT (run_id) DO NOTHING;

-- name: list_events
-- The tenant's events, newest first, by key (exact), scope, metadata (@>) and time.
SELECT u.external_id, u.key, u.scope, u.additional_metadata, u.priority, u.created_at,
       (SELECT count(*) FROM event_run r
        WHERE r.event_id = u.id AND r.created_at = u.created_at) AS runs
FROM user_event u
WHERE u.tenant_id = %(tenant_id)s
  AND (%(key)s::text IS NULL OR u.key = %(key)s::text)
  AND (%(scope)s::text IS NULL OR u.scope = %(scope)s::text)
  AND (%(metadata)s::jsonb IS NULL OR u.additional_metadata @> %(metadata)s::jsonb)
  AND (%(since)s::timestamptz IS NULL OR u.created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR u.created_at < %(until)s::timestamptz)
ORDER BY u.created_at DESC, u.id DESC
LIMIT %(limit)s;

-- name: get_event
SELECT u.id, u.external_id, u.key, u.payload, u.scope, u.additional_metadata, u.priority,
       u.created_at
FROM user_event u
WHERE u.tenant_id = %(tenant_id)s AND u.external_id = %(external_id)s;

-- name: event_runs
-- The runs an event started, with their status now (live or in history).
SELECT r.run_id, r.task_name, r.workflow_name, r.filter_id, r.replay, r.triggered_at,
       coalesce((SELECT t.status FROM all_tasks t WHERE t.external_id = r.run_id),
                (SELECT d.status FROM all_dags d WHERE d.external_id = r.run_id)) AS status
FROM event_run r
WHERE r.event_id = %(event_id)s AND r.created_at = %(created_at)s
ORDER BY r.replay, r.triggered_at, r.task_name, r.workflow_name;

-- name: delete_code_filters
-- A registration replaces the code filters (default_filters) of its tasks or workflows.
DELETE FROM event_filter
WHERE tenant_id = %(tenant_id)s AND source = 'code'
  AND (task_name = ANY(%(task_names)s::text[])
       OR workflow_name = ANY(%(workflow_names)s::text[]));

-- name: insert_code_filters
INSERT INTO event_filter (tenant_id, task_name, workflow_name, scope, expression, payload,
                          source)
SELECT %(tenant_id)s, f.task_name, f.workflow_name, f.scope, f.expression, f.payload, 'code'
FROM unnest(%(task_names)s::text[], %(workflow_names)s::text[], %(scopes)s::text[],
            %(expressions)s::text[], %(payloads)s::jsonb[])
     AS f(task_name, workflow_name, scope, expression, payload);

-- name: create_filter
INSERT INTO event_filter (tenant_id, task_name, workflow_name, scope, expression, payload)
VALUES (%(tenant_id)s, %(task_name)s, %(workflow_name)s, %(scope)s, %(expression)s,
        %(payload)s::jsonb)
RETURNING external_id, task_name, workflow_name, scope, expression, payload, source,
          created_at, updated_at;

-- name: list_filters
SELECT external_id, task_name, workflow_name, scope, expression, payload, source, created_at,
       updated_at
FROM event_filter
WHERE tenant_id = %(tenant_id)s
  AND (%(external_id)s::uuid IS NULL OR external_id = %(external_id)s::uuid)
  AND (%(task_name)s::text IS NULL OR task_name = %(task_name)s::text)
  AND (%(workflow_name)s::text IS NULL OR workflow_name = %(workflow_name)s::text)
  AND (%(scope)s::text IS NULL OR scope = %(scope)s::text)
ORDER BY id
LIMIT %(limit)s;

-- name: update_filter
-- Changes what is given (NULL keeps it; clear_scope makes the filter apply to any scope).
UPDATE event_filter
SET expression = coalesce(%(expression)s, expression),
    scope = CASE WHEN %(clear_scope)s THEN NULL ELSE coalesce(%(scope)s, scope) END,
    payload = coalesce(%(payload)s::jsonb, payload),
    updated_at = now()
WHERE tenant_id = %(tenant_id)s AND external_id = %(external_id)s AND source = 'api'
RETURNING external_id, task_name, workflow_name, scope, expression, payload, source,
          created_at, updated_at;

-- name: delete_filter
DELETE FROM event_filter
WHERE tenant_id = %(tenant_id)s AND external_id = %(external_id)s AND source = 'api';

-- name: runs_of_events
-- The runs the push of these events started (a retried push call answers with them).
SELECT u.external_id AS event_id, r.run_id
FROM user_event u
JOIN event_run r ON r.event_id = u.id AND r.created_at = u.created_at AND r.replay = 0
WHERE u.tenant_id = %(tenant_id)s AND u.external_id = ANY(%(external_ids)s::uuid[])
ORDER BY r.triggered_at, r.run_id;
