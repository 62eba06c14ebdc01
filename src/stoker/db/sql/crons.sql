-- Crons: code crons replaced on registration, the due ones the leader fires, reads.

-- name: delete_code_crons
-- A registration replaces its tasks' code crons: the ones no longer declared go.
DELETE FROM cron
WHERE tenant_id = %(tenant_id)s AND source = 'code'
  AND task_name = ANY(%(task_names)s::text[])
  AND NOT (name = ANY(%(keep_names)s::text[]));

-- name: upsert_code_crons
-- A cron registered again keeps its next_fire_at unless its schedule changed, so that a
-- worker starting never skips or repeats a tick.
INSERT INTO cron (tenant_id, name, task_name, expression, timezone, input, source,
                  next_fire_at)
SELECT %(tenant_id)s, c.name, c.task_name, c.expression, c.timezone, c.input, 'code',
       c.next_fire_at
FROM unnest(%(names)s::text[], %(task_names)s::text[], %(expressions)s::text[],
            %(timezones)s::text[], %(inputs)s::jsonb[], %(next_fire_at)s::timestamptz[])
    AS c(name, task_name, expression, timezone, input, next_fire_at)
ON CONFLICT (tenant_id, name) DO UPDATE SET
    task_name = excluded.task_name,
    input = excluded.input,
    next_fire_at = CASE
        WHEN cron.expression = excluded.expression AND cron.timezone = excluded.timezone
        THEN cron.next_fire_at ELSE excluded.next_fire_at END,
    expression = excluded.expression,
    timezone = excluded.timezone,
    updated_at = now()
WHERE cron.source = 'code';

-- name: due_crons
-- Locked until the firing transaction advances them: a second leader skips them.
SELECT id, tenant_id, name, task_name, expression, timezone, input, next_fire_at
FROM cron
WHERE enabled AND next_fire_at <= now()
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: advance_cron
UPDATE cron SET next_fire_at = %(next_fire_at)s
WHERE id = %(id)s AND next_fire_at = %(tick)s;

-- name: next_cron_fire
SELECT min(next_fire_at) AS fire_at FROM cron WHERE enabled;

-- name: list_crons
SELECT name, task_name, workflow_name, expression, timezone, input, enabled, source,
       next_fire_at, created_at, updated_at
FROM cron
WHERE tenant_id = %(tenant_id)s
ORDER BY name;
