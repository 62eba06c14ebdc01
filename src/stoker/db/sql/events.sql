-- User events (app.events.push); their matching against waits is in conditions.sql.

-- name: insert_user_events
-- webhook_ids and bodies: the webhook an event came through and its request body as
-- received (NULL for events pushed through the API).
INSERT INTO user_event (tenant_id, key, payload, additional_metadata, scope, webhook_id, body)
SELECT %(tenant_id)s, x.key, x.payload, x.metadata, nullif(x.scope, ''), x.webhook_id, x.body
FROM unnest(%(keys)s::text[], %(payloads)s::jsonb[], %(metadata)s::jsonb[], %(scopes)s::text[],
            %(webhook_ids)s::bigint[], %(bodies)s::bytea[])
     AS x(key, payload, metadata, scope, webhook_id, body)
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
